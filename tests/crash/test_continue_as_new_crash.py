"""SIGKILL processes whose agents loop through `ctx.continue_as_new` segments; every effect
lands once.

Each cycle starts `tests.crash.loop_child` on the same journal and ledger files and kills it
with SIGKILL a seeded number of ledger calls (plus a few milliseconds) after it started
working: inside a segment, while a segment's end and its checkpoint are journaled, or
between two segments. After `KILLS` kills a run is let finish. Audited from outside:

- every (agent, step) effect is applied exactly once: a finished segment that ran again as
  a new turn would apply its effects under new idempotency keys, and the ledger would hold
  them twice;
- a key is called in a later process only if it was the agent's last call in a killed one
  (the step in flight), so re-executed keys number at most kills x agents;
- each message keeps its first invocation across restarts, and every result is right;
- at the end each agent's journal holds its last segment (and, if a kill fell between the
  previous segment's end and the deletion of its records, that segment too).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import random
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

import msgspec
import pytest

from journal import SqliteStore
from tests.crash._process import LineChild
from tests.crash.loop_child import AGENTS, SEGMENT, STEPS, expected_result
from tests.crash.runtime_child import connect_ledger

pytestmark = pytest.mark.crash

SEED = 20261130
KILLS = 12
#: Seconds a cycle may take to reach its kill point or its end.
CYCLE_TIMEOUT = 30.0
POLL = 0.002
AGENT_KEYS = [f"l{index}" for index in range(AGENTS)]


class Child(LineChild):
    """A running `loop_child`: its ACK and DONE lines."""

    def __init__(self, journal: Path, ledger: Path, run: int, workdir: Path) -> None:
        self.ready = False
        self.acks: dict[str, str] = {}
        self.done: dict[str, tuple[str, int]] = {}
        stderr = workdir / f"child-{run}.err"
        super().__init__("tests.crash.loop_child", [str(journal), str(ledger), str(run)], stderr)

    def take(self, line: bytes) -> None:
        if not line.endswith(b"\n"):
            return  # cut short by the kill
        words = line.decode().split()
        if words == ["READY"]:
            self.ready = True
        elif words[0] == "ACK":
            self.acks[words[1]] = words[2]
        elif words[0] == "DONE":
            self.done[words[1]] = (words[2], int(words[3]))


def calls_in_run(ledger: sqlite3.Connection, run: int) -> int:
    return int(ledger.execute("SELECT COUNT(*) FROM attempts WHERE run = ?", (run,)).fetchone()[0])


def run_child(journal: Path, ledger: Path, run: int, kill_after: int | None, tmp: Path) -> Child:
    """Run one child until it has made ``kill_after`` ledger calls (then SIGKILL it, a few
    milliseconds later) or, with None, until it ends by itself."""
    child = Child(journal, ledger, run, tmp)
    watcher = sqlite3.connect(ledger, timeout=CYCLE_TIMEOUT)
    rng = random.Random(SEED + run)
    deadline = time.monotonic() + CYCLE_TIMEOUT
    try:
        while not child.ended:
            if time.monotonic() > deadline:
                pytest.fail(f"run {run} stalled:\n{child.stderr()}", pytrace=False)
            with contextlib.suppress(queue.Empty):
                child.next_line(timeout=POLL)
            if kill_after is not None and child.ready and calls_in_run(watcher, run) >= kill_after:
                time.sleep(rng.uniform(0, 0.006))  # anywhere in the step under way
                break
        killed, status = child.kill()
        if not killed and status != 0:
            pytest.fail(f"run {run} exited with {status}:\n{child.stderr()}", pytrace=False)
        return child
    finally:
        watcher.close()
        child.close()


def audit_ledger(ledger: Path, killed: set[int]) -> tuple[int, list[str]]:
    """The effects applied, and every broken promise the ledger shows."""
    problems: list[str] = []
    with contextlib.closing(sqlite3.connect(ledger)) as conn:
        applied = list(conn.execute("SELECT key, agent, step FROM applied"))
        attempts = list(conn.execute("SELECT key, agent, run FROM attempts ORDER BY seq"))
    effects: dict[tuple[str, int], list[str]] = defaultdict(list)
    for key, agent, step in applied:
        effects[(agent, step)].append(key)
    problems += [f"effect {e} applied under {k}" for e, k in effects.items() if len(k) > 1]
    runs_of: dict[str, set[int]] = defaultdict(set)
    last: dict[tuple[int, str], str] = {}
    for key, agent, run in attempts:
        if run in runs_of[key]:
            problems.append(f"{key} called twice in run {run}")
        runs_of[key].add(run)
        last[(run, agent)] = key
    for key, runs in runs_of.items():
        earlier = sorted(runs)[:-1]
        for run in earlier:
            if run not in killed or last.get((run, key.split("/")[1])) != key:
                problems.append(f"{key} ran again after run {run}, where it was not in flight")
    reexecuted = sum(len(runs) > 1 for runs in runs_of.values())
    if reexecuted > len(killed) * AGENTS:
        problems.append(f"{reexecuted} keys re-executed, more than {len(killed)} x {AGENTS}")
    return len(effects), problems


async def journal_records(journal: Path, agent: str) -> list[tuple[str, int]]:
    """The type and turn of each record left on the agent's journal stream."""
    store = await SqliteStore.open(journal)
    try:
        return [
            (record.type, msgspec.msgpack.decode(record.data, type=Turned).turn)
            async for record in store.read(f"actor/Looper/{agent}")
        ]
    finally:
        await store.close()


class Turned(msgspec.Struct):
    """The turn number every actor-stream entry carries."""

    turn: int


@pytest.mark.timeout(200)
def test_sigkilled_loops_apply_every_effect_once_across_segments(tmp_path: Path) -> None:
    journal, ledger = tmp_path / "journal.db", tmp_path / "ledger.db"
    connect_ledger(str(ledger)).close()
    total = AGENTS * STEPS
    rng = random.Random(SEED)
    invocations: dict[str, str] = {}
    killed: set[int] = set()
    mid_work = 0
    for run in range(KILLS + 1):
        applied_before, _ = audit_ledger(ledger, killed)
        last = run == KILLS
        share = max(1, (total - applied_before) // (KILLS - run + 2))
        kill_after = None if last else rng.randint(1, 2 * share)
        child = run_child(journal, ledger, run, kill_after, tmp_path)
        for agent, invocation in child.acks.items():
            if invocations.setdefault(agent, invocation) != invocation:
                pytest.fail(f"{agent}: acknowledged as {invocation}, first as {invocations[agent]}")
        for agent, (invocation, result) in child.done.items():
            assert invocation == invocations[agent]
            assert result == expected_result(agent), agent
        if not last:
            killed.add(run)
        applied, problems = audit_ledger(ledger, killed)
        assert not problems, f"after run {run}: {problems[:20]}"
        mid_work += not last and applied < total
    assert sorted(child.done) == AGENT_KEYS
    assert applied == total
    assert mid_work >= KILLS // 2, f"only {mid_work} kills landed with work left"
    # Each agent's journal holds its last segment; a kill between a segment's end (its
    # checkpoint) and the deletion of its records leaves that one segment too, covered by
    # the checkpoint and never read, until the next deletion.
    segments = STEPS // SEGMENT
    last = [(kind, segments) for kind in ("turn", *["step"] * SEGMENT, "turn_done")]
    before = [(kind, segments - 1) for kind in ("turn", *["step"] * SEGMENT, "turn_continued")]
    for agent in AGENT_KEYS:
        records = asyncio.run(journal_records(journal, agent))
        assert records in (last, before + last), (agent, records)
