"""The store contract, run against every backend; plus what SQLite keeps across a reopen."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.journal.contract")

from journal import (  # noqa: E402
    MemoryStore,
    NewRecord,
    PostgresStore,
    Record,
    Snapshot,
    SqliteStore,
    Store,
    StreamAppend,
    StreamInfo,
)
from tests.journal.contract import StoreContract  # noqa: E402
from tests.journal.contract_values import ValueContract  # noqa: E402


class TestMemoryStore(StoreContract, ValueContract):
    async def create_store(self, **options: Any) -> Store:
        return MemoryStore(**options)

    async def reopen(self, store: Store) -> Store:
        return store  # nothing survives a close: keep going on the same store


class TestSqliteStore(StoreContract, ValueContract):
    @pytest.fixture(autouse=True)
    def _path(self, tmp_path: pathlib.Path) -> None:
        self.path = tmp_path / "journal.db"

    async def create_store(self, **options: Any) -> Store:
        return await SqliteStore.open(self.path, **options)


class TestPostgresStore(StoreContract, ValueContract):
    """On a real PostgreSQL server (tests/journal/postgres.py), a fresh database per test."""

    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    async def create_store(self, **options: Any) -> Store:
        return await PostgresStore.open(self.dsn, **options)


# -- SQLite across close and reopen ----------------------------------------------------------


async def everything(store: Store, streams: list[str]) -> dict[str, object]:
    """All that a store shows about ``streams`` and its global log."""
    infos: list[StreamInfo] = [await store.stream_info(s) for s in streams]
    snapshots: list[Snapshot | None] = [await store.load_snapshot(s) for s in streams]
    records: list[Record] = [r async for r in store.read_all()]
    return {
        "infos": infos,
        "snapshots": snapshots,
        "records": records,
        "listed": await store.list_streams(),
    }


async def fill(store: Store) -> None:
    """Write one of everything: records, a multi-stream append, claims, a snapshot, a truncation."""
    await store.append("actor/a", [NewRecord("t", b"a%d" % n) for n in range(1, 6)])
    await store.append_many(
        [
            StreamAppend("actor/a", (NewRecord("t", b"a6"),), expected_position=5),
            StreamAppend("actor/b", (NewRecord("u", b"b1"), NewRecord("u", b"b2"))),
        ]
    )
    await store.claim("actor/a")
    epoch = await store.claim("actor/a")
    await store.save_snapshot("actor/a", 4, b"state@4", epoch=epoch)
    await store.truncate("actor/a", 2, epoch=epoch)
    await store.claim("claimed/only")
    await store.append("actor/c", [NewRecord("t", b"c1")])
    await store.save_snapshot("actor/c", 1, b"state-c")
    await store.truncate("actor/c", 1)  # deletes the newest record in the store


STREAMS = ["actor/a", "actor/b", "actor/c", "claimed/only", "never"]


@pytest.mark.anyio
@pytest.mark.parametrize("durability", ["full", "normal"])
async def test_sqlite_keeps_everything_across_reopen(
    tmp_path: pathlib.Path, durability: Any
) -> None:
    path = tmp_path / "journal.db"
    store = await SqliteStore.open(path, durability=durability)
    try:
        await fill(store)
        before = await everything(store, STREAMS)
        newest = max([r.global_position async for r in store.read_all()])
    finally:
        await store.close()

    store = await SqliteStore.open(path, durability=durability)
    try:
        assert await everything(store, STREAMS) == before
        assert (await store.stream_info("actor/a")).epoch == 2
        assert (await store.stream_info("claimed/only")).epoch == 1
        assert (await store.stream_info("actor/c")).last_position == 1
        appended = await store.append("actor/a", [NewRecord("t", b"a7")], expected_position=6)
        assert appended.first_position == 7
        assert appended.last_global_position > newest + 1  # actor/c's deleted record's too
        assert (await store.verify()).ok
    finally:
        await store.close()


@pytest.mark.anyio
async def test_sqlite_file_reopens_under_the_other_durability(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "journal.db"
    for durability, payload in [("full", b"1"), ("normal", b"2"), ("full", b"3")]:
        store = await SqliteStore.open(path, durability=durability)  # type: ignore[arg-type]
        try:
            await store.append("s", [NewRecord("t", payload)])
        finally:
            await store.close()

    store = await SqliteStore.open(path)
    try:
        assert [r.data async for r in store.read("s")] == [b"1", b"2", b"3"]
    finally:
        await store.close()


@pytest.mark.anyio
async def test_sqlite_store_closes_on_leaving_async_with(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "journal.db"
    async with await SqliteStore.open(path) as store:
        await store.append("s", [NewRecord("t", b"kept")])

    async with await SqliteStore.open(path) as again:
        assert [r.data async for r in again.read("s")] == [b"kept"]
