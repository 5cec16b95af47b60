"""Notices and leases of the PostgreSQL journal (journal/_postgres_cluster.py), on a real
server: what several processes sharing one journal coordinate with."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from journal import ConflictError, Listener, NewRecord, Notice, PostgresStore
from tests.journal.postgres import server

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(postgres_dsn: str) -> AsyncIterator[PostgresStore]:
    opened = await PostgresStore.open(postgres_dsn, notify_prefixes=("inbox/",))
    try:
        yield opened
    finally:
        await opened.close()


async def heard(listener: Listener) -> Notice:
    return await asyncio.wait_for(listener.__anext__(), 10)


async def test_appends_to_watched_streams_are_heard_by_another_process(
    store: PostgresStore, postgres_dsn: str
) -> None:
    other = await PostgresStore.open(postgres_dsn)  # another process: it listens only
    try:
        async with other.listen() as notices:
            await store.append("actor/x", [NewRecord("t", b"a")])  # not watched
            await store.append("inbox/x", [NewRecord("t", b"b"), NewRecord("t", b"c")])
            assert await heard(notices) == Notice("appended", "inbox/x", 2)
            with pytest.raises(ConflictError):  # refused: nothing committed, nothing heard
                await store.append("inbox/x", [NewRecord("t", b"d")], expected_position=0)
            await store.append("inbox/y", [NewRecord("t", b"e")])
            assert await heard(notices) == Notice("appended", "inbox/y", 1)
    finally:
        await other.close()


async def test_a_store_without_prefixes_sends_no_notices(
    store: PostgresStore, postgres_dsn: str
) -> None:
    quiet = await PostgresStore.open(postgres_dsn)
    try:
        async with store.listen() as notices:
            await quiet.append("inbox/x", [NewRecord("t", b"a")])
            await store.append("inbox/z", [NewRecord("t", b"b")])  # a marker after it
            assert await heard(notices) == Notice("appended", "inbox/z", 1)
    finally:
        await quiet.close()


async def test_a_listener_says_resync_after_the_server_restarts(store: PostgresStore) -> None:
    async with store.listen() as notices:
        notices.keepalive = 0.1
        server().restart("immediate")
        assert await heard(notices) == Notice("resync")
        await store.append("inbox/after", [NewRecord("t", b"a")])
        assert await heard(notices) == Notice("appended", "inbox/after", 1)
        assert notices.reconnects == 1


async def test_a_lease_is_held_by_one_owner_until_it_expires(store: PostgresStore) -> None:
    leases = store.leases
    assert await leases.acquire("a", "w1", 30) == 1
    assert await leases.acquire("a", "w2", 30) is None  # held
    assert await leases.acquire("a", "w1", 30) == 1  # its own: renewed, same epoch
    assert await leases.acquire("b", "w1", 0) == 1  # expires at once
    assert await leases.expired() == ["b"]
    assert await leases.acquire("b", "w2", 30) == 2  # taken over: a higher epoch
    assert await leases.renew("w1", 30) == {"a"}  # w1 learns it lost b
    holders = await leases.holders(["a", "b", "c"])
    assert {name: (info.owner, info.epoch) for name, info in holders.items()} == {
        "a": ("w1", 1),
        "b": ("w2", 2),
    }
    assert holders["a"].expires_in > 0


async def test_a_released_lease_is_announced_and_its_epoch_goes_on(
    store: PostgresStore,
) -> None:
    leases = store.leases
    assert await leases.acquire("a", "w1", 30) == 1
    async with store.listen() as notices:
        assert await leases.release(["a"], "w2") == 0  # not w2's to release
        assert await leases.release(["a"], "w1") == 1
        assert await heard(notices) == Notice("released", "a", owner="w1")
    assert await leases.holders(["a"]) == {}
    assert await leases.acquire("a", "w2", 30) == 2


async def test_members_heartbeat_and_leave(store: PostgresStore) -> None:
    leases = store.leases
    await leases.renew("w1", 30, b"one")
    await leases.renew("w2", 0, b"two")  # expired at once: not live
    await leases.acquire("x", "w1", 30)
    members = await leases.members()
    assert [(m.member, m.info) for m in members] == [("w1", b"one")]
    assert [lease.name for lease in await leases.held_by("w1")] == ["x"]
    assert await leases.leave("w1") == 1
    assert await leases.members() == []
    assert await leases.holders(["x"]) == {}


async def test_a_schema_1_database_gains_the_lease_and_value_tables(postgres_dsn: str) -> None:
    first = await PostgresStore.open(postgres_dsn)
    await first.append("s", [NewRecord("t", b"kept")])
    await first.close()
    database = postgres_dsn.split("/")[3].split("?")[0]
    server().sql(
        "DROP TABLE journal_leases; DROP TABLE journal_members; "
        "DROP TABLE journal_values, journal_record_refs, journal_snapshot_refs; "
        "ALTER TABLE journal_records DROP COLUMN refs; "
        "ALTER TABLE journal_snapshots DROP COLUMN refs; "
        "UPDATE journal_meta SET schema_version = 1",
        database,
    )
    again = await PostgresStore.open(postgres_dsn)
    try:
        assert await again.leases.acquire("a", "w1", 30) == 1
        assert [r.data async for r in again.read("s")] == [b"kept"]
        assert await again.has_values(["0" * 64]) == set()
    finally:
        await again.close()
    assert server().sql("SELECT schema_version FROM journal_meta", database).strip() == "3"


async def test_expired_leases_are_freed_and_announced_as_released_by_their_holder(
    store: PostgresStore,
) -> None:
    leases = store.leases
    await leases.acquire("dead", "w1", 0)  # expired at once
    await leases.acquire("alive", "w1", 30)
    async with store.listen() as notices:
        assert await leases.free_expired(["dead", "alive", "unknown"]) == 1
        assert await heard(notices) == Notice("released", "dead", owner="w1")
    assert await leases.expired() == []
    assert await leases.renew("w1", 30) == {"alive"}
    assert await leases.acquire("dead", "w2", 30) == 2


async def test_many_leases_are_taken_in_one_call_as_one_at_a_time_would_be(
    store: PostgresStore,
) -> None:
    leases = store.leases
    await leases.acquire("held", "w2", 30)
    await leases.acquire("expired", "w2", 0)
    await leases.acquire("mine", "w1", 30)
    taken = await leases.acquire_many(["new", "held", "expired", "mine", "new"], "w1", 30)
    assert taken == {"new": 1, "expired": 2, "mine": 1}  # held by w2: absent
    assert await leases.acquire_many([], "w1", 30) == {}
    holders = await leases.holders(["new", "held", "expired", "mine"])
    assert {name: info.owner for name, info in holders.items()} == {
        "new": "w1",
        "held": "w2",
        "expired": "w1",
        "mine": "w1",
    }
    with pytest.raises(ValueError, match="lease owner"):
        await leases.acquire_many(["x"], "", 30)


async def test_statements_that_lock_many_leases_at_once_never_deadlock(postgres_dsn: str) -> None:
    """Three processes at once, round after round: one heartbeats the 200 leases it holds,
    two try to take all of them (each in a different order). Each statement locks many
    lease rows; were they not all locked in one order (the leases' names), two statements
    would each hold a row the other waits for, and PostgreSQL would end one of them with a
    deadlock error."""
    names = [f"actor/T/{i:03d}" for i in range(200)]
    stores = [await PostgresStore.open(postgres_dsn) for _ in range(3)]
    holder, one, other = (s.leases for s in stores)
    try:
        for name in reversed(names):  # rows stored (and found by owner) in reverse order
            assert await holder.acquire(name, "w1", 30) == 1
        for _ in range(30):
            renewed, first, second = await asyncio.gather(
                holder.renew("w1", 30),
                one.acquire_many(names, "w2", 30),
                other.acquire_many(list(reversed(names)), "w3", 30),
            )
            assert renewed == set(names)
            assert first == second == {}  # all held by w1
        for _ in range(10):  # releases, too, among them
            await asyncio.gather(
                holder.renew("w1", 30),
                other.acquire_many(list(reversed(names)), "w3", 30),
                holder.release(names[1::2], "w1"),
            )
            await holder.acquire_many(names[1::2], "w1", 30)  # those w3 did not take
    finally:
        for s in stores:
            await s.close()
