"""SIGKILL a process full of concurrent journal writers, again and again, and audit the file.

Each cycle starts `tests.crash.journal_child` on the same SQLite file, lets it acknowledge a
random number of appends, kills it with SIGKILL (so the kill lands anywhere: mid-commit,
mid-fsync, mid-print), then reopens the journal here and holds it to the store's promises:

- every acknowledged record is stored, at its position, with its exact bytes;
- every stream is gapless from position 1;
- every transaction (several records, or several streams) is stored whole or not at all;
- what an earlier audit found is still there, unchanged (the next run only adds to it);
- ``verify()`` finds no problem.
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import random
import time
from collections import defaultdict
from pathlib import Path

import msgspec
import pytest

from journal import SqliteStore
from tests.crash._process import REAP_TIMEOUT, LineChild
from tests.crash.journal_child import RECORD_TYPE, decode_payload, expected_payload

pytestmark = pytest.mark.crash

CYCLES = 60
SEED = 20240611
#: Longest a cycle may take to reach its kill point; past it the test fails.
CYCLE_TIMEOUT = 30.0
#: The most acknowledgements a cycle waits for before its kill.
MAX_ACKS = 400


@dataclasses.dataclass(frozen=True)
class Ack:
    """One acknowledged record: which transaction wrote it, and its place there."""

    txid: str
    index: int
    count: int


# (stream, position) -> the record's transaction fields.
Journal = dict[tuple[str, int], Ack]


@dataclasses.dataclass
class ChildRun:
    """What one killed child printed: its acknowledgements and anything cut short."""

    acks: Journal
    partial_line: bytes


class ChildFailed(AssertionError):
    """The child stopped on its own or stalled instead of being killed at our chosen moment."""


def _parse_ack(line: bytes) -> tuple[tuple[str, int], Ack]:
    _, stream, position, txid, index, count = line.decode().split()
    return (stream, int(position)), Ack(txid, int(index), int(count))


class Child(LineChild):
    """A running `journal_child`, killable at any moment."""

    def __init__(self, path: Path, seed: int, loop: str, stderr_path: Path) -> None:
        args = [str(path), str(seed), "--loop", loop]
        super().__init__("tests.crash.journal_child", args, stderr_path)
        self.acks: Journal = {}
        self.partial_line = b""
        self.opened = False

    def wait_for(self, target_acks: int, deadline: float) -> None:
        """Read lines until ``target_acks`` ACKs (0: until the store is open) have been seen."""
        while not self._reached(target_acks):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChildFailed(
                    f"no kill point within {CYCLE_TIMEOUT} s: saw {len(self.acks)} of "
                    f"{target_acks} acknowledgements\n{self.stderr()}"
                )
            try:
                line = self.next_line(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise ChildFailed(
                    f"the child's output ended before it was killed (exit status "
                    f"{self.proc.wait(REAP_TIMEOUT)}) after {len(self.acks)} "
                    f"acknowledgements\n{self.stderr()}"
                )

    def _reached(self, target_acks: int) -> bool:
        return self.opened if target_acks == 0 else len(self.acks) >= target_acks

    def take(self, line: bytes) -> None:
        if not line.endswith(b"\n"):
            self.partial_line = line  # cut short by the kill: not an acknowledgement
        elif line == b"OPEN\n":
            self.opened = True
        elif line.startswith(b"ACK "):
            key, ack = _parse_ack(line)
            assert key not in self.acks, f"{key} acknowledged twice"
            self.acks[key] = ack
        else:
            raise ChildFailed(f"unexpected line from the child: {line!r}\n{self.stderr()}")


def run_child_until_killed(path: Path, cycle: int, target_acks: int, workdir: Path) -> ChildRun:
    """Run a child on ``path``, kill it after ``target_acks`` ACKs, return what it acknowledged."""
    loop = "uvloop" if cycle % 2 else "asyncio"
    child = Child(path, SEED * 1000 + cycle, loop, workdir / f"child-{cycle}.stderr")
    try:
        child.wait_for(target_acks, time.monotonic() + CYCLE_TIMEOUT)
        child.kill()
        return ChildRun(child.acks, child.partial_line)
    finally:
        child.close()


async def read_journal(path: Path) -> tuple[Journal, list[str]]:
    """Reopen the journal and return every record's fields and every problem with it."""
    found: Journal = {}
    problems: list[str] = []
    store = await SqliteStore.open(path, durability="full")
    try:
        report = await store.verify()
        for p in report.problems:
            problems.append(f"verify(): {p.stream} @{p.position} {p.kind}: {p.detail}")
        for stream in await store.list_streams():
            expected = 1
            async for record in store.read(stream):
                if record.position != expected:
                    problems.append(f"{stream}: gap, expected {expected}, found {record.position}")
                expected = record.position + 1
                problem = check_record(stream, record.position, record.type, record.data, found)
                if problem:
                    problems.append(problem)
            last = await store.last_position(stream)
            if last != expected - 1:
                problems.append(f"{stream}: last_position {last}, records end at {expected - 1}")
    finally:
        await store.close()
    return found, problems


def check_record(stream: str, position: int, kind: str, data: bytes, found: Journal) -> str | None:
    """Add an intact record to ``found``; describe what is wrong with a damaged one."""
    where = f"{stream} @{position}"
    if kind != RECORD_TYPE:
        return f"{where}: record type {kind!r}, expected {RECORD_TYPE!r}"
    try:
        payload = decode_payload(data)
    except msgspec.DecodeError as exc:
        return f"{where}: payload does not decode: {exc}"
    if (payload.stream, payload.position) != (stream, position):
        return f"{where}: holds the record written for {payload.stream} @{payload.position}"
    wanted = expected_payload(stream, position, payload.txid, payload.index, payload.count)
    if data != wanted:
        return f"{where}: payload bytes differ from what transaction {payload.txid} wrote"
    found[(stream, position)] = Ack(payload.txid, payload.index, payload.count)
    return None


def transaction_problems(found: Journal) -> list[str]:
    """Describe every transaction stored in part, twice, or out of order."""
    by_txid: dict[str, list[tuple[str, int, Ack]]] = defaultdict(list)
    for (stream, position), ack in found.items():
        by_txid[ack.txid].append((stream, position, ack))
    problems = []
    for txid, rows in by_txid.items():
        written = rows[0][2].count
        indexes = sorted(ack.index for _, _, ack in rows)
        if indexes != list(range(written)) or any(ack.count != written for _, _, ack in rows):
            stored = sorted((stream, position, ack.index) for stream, position, ack in rows)
            problems.append(
                f"transaction {txid} applied in part: wrote {written} records, "
                f"stored (stream, position, index) {stored}"
            )
            continue
        for stream in {stream for stream, _, _ in rows}:
            positions = sorted(position for s, position, _ in rows if s == stream)
            if positions != list(range(positions[0], positions[0] + len(positions))):
                problems.append(f"transaction {txid} is not contiguous in {stream}: {positions}")
    return problems


def missing(expected: Journal, found: Journal, what: str) -> list[str]:
    """Describe every record of ``expected`` that ``found`` lacks or holds differently."""
    problems = []
    for key, ack in sorted(expected.items()):
        if found.get(key) != ack:
            stream, position = key
            problems.append(f"{what} {stream} @{position} ({ack}) is stored as {found.get(key)}")
    return problems


def audit(path: Path, cycle: int, acked: Journal, seen_before: Journal) -> Journal:
    """Reopen the journal after a kill and fail the test on any broken promise."""
    found, problems = asyncio.run(read_journal(path))
    problems += transaction_problems(found)
    problems += missing(acked, found, "acknowledged record")
    problems += missing(seen_before, found, "record found by an earlier audit,")
    if problems:
        shown = "\n  ".join(problems[:40])
        pytest.fail(
            f"cycle {cycle} (seed {SEED}): {len(problems)} problems after SIGKILL:\n  {shown}"
        )
    return found


@pytest.mark.timeout(150)
def test_sigkilled_writers_lose_no_acknowledged_append_and_never_half_apply(
    tmp_path: Path,
) -> None:
    """Kill a busy writer process again and again; the journal keeps every promise each time."""
    path = tmp_path / "journal.db"
    acked: Journal = {}
    seen: Journal = {}
    cut_lines = 0
    started = time.monotonic()
    for cycle in range(CYCLES):
        rng = random.Random(SEED * 1000 + cycle)
        target = 0 if rng.random() < 0.1 else rng.randint(1, MAX_ACKS)
        run = run_child_until_killed(path, cycle, target, tmp_path)
        assert len(run.acks) >= target
        reacked = sorted(run.acks.keys() & acked.keys())
        assert not reacked, f"cycle {cycle}: positions acknowledged by an earlier run: {reacked}"
        acked.update(run.acks)
        cut_lines += bool(run.partial_line)
        seen = audit(path, cycle, acked, seen)
    unacked = len(seen) - len(acked)
    print(
        f"{CYCLES} kills in {time.monotonic() - started:.1f} s: {len(acked)} acknowledged "
        f"records, {unacked} more stored unacknowledged, {len(seen)} in all; "
        f"{cut_lines} kills cut an ACK line short"
    )
