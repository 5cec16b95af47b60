"""Values stored once in a PostgreSQL journal: its upgrade from schema version 2, what the
tables hold, damage found by reads and verify, collection racing appends of another store
(another process's writer), and a value larger than any record.

All of it on a real PostgreSQL server (tests/journal/postgres.py), a fresh database each.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from journal import (
    CorruptValueError,
    MissingValueError,
    NewRecord,
    PostgresStore,
    StreamAppend,
)
from journal._postgres_cluster import CREATE_TABLES as CLUSTER_TABLES
from journal._postgres_values import COLLECT_PAGE
from tests.journal.contract_values import DOC, OTHER, PROMPT, digest, given
from tests.journal.postgres import server

pytestmark = pytest.mark.anyio


def database(dsn: str) -> str:
    return dsn.split("/")[3].split("?")[0]


def referring(data: bytes, *values: bytes) -> NewRecord:
    return NewRecord("t", data, refs=tuple(digest(v) for v in values))


@pytest.fixture
async def stores(postgres_dsn: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database, as two processes would have: two writer connections."""
    first = await PostgresStore.open(postgres_dsn)
    second = await PostgresStore.open(postgres_dsn)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


# -- schema ---------------------------------------------------------------------------------

#: The tables of schema version 2, as that version created them (kept here as written
#: then, so that the upgrade is tested from what such a database really holds).
VERSION_2 = [
    """CREATE TABLE journal_meta (
        id smallint PRIMARY KEY CHECK (id = 1),
        schema_version integer NOT NULL,
        identity text NOT NULL,
        next_global bigint NOT NULL CHECK (next_global >= 1)
    )""",
    """CREATE TABLE journal_streams (
        id bigserial PRIMARY KEY,
        name text COLLATE "C" NOT NULL UNIQUE,
        last_position bigint NOT NULL DEFAULT 0 CHECK (last_position >= 0),
        first_position bigint NOT NULL DEFAULT 1 CHECK (first_position >= 1),
        epoch bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
        snapshot_position bigint NOT NULL DEFAULT 0 CHECK (snapshot_position >= 0),
        CHECK (first_position <= last_position + 1),
        CHECK (snapshot_position <= last_position)
    )""",
    """CREATE TABLE journal_records (
        global_position bigint PRIMARY KEY,
        stream_id bigint NOT NULL REFERENCES journal_streams (id),
        position bigint NOT NULL CHECK (position >= 1),
        type text NOT NULL,
        data bytea NOT NULL,
        checksum bigint NOT NULL,
        UNIQUE (stream_id, position)
    )""",
    """CREATE TABLE journal_snapshots (
        stream_id bigint PRIMARY KEY REFERENCES journal_streams (id),
        position bigint NOT NULL,
        data bytea NOT NULL,
        checksum bigint NOT NULL
    )""",
    *CLUSTER_TABLES,
]

IDENTITY = "0123456789abcdef0123456789abcdef"


async def make_version_2_journal(dsn: str) -> None:
    """A version 2 journal holding stream "a" (records 2 and 3 after a truncation, a
    snapshot at 2) and "b" (record 1), its rows written as version 2 wrote them."""
    from journal._records import checksum, snapshot_checksum

    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for statement in VERSION_2:
                await conn.execute(statement)
            await conn.execute("INSERT INTO journal_meta VALUES (1, 2, $1, 5)", IDENTITY)
            await conn.execute(
                "INSERT INTO journal_streams (id, name, last_position, first_position, "
                "snapshot_position) VALUES (1, 'a', 3, 2, 2), (2, 'b', 1, 1, 0)"
            )
            rows = [(2, 1, 2, b"a2"), (3, 1, 3, b"a3"), (4, 2, 1, b"b1")]
            for global_position, sid, position, data in rows:
                name = "a" if sid == 1 else "b"
                await conn.execute(
                    "INSERT INTO journal_records VALUES ($1, $2, $3, 't', $4, $5)",
                    global_position,
                    sid,
                    position,
                    data,
                    checksum(name, position, "t", data),
                )
            await conn.execute(
                "INSERT INTO journal_snapshots VALUES (1, 2, 'state'::bytea, $1)",
                snapshot_checksum("a", 2, b"state"),
            )
    finally:
        await conn.close()


async def test_a_version_2_database_is_upgraded_and_then_stores_values(
    postgres_dsn: str,
) -> None:
    await make_version_2_journal(postgres_dsn)

    async with await PostgresStore.open(postgres_dsn) as store:
        assert server().sql("SELECT schema_version FROM journal_meta", database(postgres_dsn)) == (
            "3\n"
        )
        assert store.identity == IDENTITY
        assert [(r.stream, r.position, r.data, r.refs) async for r in store.read_all()] == [
            ("a", 2, b"a2", ()),
            ("a", 3, b"a3", ()),
            ("b", 1, b"b1", ()),
        ]
        snapshot = await store.load_snapshot("a")
        assert snapshot is not None
        assert (snapshot.position, snapshot.data, snapshot.refs) == (2, b"state", ())
        appended = await store.append_many(
            [StreamAppend("b", (referring(b"b2", DOC),), values=given(DOC))]
        )
        assert appended[0].last_global_position == 5
        assert await store.read_value(digest(DOC)) == DOC
        assert (await store.verify()).ok

    async with await PostgresStore.open(postgres_dsn) as again:
        assert [r.refs async for r in again.read("b")] == [(), (digest(DOC),)]


# -- what the tables hold -------------------------------------------------------------------


async def refer_to_doc_and_prompt(store: PostgresStore) -> None:
    parts = [
        StreamAppend(
            "s",
            (NewRecord("t", b"r1"), referring(b"r2", DOC, DOC)),
            values=given(DOC, PROMPT),
        )
    ]
    await store.append_many(parts)
    await store.save_snapshot("s", 1, b"state", refs=(digest(PROMPT),))


async def test_refs_rows_go_with_what_refers(postgres_dsn: str) -> None:
    """The refs tables hold one row per (record or snapshot, digest), and lose it in the
    transaction that deletes what refers."""
    name = database(postgres_dsn)

    def rows() -> str:
        return (
            server()
            .sql(
                "SELECT (SELECT count(*) FROM journal_record_refs) || ' ' || "
                "(SELECT count(*) FROM journal_snapshot_refs)",
                name,
            )
            .strip()
        )

    async with await PostgresStore.open(postgres_dsn) as store:
        await refer_to_doc_and_prompt(store)
        assert rows() == "1 1"
        await store.save_snapshot("s", 2, b"state2")
        await store.truncate("s", 2)
        assert rows() == "0 0"
        await store.append_many(
            [
                StreamAppend(
                    "t", (referring(b"t1", DOC),), snapshot=b"x", snapshot_refs=(digest(DOC),)
                )
            ]
        )
        assert rows() == "1 1"
        await store.delete_stream("t")
        assert rows() == "0 0"
        assert await store.collect_values() == 2


async def test_a_damaged_value_is_never_returned_and_verify_names_it(postgres_dsn: str) -> None:
    async with await PostgresStore.open(postgres_dsn) as store:
        await refer_to_doc_and_prompt(store)
        server().sql(
            f"UPDATE journal_values SET data = 'X'::bytea || substring(data from 2) "
            f"WHERE digest = '{digest(DOC)}'",
            database(postgres_dsn),
        )

        with pytest.raises(CorruptValueError, match=digest(DOC)) as raised:
            await store.read_value(digest(DOC))
        assert raised.value.digest == digest(DOC)
        assert await store.read_value(digest(PROMPT)) == PROMPT
        report = await store.verify()

    assert report.values == 2
    assert [(p.kind, digest(DOC) in p.detail) for p in report.problems] == [("value", True)]


async def test_verify_names_every_dangling_ref(postgres_dsn: str) -> None:
    async with await PostgresStore.open(postgres_dsn) as store:
        await refer_to_doc_and_prompt(store)
        server().sql("DELETE FROM journal_values", database(postgres_dsn))
        report = await store.verify()

    assert sorted((p.stream, p.position, p.kind, p.detail) for p in report.problems) == [
        ("s", 1, "dangling ref", f"refers to value {digest(PROMPT)}, not stored"),
        ("s", 2, "dangling ref", f"refers to value {digest(DOC)}, not stored"),
    ]


# -- collecting beside another process's appends ---------------------------------------------


async def test_collecting_in_another_store_never_loses_a_referred_value(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    """Appends through one store that refer to a stored value without sending it, racing
    collections through the other and through itself, in every order: each append lands
    (and its value stays readable) or fails with MissingValueError, writing nothing."""
    first, second = stores
    values = [b"value %d" % n * 100 for n in range(24)]
    landed = refused = 0
    for n, value in enumerate(values):
        await second.append_many([StreamAppend("seed", (), values=given(value))])
        calls = [second.collect_values(), first.collect_values()]
        calls.insert(n % 3, first.append("s", [referring(b"r", value)]))
        if n % 6 >= 3:
            calls.reverse()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        appended = outcomes[n % 3 if n % 6 < 3 else 2 - n % 3]
        if isinstance(appended, MissingValueError):
            refused += 1
        else:
            assert not isinstance(appended, BaseException), appended
            landed += 1
            assert await second.read_value(digest(value)) == value

    assert landed + refused == len(values)
    referred = [r.refs[0] async for r in second.read("s")]
    assert len(referred) == landed
    assert await second.has_values(referred) == set(referred)
    assert (await second.verify()).ok


async def test_a_value_an_uncommitted_append_relies_on_is_not_collected(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    """An append that refers to a stored value holds it from its check to its commit: a
    collection in another store meanwhile leaves it, and it stays readable after."""
    first, second = stores
    await second.append_many([StreamAppend("seed", (), values=given(DOC, OTHER))])
    checked, release = asyncio.Event(), asyncio.Event()

    async def hold(conn: Any) -> None:
        checked.set()
        await release.wait()

    first.before_commit = hold
    append = asyncio.ensure_future(first.append("s", [referring(b"r", DOC)]))
    await checked.wait()
    try:
        assert await second.collect_values() == 1  # OTHER; DOC is held by the append
    finally:
        release.set()
    await append

    assert await second.read_value(digest(DOC)) == DOC
    assert await second.collect_values() == 0
    assert (await second.verify()).ok


async def test_an_append_waiting_on_a_collection_finds_its_value_gone(
    postgres_dsn: str,
) -> None:
    """A collection (here a session that runs its statements and holds its transaction
    open) has locked a garbage value: an append referring to it waits, then finds it gone
    and fails alone with MissingValueError; one that sends the bytes stores them again."""
    async with await PostgresStore.open(postgres_dsn) as store:
        await store.append_many([StreamAppend("seed", (), values=given(DOC))])
        collector = await asyncpg.connect(postgres_dsn)
        try:
            from journal._postgres_values import _DELETE_GARBAGE, _LOCK_GARBAGE

            transaction = collector.transaction()
            await transaction.start()
            page = [d for (d,) in await collector.fetch(_LOCK_GARBAGE, "", COLLECT_PAGE)]
            assert page == [digest(DOC)]
            append = asyncio.ensure_future(store.append("s", [referring(b"r", DOC)]))
            other = asyncio.ensure_future(store.append("t", [NewRecord("t", b"plain")]))
            await waiting_for_a_lock(collector)
            await collector.execute(_DELETE_GARBAGE, page)
            await transaction.commit()
        finally:
            await collector.close()

        with pytest.raises(MissingValueError) as refused:
            await append
        assert refused.value.digests == (digest(DOC),)
        await other
        assert await store.last_position("s") == 0
        assert await store.last_position("t") == 1
        await store.append_many([StreamAppend("s", (referring(b"r", DOC),), values=given(DOC))])
        assert await store.read_value(digest(DOC)) == DOC


async def waiting_for_a_lock(conn: Any) -> None:
    """Return once a session on the database waits for a lock (polling, at most 10 s)."""
    for _ in range(1000):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no session came to wait for a lock")


@pytest.mark.parametrize("size", [1000, 2 * 1024 * 1024], ids=["small", "large"])
async def test_two_stores_storing_one_new_value_at_once_both_land(
    stores: tuple[PostgresStore, PostgresStore], postgres_dsn: str, size: int
) -> None:
    """The second insert of a value waits for the first transaction, finds the value
    committed, and relies on it (locked) instead: both appends land, the value is stored
    once (a small value is inserted by a statement, a large one by COPY in a savepoint)."""
    first, second = stores
    value = bytes(range(256)) * (size // 256)
    checked, release = asyncio.Event(), asyncio.Event()

    async def hold(conn: Any) -> None:
        checked.set()
        await release.wait()

    first.before_commit = hold
    one = asyncio.ensure_future(
        first.append_many([StreamAppend("a", (referring(b"a", value),), values=given(value))])
    )
    await checked.wait()
    other = asyncio.ensure_future(
        second.append_many([StreamAppend("b", (referring(b"b", value),), values=given(value))])
    )
    watcher = await asyncpg.connect(postgres_dsn)
    try:
        await waiting_for_a_lock(watcher)
    finally:
        release.set()
        await watcher.close()
    await one
    await other

    assert [r.refs async for r in second.read_all()] == [(digest(value),)] * 2
    assert await second.read_value(digest(value)) == value
    assert (await second.verify()).values == 1


# -- a large value ----------------------------------------------------------------------------

#: Writes and reads a value of 64 MiB in a fresh process, and prints how much its peak
#: resident memory grew, in values, from holding the value to having written it (ideally
#: 0: it is streamed from the caller's bytes) and to having read it back (ideally 1: the
#: copy returned).
_LARGE_VALUE = textwrap.dedent(
    """
    import asyncio, hashlib, resource, sys
    from journal import NewRecord, PostgresStore, StreamAppend

    SIZE = 64 * 1024 * 1024

    async def main(dsn):
        value = hashlib.sha256(b"seed").digest() * (SIZE // 32)
        key = hashlib.sha256(value).hexdigest()
        store = await PostgresStore.open(dsn, max_record_bytes=1024)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        record = NewRecord("t", key.encode(), refs=(key,))
        await store.append_many([StreamAppend("s", (record,), values={key: value})])
        written = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        back = await store.read_value(key)
        read = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        assert back == value
        del back
        assert (await store.verify()).ok
        await store.close()
        print(written * 1024 / SIZE, read * 1024 / SIZE)

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_a_value_of_64_mib_is_stored_and_read_within_a_few_copies(postgres_dsn: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", _LARGE_VALUE, postgres_dsn],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    written, read = map(float, done.stdout.split())
    assert written <= 0.5, f"writing grew peak memory by {written:.2f} times the value"
    assert read <= 1.5, f"reading grew peak memory by {read:.2f} times the value"
    size = server().sql("SELECT octet_length(data) FROM journal_values", database(postgres_dsn))
    assert size.strip() == str(64 * 1024 * 1024)
