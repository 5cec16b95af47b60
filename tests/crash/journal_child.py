"""A journal writer meant to be killed: many concurrent appenders on one `SqliteStore`, forever.

Run as ``python -m tests.crash.journal_child PATH SEED [--loop uvloop]`` (or by file path).
It opens the store at PATH with ``durability="full"``, prints ``OPEN`` and then runs
`WRITERS` writer tasks until something kills it. Writer ``w`` owns the streams ``wNN/a`` and
``wNN/b``; every append carries the expected position, so each record's position is decided
by the writer, not by the store. A writer appends one record, several records to one stream,
or (through `SqliteStore.append_many`) records to both of its streams in one transaction.

Once an append's await has returned, and only then, the writer prints one line per record::

    ACK <stream> <position> <txid> <index> <count>

where ``txid`` names the transaction (unique across runs because SEED is), ``index`` is the
record's place in it and ``count`` its number of records over every stream it touched. Each
record's payload holds the same fields plus a body derived from them (`expected_payload`), so
whoever reads the journal back can tell a damaged record, a misplaced one, and a transaction
that was applied in part. Any surprise (a conflict, a wrong position) ends the process with
a traceback and a non-zero status, which the crash test reports.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sys
from collections.abc import Sequence

import msgspec

from journal import NewRecord, SqliteStore, StreamAppend

#: Concurrent writer tasks in one child.
WRITERS = 50
#: The record type tag of every record the child writes.
RECORD_TYPE = "crash.record"


class Payload(msgspec.Struct, frozen=True, array_like=True):
    """What one record holds: where it belongs, its transaction, and a checkable body."""

    stream: str
    position: int
    txid: str
    index: int
    count: int
    body: bytes


def writer_streams(writer: int) -> tuple[str, str]:
    """The two streams that writer number ``writer`` owns."""
    return f"w{writer:02d}/a", f"w{writer:02d}/b"


def body_for(stream: str, position: int, txid: str, index: int) -> bytes:
    """The deterministic body of a record: mostly small, now and then several pages long."""
    seed = hashlib.blake2b(f"{stream}|{position}|{txid}|{index}".encode(), digest_size=32).digest()
    size = 4000 + seed[1] * 40 if seed[0] < 16 else 8 + seed[1]
    return (seed * (size // len(seed) + 1))[:size]


def expected_payload(stream: str, position: int, txid: str, index: int, count: int) -> bytes:
    """The exact bytes stored for the record described by these fields."""
    body = body_for(stream, position, txid, index)
    return msgspec.msgpack.encode(Payload(stream, position, txid, index, count, body))


def decode_payload(data: bytes) -> Payload:
    """Decode a stored payload (raises `msgspec.DecodeError` on damaged bytes)."""
    return msgspec.msgpack.decode(data, type=Payload)


def plan_transaction(rng: random.Random, streams: tuple[str, str]) -> list[tuple[str, int]]:
    """Pick the next transaction's shape: (stream, number of records) for each stream."""
    roll = rng.random()
    if roll < 0.4:
        return [(rng.choice(streams), 1)]
    if roll < 0.7:
        return [(rng.choice(streams), rng.randint(2, 5))]
    return [(streams[0], rng.randint(1, 3)), (streams[1], rng.randint(1, 3))]


def build_parts(
    plan: Sequence[tuple[str, int]], positions: dict[str, int], txid: str
) -> list[StreamAppend]:
    """The appends that carry out ``plan`` at the writer's known positions."""
    count = sum(n for _, n in plan)
    parts, index = [], 0
    for stream, n in plan:
        at = positions[stream]
        records = []
        for offset in range(1, n + 1):
            data = expected_payload(stream, at + offset, txid, index, count)
            records.append(NewRecord(RECORD_TYPE, data))
            index += 1
        parts.append(StreamAppend(stream, tuple(records), expected_position=at))
    return parts


async def commit(store: SqliteStore, parts: list[StreamAppend]) -> None:
    """Append ``parts`` (one plain append or one multi-stream append) and check where they went."""
    if len(parts) == 1:
        part = parts[0]
        results = [
            await store.append(part.stream, part.records, expected_position=part.expected_position)
        ]
    else:
        results = await store.append_many(parts)
    for part, result in zip(parts, results, strict=True):
        at = part.expected_position
        assert at is not None
        wanted = (part.stream, at + 1, at + len(part.records))
        got = (result.stream, result.first_position, result.last_position)
        if got != wanted:
            raise AssertionError(f"append landed at {got}, expected {wanted}")


def acknowledge(parts: list[StreamAppend], txid: str) -> None:
    """Print one ACK line per record of a committed transaction, and flush them out."""
    count = sum(len(part.records) for part in parts)
    lines, index = [], 0
    for part in parts:
        assert part.expected_position is not None
        for offset in range(1, len(part.records) + 1):
            position = part.expected_position + offset
            lines.append(f"ACK {part.stream} {position} {txid} {index} {count}\n")
            index += 1
    sys.stdout.write("".join(lines))
    sys.stdout.flush()


async def run_writer(store: SqliteStore, writer: int, seed: int) -> None:
    """Append to this writer's streams forever, acknowledging each transaction once durable."""
    rng = random.Random(f"{seed}:{writer}")
    streams = writer_streams(writer)
    positions = {stream: await store.last_position(stream) for stream in streams}
    serial = 0
    while True:
        serial += 1
        txid = f"s{seed}w{writer}n{serial}"
        parts = build_parts(plan_transaction(rng, streams), positions, txid)
        await commit(store, parts)
        acknowledge(parts, txid)
        for part in parts:
            positions[part.stream] += len(part.records)


async def run(path: str, seed: int) -> None:
    """Open the store and run every writer until the process is killed."""
    store = await SqliteStore.open(path, durability="full")
    try:
        sys.stdout.write("OPEN\n")
        sys.stdout.flush()
        async with asyncio.TaskGroup() as tasks:
            for writer in range(WRITERS):
                tasks.create_task(run_writer(store, writer, seed))
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the SQLite journal file")
    parser.add_argument("seed", type=int, help="names this run's transactions and its choices")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(run(args.path, args.seed))
    else:
        asyncio.run(run(args.path, args.seed))


if __name__ == "__main__":
    main()
