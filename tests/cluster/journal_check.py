"""Reading the shared journal straight from PostgreSQL, and what a correct one looks like.

`Database` runs SQL on the test's database from the test thread (its own connection,
re-opened after the server restarts). `read_journal` reads every record of the actor,
inbox and outcome streams and decodes each payload as plain MessagePack, without the
runtime's code; `journal_problems` checks the shape an actor's journal must have whatever
worker wrote it, and `stale_appends` looks for a fenced worker's writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter, defaultdict
from typing import Any

import asyncpg
import msgspec


class Database:
    """SQL from the test thread on one connection (re-opened when it was lost)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._runner = asyncio.Runner()
        self._conn: Any = None

    def fetch(self, sql: str, *args: Any) -> list[Any]:
        """The rows of ``sql``; tries once more on a new connection if the old one broke."""
        return self._runner.run(self._fetch(sql, args))

    async def _fetch(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        for attempt in (1, 2):
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self.dsn, timeout=10.0)
            try:
                rows: list[Any] = await self._conn.fetch(sql, *args, timeout=30.0)
                return rows
            except (
                asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError,
                asyncpg.exceptions.OperatorInterventionError,
                ConnectionError,
                OSError,
            ):
                self._conn.terminate()
                self._conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def leases_of(self, owner: str) -> list[str]:
        """The names of the leases ``owner`` holds (expired ones too, until taken)."""
        rows = self.fetch("SELECT name FROM journal_leases WHERE owner = $1 ORDER BY name", owner)
        return [row[0] for row in rows]

    def actors_held(self, owner: str) -> list[str]:
        """The actors (``Type/key``) whose lease ``owner`` holds: actor leases are named by
        the actor's stream, ``actor/Type/key``."""
        names = self.leases_of(owner)
        return [name.removeprefix("actor/") for name in names if name.startswith("actor/")]

    def owners(self, actors: list[str]) -> dict[str, str]:
        """Actor -> the owner of its lease ('' when free), for ``actors``."""
        rows = self.fetch(
            "SELECT name, owner FROM journal_leases WHERE name = ANY($1::text[])",
            [f"actor/{actor}" for actor in actors],
        )
        return {row[0].removeprefix("actor/"): row[1] for row in rows}

    def last_global(self) -> int:
        """The global position of the latest committed record (0 if none)."""
        rows = self.fetch("SELECT coalesce(max(global_position), 0) FROM journal_records")
        return int(rows[0][0])

    def close(self) -> None:
        if self._conn is not None:
            self._runner.run(self._conn.close(timeout=5.0))
        self._runner.close()


@dataclasses.dataclass(frozen=True)
class Entry:
    """One decoded record."""

    position: int
    global_position: int
    type: str
    data: Any


@dataclasses.dataclass
class Stream:
    name: str
    first_position: int
    last_position: int
    entries: list[Entry]


def read_journal(db: Database, prefixes: tuple[str, ...]) -> dict[str, Stream]:
    """Every stream whose name starts with one of ``prefixes``, with its records decoded."""
    rows = db.fetch(
        "SELECT name, first_position, last_position FROM journal_streams "
        "WHERE EXISTS (SELECT 1 FROM unnest($1::text[]) p WHERE starts_with(name, p))",
        list(prefixes),
    )
    streams = {row[0]: Stream(row[0], row[1], row[2], []) for row in rows}
    records = db.fetch(
        "SELECT s.name, r.position, r.global_position, r.type, r.data FROM journal_records r "
        "JOIN journal_streams s ON s.id = r.stream_id "
        "WHERE EXISTS (SELECT 1 FROM unnest($1::text[]) p WHERE starts_with(s.name, p)) "
        "ORDER BY s.name, r.position",
        list(prefixes),
    )
    for name, position, global_position, kind, data in records:
        streams[name].entries.append(
            Entry(position, global_position, kind, msgspec.msgpack.decode(data))
        )
    return streams


def journal_problems(streams: dict[str, Stream], accepted: dict[str, str]) -> list[str]:
    """What is wrong with the journals of the actors in ``accepted`` (actor -> the one
    invocation acknowledged for it): a gap in any stream, a turn number skipped or twice, a
    turn without exactly one end, a step journaled twice, a message accepted twice, an
    invocation with other than exactly one outcome."""
    problems = []
    for stream in streams.values():
        positions = [entry.position for entry in stream.entries]
        wanted = list(range(stream.first_position, stream.last_position + 1))
        if positions != wanted:
            problems.append(
                f"{stream.name}: positions {positions[:3]}...{positions[-3:]} "
                f"({len(positions)}), expected {stream.first_position}..{stream.last_position}"
            )
    for actor, invocation in sorted(accepted.items()):
        problems += _actor_problems(streams, actor, invocation)
    return problems


def _entries(streams: dict[str, Stream], name: str) -> list[Entry]:
    stream = streams.get(name)
    return [] if stream is None else stream.entries


def _actor_problems(streams: dict[str, Stream], actor: str, invocation: str) -> list[str]:
    problems = []
    messages = [e.data["invocation"] for e in _entries(streams, f"inbox/{actor}")]
    if messages != [invocation]:
        problems.append(f"{actor}: inbox holds messages {messages}, expected [{invocation}]")
    entries = _entries(streams, f"actor/{actor}")
    turns = [e.data for e in entries if e.type == "turn"]
    numbers = [turn["turn"] for turn in turns]
    if numbers != list(range(1, len(turns) + 1)) or len(turns) != 1:
        problems.append(f"{actor}: turns numbered {numbers}, expected [1]")
    if [turn["invocation"] for turn in turns] != [invocation]:
        problems.append(f"{actor}: turns for {[t['invocation'] for t in turns]}")
    ends = Counter(e.data["turn"] for e in entries if e.type in ("turn_done", "turn_failed"))
    if ends != Counter(numbers):
        problems.append(f"{actor}: turn ends {dict(ends)} for turns {numbers}")
    for kind in ("step", "timer"):
        steps = Counter((e.data["turn"], e.data["step"]) for e in entries if e.type == kind)
        doubled = sorted(step for step, count in steps.items() if count > 1)
        if doubled:
            problems.append(f"{actor}: {kind} records journaled twice: {doubled}")
    outcomes = [e.data["invocation"] for e in _entries(streams, f"outcomes/{actor}")]
    if outcomes != [invocation]:
        problems.append(f"{actor}: outcomes {outcomes}, expected one for {invocation}")
    return problems


def step_workers(streams: dict[str, Stream], actor: str) -> list[tuple[int, str, str]]:
    """Each journaled step result of ``actor``: (global position, step id, the worker the
    result names), in journal order."""
    return [
        (e.global_position, e.data["step"], e.data["value"]["worker"])
        for e in _entries(streams, f"actor/{actor}")
        if e.type == "step" and isinstance(e.data.get("value"), dict)
    ]


def stale_appends(
    streams: dict[str, Stream], paused: str, lost: list[str], after: int
) -> tuple[list[str], int]:
    """Appends of the ``paused`` worker that landed after it lost its actors: for each actor
    in ``lost`` (actors it held when it was stopped), no step result written by ``paused``
    may follow, in commit order after global position ``after`` (its stop), one written by
    another worker. Also returns how many of these actors another worker wrote to."""
    problems = []
    taken = 0
    for actor in lost:
        others = False
        for global_position, step, worker in step_workers(streams, actor):
            if global_position <= after:
                continue
            if worker != paused:
                others = True
            elif others:
                problems.append(
                    f"{actor}: step {step} at global position {global_position} was written "
                    f"by {paused} after another worker took the actor over"
                )
        taken += others
    return problems, taken


def steps_by_worker(streams: dict[str, Stream]) -> dict[str, Counter[str]]:
    """Actor -> how many of its journaled steps each worker wrote."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for name in streams:
        if name.startswith("actor/"):
            actor = name.removeprefix("actor/")
            for _, _, worker in step_workers(streams, actor):
                counts[actor][worker] += 1
    return counts
