"""The cluster suite's ceiling: raw asyncpg writing what the journal wrote, as the journal
writes it, with nothing of actorflow or of the store's Python around it.

`Shape` is what the journal's write transactions did during a measured run: how many
write transactions (each locks the rows of the streams it writes once), read from
PostgreSQL's own ``pg_stat_statements`` (exact counts, updated as each statement ends),
how many records they inserted (the advance of the journal's next global position) and
how many stream rows they updated.

`ceiling` then replays that shape on a fresh database with the journal's own tables
(created by `journal.PostgresStore.open`): as many concurrent writers as there were
workers, each on its own connection, together committing as many transactions as the
journal did, with as many records and stream-row updates, each transaction with the
journal's statements in the journal's order:

1. ``BEGIN``; lock and read the rows of the streams written (``SELECT ... FOR UPDATE``);
2. write back each stream row, only where it still holds the position and epoch read
   (the store's own ``UPDATE``);
3. take the global positions and insert the records in one statement (the store's own:
   it locks the ``journal_meta`` row, which serialises every writer of the database
   from there to the commit, as in the store); ``COMMIT``.

A writer owns its share of the streams (as a worker owns its actors' leases) and cycles
through them, so that a transaction with several streams touches distinct rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import zlib
from typing import Any

import asyncpg

# The cluster suite's private import, as the journal suite's: the ceiling runs the store's
# own INSERT and UPDATE statements, not copies that could drift from them.
from journal._postgres_schema import STREAM_ROW, TAKE_AND_INSERT, UPDATE_STREAMS

#: The record type and payload the ceiling writes: a step's outcome is a few dozen bytes.
RECORD_TYPE = "step"
PAYLOAD = bytes(range(48))

#: ``pg_stat_statements`` rows of the current database whose text matches a pattern:
#: (calls, rows) summed.
STATEMENT_COUNTS = """
SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(rows), 0)::bigint
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query ILIKE $1
"""


@dataclasses.dataclass(frozen=True)
class Shape:
    """The journal's write transactions over a run."""

    #: Write transactions begun (each locks its stream rows once).
    transactions: int
    #: Records inserted.
    records: int
    #: Stream rows updated (written back) by them.
    stream_rows: int

    @property
    def records_per_transaction(self) -> float:
        """Mean records a transaction."""
        return self.records / max(self.transactions, 1)

    @property
    def streams_per_transaction(self) -> float:
        """Mean stream rows a transaction wrote back."""
        return self.stream_rows / max(self.transactions, 1)

    def __sub__(self, other: Shape) -> Shape:
        return Shape(
            self.transactions - other.transactions,
            self.records - other.records,
            self.stream_rows - other.stream_rows,
        )


async def enable_statement_counts(conn: Any) -> None:
    """Make ``pg_stat_statements`` readable in the connection's database (the server must
    preload it)."""
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


async def shape_now(conn: Any) -> Shape:
    """The journal's write statements so far in the connection's database (the
    difference of two readings is a run's `Shape`)."""

    async def counts(pattern: str) -> tuple[int, int]:
        calls, rows = await conn.fetchrow(STATEMENT_COUNTS, pattern)
        return int(calls), int(rows)

    transactions, _ = await counts("SELECT name, id, %FROM journal_streams WHERE name = ANY%")
    records = int(await conn.fetchval("SELECT next_global - 1 FROM journal_meta WHERE id = 1"))
    _, stream_rows = await counts("UPDATE journal_streams%")
    return Shape(transactions, records, stream_rows)


def spread(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` whole numbers that differ by at most one."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclasses.dataclass(frozen=True)
class Plan:
    """One writer's transactions: how many streams and records each writes."""

    streams: list[int]
    records: list[int]


def plans(shape: Shape, writers: int) -> list[Plan]:
    """The shape's transactions dealt among ``writers``: each transaction's stream and
    record counts are the shape's means, rounded so that the totals come out exact (every
    transaction writes at least one stream and at least one record per stream)."""
    transactions = spread(shape.transactions, writers)
    records = spread(shape.records, writers)
    stream_rows = spread(shape.stream_rows, writers)
    found = []
    for txns, recs, rows in zip(transactions, records, stream_rows, strict=True):
        rows = max(rows, txns)
        recs = max(recs, rows)
        found.append(Plan(spread(rows, txns), spread(recs, txns)) if txns else Plan([], []))
    return found


async def create_streams(conn: Any, names: list[str]) -> dict[str, int]:
    """Make the streams the ceiling writes, untimed (the journal made them on the way);
    their ids by name."""
    rows = await conn.fetch(
        "INSERT INTO journal_streams (name) SELECT unnest($1::text[]) RETURNING name, id",
        sorted(names),
    )
    return {row["name"]: row["id"] for row in rows}


async def write(conn: Any, plan: Plan, names: list[str], ids: dict[str, int]) -> None:
    """One writer: ``plan``'s transactions, round-robin over ``names`` (its own streams)."""
    checksum = zlib.crc32(PAYLOAD)
    turn = 0
    for stream_count, record_count in zip(plan.streams, plan.records, strict=True):
        stream_count = min(stream_count, len(names))  # (more than it owns: more records each)
        chosen = [names[(turn + i) % len(names)] for i in range(stream_count)]
        turn += stream_count
        each = spread(record_count, stream_count)
        async with conn.transaction():
            rows = await conn.fetch(STREAM_ROW, sorted(chosen))
            read = {row["name"]: row for row in rows}
            globals_, sids, positions = [], [], []
            update: list[list[int]] = [[], [], [], [], [], [], []]
            for name, count in zip(chosen, each, strict=True):
                row = read[name]
                last = row["last_position"]
                for k in range(1, count + 1):
                    globals_.append(len(globals_))
                    sids.append(ids[name])
                    positions.append(last + k)
                values = (row["id"], last + count, row["first_position"], row["epoch"])
                for column, value in zip(
                    update,
                    (*values, row["snapshot_position"], last, row["epoch"]),
                    strict=True,
                ):
                    column.append(value)
            status = await conn.execute(UPDATE_STREAMS, *update)
            if int(status.split()[-1]) != len(chosen):
                raise RuntimeError(f"the ceiling's stream rows changed under it: {status}")
            n = len(globals_)
            await conn.fetchrow(
                TAKE_AND_INSERT,
                n,
                globals_,
                sids,
                positions,
                [RECORD_TYPE] * n,
                [PAYLOAD] * n,
                [checksum] * n,
                [None] * n,  # refs: the steps refer to no value
            )


@dataclasses.dataclass(frozen=True)
class CeilingRun:
    """What the ceiling did and how long it took."""

    seconds: float
    transactions: int
    records: int
    stream_rows: int


async def ceiling(dsn: str, shape: Shape, writers: int, names: list[str]) -> CeilingRun:
    """Time ``writers`` concurrent raw asyncpg writers committing ``shape`` on ``dsn`` (a
    database holding the journal's empty tables), each over its share of ``names``."""
    shares = [names[i::writers] for i in range(writers)]
    work = plans(shape, writers)
    connections = [await asyncpg.connect(dsn) for _ in range(writers)]
    try:
        ids = await create_streams(connections[0], names)
        began = time.perf_counter()
        await asyncio.gather(
            *(
                write(conn, plan, share, ids)
                for conn, plan, share in zip(connections, work, shares, strict=True)
            )
        )
        elapsed = time.perf_counter() - began
    finally:
        for conn in connections:
            await conn.close()
    return CeilingRun(
        elapsed,
        sum(len(p.streams) for p in work),
        sum(sum(p.records) for p in work),
        sum(sum(p.streams) for p in work),
    )
