"""`journal.copy_journal`: every stream moved into an empty store, exactly, and checked.

The comparison here is the test's own (through the public `Store` API), not the copy's.
"""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from journal import (
    CopyError,
    MemoryStore,
    NewRecord,
    PostgresStore,
    RecordTooLargeError,
    SqliteStore,
    Store,
    StoreNotEmptyError,
    StreamAppend,
    StreamInfo,
    copy_journal,
)
from journal._copy import BATCH_BYTES, BATCH_RECORDS, compare

pytestmark = pytest.mark.anyio

IDENTITY = "0123456789abcdef" * 2
BIG = 6 * 1024 * 1024  # a record larger than a copy batch's bytes


def records(stream: str, first: int, count: int, kind: str = "t") -> list[NewRecord]:
    return [NewRecord(kind, f"{stream}#{n}".encode()) for n in range(first, first + count)]


async def everything(store: Store) -> dict[str, object]:
    """All that a store shows through the public API, global position numbers aside."""
    infos = []
    after = ""
    while page := await store.list_stream_infos(after=after, limit=7):
        infos += page
        after = page[-1].stream
    return {
        "identity": store.identity,
        "infos": infos,
        "records": {
            info.stream: [(r.position, r.type, r.data) async for r in store.read(info.stream)]
            for info in infos
        },
        "snapshots": {info.stream: await store.load_snapshot(info.stream) for info in infos},
        "order": [(r.stream, r.position) async for r in store.read_all()],
    }


async def fill(store: Store) -> None:
    """A journal with what a copy must keep: truncated streams (partly and wholly), snapshots,
    epochs after claims, a deleted stream, interleaved streams longer than a copy batch,
    large records, and a claimed stream that was never written."""
    await store.append("plain", records("plain", 1, 3))
    await store.append("truncated", records("truncated", 1, 5, kind="step"))
    await store.save_snapshot("truncated", 3, b"state at 3")
    await store.truncate("truncated", 3)
    assert await store.claim("owned") == 1
    assert await store.claim("owned") == 2
    await store.append("owned", records("owned", 1, 2), epoch=2)
    await store.append("gone", records("gone", 1, 4))
    await store.delete_stream("gone")
    await store.append("emptied", records("emptied", 1, 4))
    await store.save_snapshot("emptied", 4, b"all of it")
    await store.truncate("emptied", 4)  # holds no records, last position 4
    await store.claim("emptied")
    interleaved = [  # longer than a copy batch; the global order alternates streams
        StreamAppend(f"long-{n % 3}", (NewRecord("t", n.to_bytes(4, "big")),))
        for n in range(BATCH_RECORDS + 40)
    ]
    await store.append_many(interleaved)
    await store.append("large", [NewRecord("blob", b"\x01" * BIG), NewRecord("blob", b"\x02")])
    await store.append("large", [NewRecord("blob", b"\x03" * (BATCH_BYTES - 10))])
    await store.save_snapshot("large", 2, b"\xff" * BIG)
    await store.append("plain", records("plain", 4, 1))  # after the others, globally
    await store.claim("claimed only")  # not listed, not copied (docs/journal.md)


# -- the stores -------------------------------------------------------------------------------

Opener = Callable[[str], Awaitable[Store]]


@pytest.fixture
async def opened() -> AsyncIterator[list[Store]]:
    stores: list[Store] = []
    yield stores
    for store in stores:
        await store.close()


@pytest.fixture
def sqlite(tmp_path: pathlib.Path, opened: list[Store]) -> Opener:
    """Opens (and reopens) the SQLite journal named ``name`` in the test's directory."""

    async def open_(name: str) -> Store:
        store = await SqliteStore.open(tmp_path / f"{name}.db", durability="normal")
        opened.append(store)
        return store

    return open_


@pytest.fixture
def postgres(postgres_dsn: str, opened: list[Store]) -> Opener:
    """Opens (and reopens) the test's PostgreSQL journal (one database: one name)."""

    async def open_(name: str) -> Store:
        store = await PostgresStore.open(postgres_dsn)
        opened.append(store)
        return store

    return open_


# -- copies -----------------------------------------------------------------------------------


async def test_memory_to_sqlite_keeps_everything(sqlite: Opener) -> None:
    source = MemoryStore(identity=IDENTITY)
    await fill(source)
    destination = await sqlite("copy")
    assert destination.identity != IDENTITY

    report = await copy_journal(source, destination)

    expected = await everything(source)
    assert await everything(destination) == expected
    await destination.close()
    reopened = await sqlite("copy")
    assert await everything(reopened) == expected
    assert (await reopened.verify()).ok
    assert reopened.identity == IDENTITY
    assert (report.identity, report.streams, report.snapshots) == (IDENTITY, 8, 3)
    assert report.records == sum(len(r) for r in expected["records"].values())  # type: ignore[attr-defined]
    assert report.record_bytes > BIG + BATCH_BYTES
    assert report.verify.ok


async def test_sqlite_to_postgres_keeps_everything(sqlite: Opener, postgres: Opener) -> None:
    source = await sqlite("source")
    await fill(source)
    destination = await postgres("copy")

    await copy_journal(source, destination)

    expected = await everything(source)
    assert await everything(destination) == expected
    await destination.close()
    reopened = await postgres("copy")
    assert await everything(reopened) == expected
    assert (await reopened.verify()).ok
    assert reopened.identity == source.identity


async def test_the_copy_keeps_what_each_stream_shows(sqlite: Opener) -> None:
    source = MemoryStore()
    await fill(source)
    destination = await sqlite("copy")

    await copy_journal(source, destination)

    assert await destination.stream_info("truncated") == StreamInfo("truncated", 5, 4, 0, 3)
    assert await destination.stream_info("emptied") == StreamInfo("emptied", 4, 5, 1, 4)
    assert await destination.stream_info("owned") == StreamInfo("owned", 2, 1, 2, 0)
    assert await destination.stream_info("gone") == StreamInfo("gone", 0, 1, 0, 0)
    snapshot = await destination.load_snapshot("large")
    assert snapshot is not None
    assert (snapshot.position, snapshot.data) == (2, b"\xff" * BIG)
    # the claimed-only stream is not listed, so not copied: its epoch starts over
    assert await destination.stream_info("claimed only") == StreamInfo("claimed only", 0, 1, 0, 0)


async def test_the_copy_goes_on_where_the_source_stopped(sqlite: Opener) -> None:
    source = MemoryStore()
    await fill(source)
    destination = await sqlite("copy")
    await copy_journal(source, destination)

    epoch = await destination.claim("owned")
    appended = await destination.append(
        "owned", records("owned", 3, 1), expected_position=2, epoch=epoch
    )
    await destination.truncate("truncated", 3)  # the snapshot at 3 covers it

    assert (epoch, appended.first_position) == (3, 3)
    assert [r.position async for r in destination.read("truncated")] == [4, 5]
    assert (await destination.verify()).ok


async def test_progress_is_told_each_stage(sqlite: Opener) -> None:
    source = MemoryStore()
    await fill(source)
    told: list[tuple[str, int]] = []

    await copy_journal(source, await sqlite("copy"), progress=lambda *step: told.append(step))

    assert [stage for stage, _ in told][:1] == ["streams"]
    last = dict(told)
    assert last == {"streams": 8, "records": last["records"], "snapshots": 3, "verified": 8}
    assert last["records"] > BATCH_RECORDS


async def test_an_empty_journal_copies_its_identity_alone(sqlite: Opener) -> None:
    source = MemoryStore(identity=IDENTITY)
    destination = await sqlite("copy")

    report = await copy_journal(source, destination)

    assert (report.streams, report.records, destination.identity) == (0, 0, IDENTITY)


# -- refusals ---------------------------------------------------------------------------------


async def test_a_destination_holding_streams_is_refused_and_left_alone(sqlite: Opener) -> None:
    source = MemoryStore(identity=IDENTITY)
    await fill(source)
    destination = await sqlite("copy")
    await destination.append("already here", records("x", 1, 1))
    before = await everything(destination)

    with pytest.raises(CopyError, match=r"not empty.*'already here'"):
        await copy_journal(source, destination)

    assert await everything(destination) == before
    assert destination.identity != IDENTITY


async def test_a_destination_holding_only_an_epoch_is_refused(postgres: Opener) -> None:
    source = MemoryStore(identity=IDENTITY)
    await fill(source)
    destination = await postgres("copy")
    await destination.claim("claimed")

    with pytest.raises(StoreNotEmptyError, match="'claimed'"):
        await copy_journal(source, destination)

    assert destination.identity != IDENTITY
    assert await destination.list_streams() == []


async def test_a_record_too_large_for_the_destination_fails_the_copy() -> None:
    source = MemoryStore()
    await source.append("s", [NewRecord("t", b"x" * 100)])
    destination = MemoryStore(max_record_bytes=10)

    with pytest.raises(RecordTooLargeError):
        await copy_journal(source, destination)


# -- the check after the copy -----------------------------------------------------------------


async def copied() -> tuple[MemoryStore, MemoryStore]:
    source, destination = MemoryStore(), MemoryStore()
    await fill(source)
    await copy_journal(source, destination)
    return source, destination


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda s: s.append("plain", records("plain", 5, 1)), "stream lists differ"),
        (lambda s: s.claim("owned"), "stream lists differ"),
        (lambda s: s.append("new", records("new", 1, 1)), "stream lists differ"),
        (lambda s: s.save_snapshot("plain", 2, b"other"), "stream lists differ"),
        (lambda s: s.save_snapshot("truncated", 3, b"other"), "snapshots differ"),
    ],
    ids=["record", "epoch", "stream", "snapshot position", "snapshot data"],
)
async def test_the_check_finds_any_difference(
    change: Callable[[Store], Awaitable[object]], said: str
) -> None:
    source, destination = await copied()
    assert await compare(source, destination) == 8

    await change(destination)

    with pytest.raises(CopyError, match=said):
        await compare(source, destination)


async def test_the_check_finds_a_different_identity_or_global_order() -> None:
    source, _ = await copied()
    other = MemoryStore(identity=source.identity)
    for stream in ("b", "a"):
        await other.append(stream, records(stream, 1, 1))
    ordered = MemoryStore(identity=source.identity)
    for stream in ("a", "b"):
        await ordered.append(stream, records(stream, 1, 1))

    with pytest.raises(CopyError, match="identities differ"):
        await compare(source, MemoryStore())
    with pytest.raises(CopyError, match="global order differs at record 1"):
        await compare(other, ordered)


# -- any journal ------------------------------------------------------------------------------

STREAMS = ["a", "b", "c/d", "é"]
operation = st.one_of(
    st.tuples(st.just("append"), st.sampled_from(STREAMS), st.integers(1, 3)),
    st.tuples(st.just("claim"), st.sampled_from(STREAMS), st.just(0)),
    st.tuples(st.just("snapshot"), st.sampled_from(STREAMS), st.integers(0, 5)),
    st.tuples(st.just("truncate"), st.sampled_from(STREAMS), st.integers(0, 5)),
    st.tuples(st.just("delete"), st.sampled_from(STREAMS), st.just(0)),
)


async def apply(store: Store, operations: list[tuple[str, str, int]]) -> None:
    """Run each operation that the store's rules allow (the others are skipped)."""
    for step, (kind, stream, n) in enumerate(operations):
        info = await store.stream_info(stream)
        if kind == "append":
            await store.append(stream, [NewRecord("t", bytes([step, i])) for i in range(n)])
        elif kind == "claim":
            await store.claim(stream)
        elif kind == "snapshot" and info.last_position:
            position = max(info.snapshot_position, info.last_position - n, 1)
            await store.save_snapshot(stream, position, bytes([step]))
        elif kind == "truncate" and info.snapshot_position:
            await store.truncate(stream, max(info.snapshot_position - n, 0))
        elif kind == "delete":
            await store.delete_stream(stream)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, max_size=30))
def test_any_journal_copies_exactly(operations: list[tuple[str, str, int]]) -> None:
    async def run() -> None:
        source, destination = MemoryStore(), MemoryStore()
        await apply(source, operations)
        await copy_journal(source, destination)
        assert await everything(destination) == await everything(source)

    anyio.run(run)


# -- values stored once -----------------------------------------------------------------------


async def test_the_copy_takes_the_values_referred_to_and_leaves_garbage(sqlite: Opener) -> None:
    def value(data: bytes) -> tuple[str, bytes]:
        return hashlib.sha256(data).hexdigest(), data

    (shared, shared_data), (snap, snap_data) = value(b"shared" * 1000), value(b"snap" * 10)
    (gone, gone_data), (loose, loose_data) = value(b"truncated"), value(b"never referred")
    source = await sqlite("source")
    await source.append_many(
        [
            StreamAppend(
                "a",
                (NewRecord("t", b"a1", (gone,)), NewRecord("t", b"a2", (shared,))),
                values={shared: shared_data, gone: gone_data, loose: loose_data},
            ),
            StreamAppend("b", (NewRecord("t", b"b1", (shared, shared)),)),
        ]
    )
    await source.save_snapshot("a", 1, b"state", refs=(snap,), values={snap: snap_data})
    await source.truncate("a", 1)
    destination = await sqlite("copy")

    report = await copy_journal(source, destination)

    assert (report.values, report.value_bytes) == (2, len(shared_data) + len(snap_data))
    assert [r.refs async for r in destination.read_all()] == [(shared,), (shared, shared)]
    snapshot = await destination.load_snapshot("a")
    assert snapshot is not None
    assert snapshot.refs == (snap,)
    assert await destination.read_value(shared) == shared_data
    assert await destination.read_value(snap) == snap_data
    assert await destination.has_values([gone, loose]) == set()
    assert (await destination.verify()).values == 2


async def test_values_go_from_sqlite_to_postgres_and_back(sqlite: Opener, postgres: Opener) -> None:
    def value(data: bytes) -> tuple[str, bytes]:
        return hashlib.sha256(data).hexdigest(), data

    (doc, doc_data), (snap, snap_data) = value(b"doc" * 1000), value(b"snap" * 10)
    (large, large_data), (loose, loose_data) = value(bytes(range(256)) * 8192), value(b"loose")
    source = await sqlite("source")
    await source.append_many(
        [
            StreamAppend(
                "a",
                (NewRecord("t", b"a1", (doc, large)), NewRecord("t", b"a2")),
                values={doc: doc_data, large: large_data, loose: loose_data},
            ),
            StreamAppend("b", (NewRecord("t", b"b1", (doc,)),)),
        ]
    )
    await source.save_snapshot("a", 2, b"state", refs=(snap,), values={snap: snap_data})
    stored = {doc: doc_data, large: large_data, snap: snap_data}

    middle = await postgres("middle")
    there = await copy_journal(source, middle)
    back = await sqlite("back")
    again = await copy_journal(middle, back)

    for report in (there, again):
        assert (report.values, report.value_bytes) == (3, sum(map(len, stored.values())))
    for store in (middle, back):
        assert [r.refs async for r in store.read_all()] == [(doc, large), (), (doc,)]
        snapshot = await store.load_snapshot("a")
        assert snapshot is not None
        assert snapshot.refs == (snap,)
        assert {d: await store.read_value(d) for d in stored} == stored
        assert await store.has_values([loose]) == set()
        assert (await store.verify()).values == 3
