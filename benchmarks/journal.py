"""The journal suite: how fast `SqliteStore` appends and replays, against raw sqlite3.

- ``append``: 1, 10, 100 and 1000 concurrent writers, each awaiting
  ``store.append(own_stream, [record])`` in a loop, in both durability modes, on a fresh
  file per run. Figure: records / wall seconds. Ceiling: stdlib ``sqlite3`` inserting the
  same rows into the same schema with the same pragmas, in transactions of the sizes the
  store's group commit actually formed (``store.stats.batch_sizes``).
- ``replay``: one long stream read back with ``store.read_batches(stream)`` (how the
  runtime replays: one await per batch) and decoded with the `Codec`; ``replay-records``
  reads it with ``async for record in store.read(stream)`` (one await per record).
  Ceiling: one raw ``SELECT data ... ORDER BY position`` whose payloads are decoded by a
  typed msgspec Decoder. For reference, the same raw read of the five columns that a
  verified `Record` needs (position, global position, type, payload, checksum), decoded the
  same way but with no checksum checked and no `Record` built, is measured too
  (``columns_per_s``, ``columns_ratio``): the part of the gap that is the driver's.

Everything runs under uvloop, each measurement is repeated and the middle run reported.
Files live in a temporary directory, removed afterwards; set ``TMPDIR`` to measure
another disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from benchmarks._report import (
    Column,
    Progress,
    Result,
    SuiteReport,
    Target,
    fraction,
    loop_name,
    middle,
    on_uvloop,
    one_decimal,
    seconds,
    whole,
)
from journal import Codec, Durability, NewRecord, SqliteStore

# The one private import of the benchmarks: the ceilings write the store's own file format
# with the store's own pragmas, so they reuse its schema setup and INSERT statement rather
# than a copy that could drift.
from journal._sqlite_schema import INSERT_RECORD, prepare

T = TypeVar("T")

WRITERS = (1, 10, 100, 1000)
DURABILITIES: tuple[Durability, ...] = ("full", "normal")
#: Records written per append scenario, by (durability, writers): (full run, --quick run).
#: Chosen so that each store run lasts about a second or two on a small machine.
APPEND_RECORDS: dict[tuple[Durability, int], tuple[int, int]] = {
    ("full", 1): (3_000, 1_000),
    ("full", 10): (20_000, 5_000),
    ("full", 100): (50_000, 20_000),
    ("full", 1000): (100_000, 20_000),
    ("normal", 1): (10_000, 3_000),
    ("normal", 10): (30_000, 10_000),
    ("normal", 100): (100_000, 20_000),
    ("normal", 1000): (100_000, 20_000),
}
#: Records in the replayed stream: (full run, --quick run).
REPLAY_RECORDS = (100_000, 20_000)
#: Records per append when writing the stream to replay (not timed).
FILL_BATCH = 1_000
REPLAY_STREAM = "Researcher/job-replay"


# -- what is journaled ----------------------------------------------------------------------


class ToolResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a web-search tool returned to the agent."""

    title: str
    url: str
    snippet: str


class StepCompleted(msgspec.Struct, tag="step_completed", frozen=True, kw_only=True):
    """An agent step's journaled result, as the runtime would record it."""

    step: str
    attempt: int
    idempotency_key: str
    fingerprint: str
    result: ToolResult


CODEC: Codec[StepCompleted] = Codec(StepCompleted)


def stream_name(writer: int) -> str:
    """The journal stream of the ``writer``-th agent."""
    return f"Researcher/job-{writer:05d}"


def step_record(stream: str, step: int) -> NewRecord:
    """The encoded result of step ``step`` of the agent writing ``stream``: ~200 bytes."""
    return CODEC.encode(
        StepCompleted(
            step="search_web",
            attempt=1,
            idempotency_key=f"{stream}/turn-1/step-{step}",
            fingerprint=f"{step * 2654435761 % 2**32:08x}",
            result=ToolResult(
                title="SQLite group commit",
                url=f"https://example.org/a/{step}",
                snippet="One fsync per batch.",
            ),
        )
    )


# -- append -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AppendRun:
    """One timed store run: how long it took and the transactions the store formed."""

    seconds: float
    batch_sizes: Counter[int]


async def append_with_store(
    path: Path, durability: Durability, writers: int, records: int
) -> AppendRun:
    """Time ``writers`` concurrent agents appending ``records`` one-record appends in all."""
    if records % writers:
        raise ValueError(f"{records} records don't split evenly among {writers} writers")
    work = {
        stream_name(w): [step_record(stream_name(w), n) for n in range(1, records // writers + 1)]
        for w in range(writers)
    }
    store = await SqliteStore.open(path, durability=durability)
    try:
        start = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            for stream, steps in work.items():
                tasks.create_task(write_steps(store, stream, steps))
        elapsed = time.perf_counter() - start
        batch_sizes = Counter(store.stats.batch_sizes)
    finally:
        await store.close()
    return AppendRun(elapsed, batch_sizes)


async def write_steps(store: SqliteStore, stream: str, steps: Iterable[NewRecord]) -> None:
    """One agent: journal each step's result, waiting until it is durable."""
    for record in steps:
        await store.append(stream, [record])


def stored_rows(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The ``streams`` and ``records`` rows a store wrote, records in global order."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        streams = conn.execute(
            "SELECT id, name, first_position, epoch, snapshot_position FROM streams"
        ).fetchall()
        records = conn.execute(
            "SELECT global_position, stream_id, position, type, data, checksum "
            "FROM records ORDER BY global_position"
        ).fetchall()
    return streams, records


def split(rows: list[T], batch_sizes: Counter[int]) -> list[list[T]]:
    """Cut ``rows`` into consecutive transactions of the given sizes."""
    batches, start = [], 0
    for size in batch_sizes.elements():
        batches.append(rows[start : start + size])
        start += size
    if start != len(rows):
        raise RuntimeError(f"the store committed {start} records in its batches, found {len(rows)}")
    return batches


def append_ceiling(
    store_path: Path, path: Path, durability: Durability, batch_sizes: Counter[int]
) -> float:
    """Time raw sqlite3 committing the store's rows in the store's transaction sizes.

    The rows are the ones the store wrote (interleaved streams, same payloads, positions and
    checksums), so only SQLite's own work is timed. The streams rows are inserted first,
    untimed; the store creates them inside its first transactions.
    """
    streams, rows = stored_rows(store_path)
    batches = split(rows, batch_sizes)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        prepare(conn, str(path), durability)
        conn.executemany(
            "INSERT INTO streams (id, name, first_position, epoch, snapshot_position) "
            "VALUES (?, ?, ?, ?, ?)",
            streams,
        )
        start = time.perf_counter()
        for batch in batches:
            conn.execute("BEGIN IMMEDIATE")  # as the store's writer does
            conn.executemany(INSERT_RECORD, batch)
            conn.execute("COMMIT")
        return time.perf_counter() - start


async def append_scenario(
    durability: Durability, writers: int, records: int, repeats: int, progress: Progress
) -> Result:
    """Appends by ``writers`` concurrent agents, against raw sqlite3 in the same batches."""
    who = f"{writers} writer{'s' if writers > 1 else ''}"
    progress.scenario(f"append {durability}, {who}, {records:,} records")
    runs, ceilings = [], []
    for n in range(1, repeats + 1):
        with tempfile.TemporaryDirectory(prefix="actorflow-bench-") as tmp:
            store_path, ceiling_path = Path(tmp, "store.db"), Path(tmp, "ceiling.db")
            progress.step(f"run {n}/{repeats}, SqliteStore")
            run = await append_with_store(store_path, durability, writers, records)
            progress.step(f"run {n}/{repeats}, raw sqlite3")
            ceilings.append(append_ceiling(store_path, ceiling_path, durability, run.batch_sizes))
            runs.append(run)
    run = next(r for r in runs if r.seconds == middle([r.seconds for r in runs]))
    commits = run.batch_sizes.total()
    figures = rates(records, run.seconds, middle(ceilings))
    return {
        "scenario": "append",
        "store": "sqlite",
        "durability": durability,
        "writers": writers,
        "records": records,
        **figures,
        "commits": commits,
        "mean_batch": round(records / commits, 2),
        "repeats": repeats,
    }


# -- replay -------------------------------------------------------------------------------


async def fill_stream(path: Path, records: int) -> None:
    """Write the stream to replay, in big appends (not timed)."""
    steps = [step_record(REPLAY_STREAM, n) for n in range(1, records + 1)]
    store = await SqliteStore.open(path)
    try:
        for start in range(0, records, FILL_BATCH):
            await store.append(REPLAY_STREAM, steps[start : start + FILL_BATCH])
    finally:
        await store.close()


async def replay_with_store(path: Path, records: int, *, batches: bool) -> float:
    """Time reading the whole stream back through the store and decoding every record.

    ``batches`` reads with `read_batches` (one await per batch: how replay reads);
    otherwise with `read` (one await per record).
    """
    store = await SqliteStore.open(path)
    try:
        count = 0
        start = time.perf_counter()
        if batches:
            async for batch in store.read_batches(REPLAY_STREAM):
                for record in batch:
                    CODEC.decode(record)
                count += len(batch)
        else:
            async for record in store.read(REPLAY_STREAM):
                CODEC.decode(record)
                count += 1
        elapsed = time.perf_counter() - start
    finally:
        await store.close()
    check_count("SqliteStore.read_batches" if batches else "SqliteStore.read", count, records)
    return elapsed


#: What a verified `Record` is built from, as the store reads it.
RECORD_COLUMNS = "position, global_position, type, data, checksum"


def replay_ceiling(path: Path, records: int, columns: str = "data") -> float:
    """Time raw sqlite3 fetching the stream's ``columns`` and msgspec decoding each payload.

    ``data`` alone is the ceiling; `RECORD_COLUMNS` is the reference read.
    """
    decoder = msgspec.msgpack.Decoder(StepCompleted)
    payload = [name.strip() for name in columns.split(",")].index("data")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        start = time.perf_counter()
        (stream_id,) = conn.execute(
            "SELECT id FROM streams WHERE name = ?", (REPLAY_STREAM,)
        ).fetchone()
        rows = conn.execute(
            f"SELECT {columns} FROM records WHERE stream_id = ? ORDER BY position", (stream_id,)
        ).fetchall()
        for row in rows:
            decoder.decode(row[payload])
        elapsed = time.perf_counter() - start
    check_count("raw SELECT", len(rows), records)
    return elapsed


async def replay_scenario(records: int, repeats: int, progress: Progress) -> list[Result]:
    """Reading one long stream back, by batches and by records, against a raw SELECT."""
    progress.scenario(f"replay, {records:,} records")
    batched, single, ceilings, references = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="actorflow-bench-") as tmp:
        path = Path(tmp, "replay.db")
        progress.step("writing the stream (not timed)")
        await fill_stream(path, records)
        for n in range(1, repeats + 1):
            progress.step(f"run {n}/{repeats}, SqliteStore.read_batches")
            batched.append(await replay_with_store(path, records, batches=True))
            progress.step(f"run {n}/{repeats}, SqliteStore.read")
            single.append(await replay_with_store(path, records, batches=False))
            progress.step(f"run {n}/{repeats}, raw sqlite3")
            ceilings.append(replay_ceiling(path, records))
            progress.step(f"run {n}/{repeats}, raw sqlite3, every record column")
            references.append(replay_ceiling(path, records, RECORD_COLUMNS))
    return [
        {
            "scenario": scenario,
            "store": "sqlite",
            "durability": "full",
            "writers": 1,
            "records": records,
            **rates(records, middle(runs), middle(ceilings)),
            "columns_per_s": round(records / middle(references), 1),
            "columns_ratio": round(middle(references) / middle(runs), 4),
            "repeats": repeats,
        }
        for scenario, runs in (("replay", batched), ("replay-records", single))
    ]


# -- figures and targets ------------------------------------------------------------------


def rates(records: int, store_seconds: float, ceiling_seconds: float) -> Result:
    """The store's and the ceiling's records/s, their ratio, and the store's seconds."""
    per_s = records / store_seconds
    ceiling_per_s = records / ceiling_seconds
    return {
        "per_s": round(per_s, 1),
        "ceiling_per_s": round(ceiling_per_s, 1),
        "ratio": round(per_s / ceiling_per_s, 4),
        "seconds": round(store_seconds, 4),
    }


def check_count(reader: str, count: int, expected: int) -> None:
    """Refuse a replay figure computed over the wrong number of records."""
    if count != expected:
        raise RuntimeError(f"{reader} returned {count} records, expected {expected}")


def targets(results: list[Result]) -> list[Target]:
    """The issue's targets, checked against this run."""

    def find(scenario: str, durability: str, writers: int) -> Result:
        return next(
            r
            for r in results
            if (r["scenario"], r["durability"], r["writers"]) == (scenario, durability, writers)
        )

    crowd = find("append", "full", 1000)
    alone = find("append", "full", 1)
    replay = find("replay", "full", 1)
    return [
        Target("append full, 1000 writers, records/s", crowd["per_s"], 100_000),
        Target("append full, 1000 writers, ratio", crowd["ratio"], 0.4, fraction),
        Target("append full, 1 writer, ratio", alone["ratio"], 0.5, fraction),
        Target("replay, records/s", replay["per_s"], 500_000),
        Target("replay, ratio", replay["ratio"], 0.7, fraction),
    ]


def replay_reference(results: list[Result]) -> str:
    """A line on replay against raw sqlite3 reading every column a record needs."""
    replay = next(r for r in results if r["scenario"] == "replay")
    return (
        f"replay against raw sqlite3 reading all five record columns and decoding "
        f"(no checksum, no Record): {replay['columns_per_s']:,.0f}/s, ratio "
        f"{replay['columns_ratio']:.2f}; that read alone is "
        f"{replay['ceiling_per_s'] / replay['columns_per_s']:.2f}x slower than the ceiling's"
    )


COLUMNS = [
    Column("scenario", "scenario", numeric=False),
    Column("durability", "durability", numeric=False),
    Column("writers", "writers", whole),
    Column("records", "records", whole),
    Column("records/s", "per_s", whole),
    Column("raw sqlite3/s", "ceiling_per_s", whole),
    Column("ratio", "ratio", fraction),
    Column("commits", "commits", whole),
    Column("mean batch", "mean_batch", one_decimal),
    Column("seconds", "seconds", seconds),
]


# -- the suite ----------------------------------------------------------------------------


async def measure(quick: bool, repeats: int) -> list[Result]:
    """Run every scenario in turn and return their results."""
    progress = Progress("journal", len(APPEND_RECORDS) + 1)
    results = []
    for durability in DURABILITIES:
        for writers in WRITERS:
            records = APPEND_RECORDS[durability, writers][quick]
            results.append(await append_scenario(durability, writers, records, repeats, progress))
    results.extend(await replay_scenario(REPLAY_RECORDS[quick], repeats, progress))
    progress.finish()
    return results


def run(*, quick: bool, repeats: int) -> SuiteReport:
    """Run the journal suite."""
    results = on_uvloop(measure(quick, repeats))
    loop = loop_name()
    plural = "s" if repeats > 1 else ""
    record_bytes = len(step_record(stream_name(0), 1).data)
    return SuiteReport(
        suite="journal",
        quick=quick,
        title=f"journal: SqliteStore against raw sqlite3, median of {repeats} run{plural}",
        notes=[
            f"records/s = records / wall seconds; {record_bytes}-byte records; "
            f"{loop}; SQLite {sqlite3.sqlite_version}",
            "raw sqlite3 (the ceiling): the same rows, schema and pragmas; appends in the "
            "transaction sizes the store formed; replay reads the payload column alone",
            replay_reference(results),
        ],
        columns=COLUMNS,
        results=results,
        targets=targets(results),
        environment={
            "sqlite": sqlite3.sqlite_version,
            "loop": loop,
            "repeats": repeats,
            "record_bytes": record_bytes,
        },
    )
