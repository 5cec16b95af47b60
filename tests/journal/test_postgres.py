"""What only the PostgreSQL store does: shared by several writers, its schema, damage found
by checksums, a restarted server, and commits whose outcome the connection did not say.

All of it on a real PostgreSQL server (tests/journal/postgres.py), a fresh database each.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from journal import (
    ConflictError,
    CorruptionError,
    FencingError,
    NewRecord,
    PostgresStore,
    Record,
    SchemaVersionError,
    StorageError,
    StreamAppend,
)
from tests.journal.postgres import find_binaries, server, stop_orphans

pytestmark = pytest.mark.anyio


def one(data: bytes) -> list[NewRecord]:
    return [NewRecord("t", data)]


async def read_list(store: PostgresStore, stream: str) -> list[Record]:
    return [r async for r in store.read(stream)]


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


async def test_concurrent_appends_share_commits(postgres_dsn: str) -> None:
    store = await PostgresStore.open(postgres_dsn)
    try:
        results = await asyncio.gather(
            *(store.append(f"s{n % 7}", one(b"%d" % n)) for n in range(200))
        )
        assert store.requests == 200
        assert store.commits < 200 / 4  # callers share transactions
        globals_ = sorted(r.last_global_position for r in results)
        assert globals_ == list(range(1, 201))
        assert [r.global_position async for r in store.read_all()] == list(range(1, 201))
    finally:
        await store.close()


async def test_a_crowd_of_callers_is_woken_a_slice_at_a_time_while_the_next_commit_runs(
    postgres_dsn: str,
) -> None:
    """Callers of one commit are woken `wake_slice` at a time, so the next commit starts
    with the first slice's appends instead of waiting until the whole crowd has run
    (which transaction wrote each record is PostgreSQL's own ``xmin``)."""
    store = await PostgresStore.open(postgres_dsn)
    slice_ = PostgresStore.wake_slice
    crowd, rounds = 4 * slice_, 3
    try:

        async def agent(stream: str) -> list[int]:
            landed = []
            for n in range(rounds):
                appended = await store.append(stream, one(b"%d" % n))
                landed.append(appended.first_position)
            return landed

        results = await asyncio.gather(*(agent(f"agent/{n:03}") for n in range(crowd)))
        assert all(positions == [1, 2, 3] for positions in results)
    finally:
        await store.close()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        rows = await conn.fetch(
            "SELECT count(*) FROM journal_records GROUP BY xmin::text ORDER BY min(global_position)"
        )
    finally:
        await conn.close()
    sizes = [row[0] for row in rows]
    assert sum(sizes) == crowd * rounds
    assert sizes[:2] == [crowd, slice_]  # everyone's first append, then the first slice


async def test_two_writers_racing_for_one_position_never_fork_the_stream(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = stores
    for position in range(20):
        outcomes = await asyncio.gather(
            first.append("s", one(b"first"), expected_position=position),
            second.append("s", one(b"second"), expected_position=position),
            return_exceptions=True,
        )
        won = [o for o in outcomes if not isinstance(o, BaseException)]
        lost = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(won) == 1, outcomes
        assert [type(o) for o in lost] == [ConflictError]
    records = await read_list(first, "s")
    assert [r.position for r in records] == list(range(1, 21))
    assert (await first.verify()).ok


async def test_a_stale_epoch_from_another_writer_lands_nothing(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = stores
    old = await first.claim("s")
    await first.append("s", one(b"owned"), epoch=old)
    new = await second.claim("s")  # another process takes the stream over
    assert new == old + 1
    with pytest.raises(FencingError):
        await first.append("s", one(b"stale"), epoch=old)
    with pytest.raises(FencingError):
        await first.append_many(
            [StreamAppend("other", tuple(one(b"x"))), StreamAppend("s", (), None, old)]
        )
    await second.append("s", one(b"new owner"), epoch=new)
    assert [r.data for r in await read_list(first, "s")] == [b"owned", b"new owner"]
    assert await first.last_position("other") == 0  # the whole multi-stream append failed


async def test_a_reader_never_sees_a_global_position_filled_in_later(
    stores: tuple[PostgresStore, PostgresStore], postgres_dsn: str
) -> None:
    """Global positions follow commit order across processes: while one writer has taken
    its positions but not committed, another writer's commit waits, so a reader following
    `read_all` never passes a position that is filled in after it looked."""
    first, second = stores
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold_first_commit(conn: Any) -> None:
        if not holding.is_set():
            holding.set()
            await release.wait()

    first.before_commit = hold_first_commit
    a = asyncio.create_task(first.append("first", one(b"a")))
    await holding.wait()  # `first` holds its positions, uncommitted
    b = asyncio.create_task(second.append("second", one(b"b")))
    watcher = await asyncpg.connect(postgres_dsn)
    try:
        async with asyncio.timeout(30):
            # until `second` has committed (wrongly) or waits for a lock (rightly)
            while not b.done():
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                if waiting:
                    break
                await asyncio.sleep(0.01)
        seen = [r.global_position async for r in first.read_all()]
    finally:
        await watcher.close()
        release.set()
    await a, await b
    every = [r.global_position async for r in first.read_all()]
    assert len(every) == 2
    assert [g for g in every if g <= max(seen, default=0)] == seen


async def test_the_schema_is_created_once_and_a_newer_one_is_refused(postgres_dsn: str) -> None:
    first = await PostgresStore.open(postgres_dsn)
    identity = first.identity
    await first.append("s", one(b"kept"))
    await first.close()
    again = await PostgresStore.open(postgres_dsn)
    assert again.identity == identity
    await again.close()

    database = postgres_dsn.split("/")[3].split("?")[0]
    server().sql("UPDATE journal_meta SET schema_version = 99", database)
    with pytest.raises(SchemaVersionError, match="newer journal schema \\(version 99"):
        await PostgresStore.open(postgres_dsn)
    assert server().sql("SELECT count(*) FROM journal_records", database).strip() == "1"


async def test_damage_in_the_database_is_found_by_the_checksums(postgres_dsn: str) -> None:
    store = await PostgresStore.open(postgres_dsn)
    try:
        await store.append("s", [NewRecord("t", b"r%d" % n) for n in range(1, 6)])
        await store.save_snapshot("s", 2, b"state")
        database = postgres_dsn.split("/")[3].split("?")[0]
        server().sql("UPDATE journal_records SET data = 'XX'::bytea WHERE position = 3", database)
        server().sql("UPDATE journal_snapshots SET position = 1", database)

        seen: list[int] = []

        async def read_on() -> None:
            async for record in store.read("s"):
                seen.append(record.position)

        with pytest.raises(CorruptionError) as caught:
            await read_on()
        assert (seen, caught.value.position) == ([1, 2], 3)
        with pytest.raises(CorruptionError):
            [r async for r in store.read_all()]
        with pytest.raises(CorruptionError):
            await store.load_snapshot("s")
        salvaged = [(r.position, r.damage) async for r in store.salvage("s")]
        assert salvaged == [(1, None), (2, None), (3, "checksum mismatch"), (4, None), (5, None)]
        report = await store.verify()
        assert sorted((p.position, p.kind) for p in report.problems) == [
            (1, "snapshot"),
            (3, "checksum"),
        ]
    finally:
        await store.close()


async def test_the_store_reconnects_after_the_server_restarts(postgres_dsn: str) -> None:
    store = await PostgresStore.open(postgres_dsn)
    try:
        await store.append("s", one(b"before"))
        server().restart("immediate")  # every connection is cut, the writer's and the pool's
        await store.append("s", one(b"after"))
        assert [r.data for r in await read_list(store, "s")] == [b"before", b"after"]
    finally:
        await store.close()


async def test_a_statement_stuck_on_the_server_times_out_and_fails_its_writes(
    postgres_dsn: str,
) -> None:
    store = await PostgresStore.open(postgres_dsn, statement_timeout=0.2)
    blocker = await asyncpg.connect(postgres_dsn)
    try:
        await store.append("s", one(b"first"))
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("SELECT FROM journal_meta FOR UPDATE")  # every writer waits
        outcomes = await asyncio.gather(
            store.append("s", one(b"a")), store.append("t", one(b"b")), return_exceptions=True
        )
        assert [type(o) for o in outcomes] == [StorageError, StorageError]
        assert "statement timeout" in str(outcomes[0])
        await holding.rollback()
        appended = await store.append("s", one(b"second"))
        assert appended.first_position == 2
    finally:
        await blocker.close()
        await store.close()


async def wait_until(conn: Any, query: str, *args: object) -> None:
    """Poll ``query`` (bounded) until it returns true."""
    for _ in range(2000):
        if await conn.fetchval(query, *args):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never true: {query}")


async def cut_once(
    store: PostgresStore, cut: Callable[[asyncpg.Connection, int], Awaitable[None]]
) -> None:
    """Make the store's next COMMIT lose its connection, as ``cut`` arranges."""
    admin = await asyncpg.connect(store._dsn)

    async def before_commit(conn: Any) -> None:
        store.before_commit = None
        await cut(admin, conn.get_server_pid())

    store.before_commit = before_commit


async def test_a_commit_cut_before_it_reached_the_server_is_retried(postgres_dsn: str) -> None:
    store = await PostgresStore.open(postgres_dsn)
    try:
        await store.append("s", one(b"first"))

        async def kill_first(admin: Any, pid: int) -> None:
            await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            await wait_until(admin, "SELECT NOT EXISTS (SELECT FROM pg_stat_activity "
                                    "WHERE pid = $1)", pid)  # fmt: skip
            await admin.close()

        await cut_once(store, kill_first)
        appended = await store.append("s", one(b"second"))
        assert store.unknown_outcomes == 1
        assert appended.first_position == 2
        assert [r.data for r in await read_list(store, "s")] == [b"first", b"second"]
    finally:
        await store.close()


async def test_a_commit_whose_answer_was_lost_is_read_back_not_repeated(
    postgres_dsn: str,
) -> None:
    """The server commits, then the connection is cut before it answers: waiting for a
    synchronous standby that never comes holds the answer back after the local commit, and
    the backend is terminated during that wait. The store must find the commit, not append
    the records a second time."""
    running = server()
    store = await PostgresStore.open(postgres_dsn)  # its schema is committed before the wait
    try:
        await store.append("s", one(b"before"))
        running.sql("ALTER SYSTEM SET synchronous_standby_names = 'nobody_is_there'")
        running.sql("SELECT pg_reload_conf()")
        assert store._writer is not None
        await wait_until(store._writer, "SELECT current_setting('synchronous_standby_names') <> ''")

        async def kill_while_waiting_for_the_standby(admin: Any, pid: int) -> None:
            async def kill() -> None:
                await wait_until(
                    admin,
                    "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1 "
                    "AND wait_event = 'SyncRep')",
                    pid,
                )
                await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
                # Commits need no standby from here on: a store that wrongly tried the
                # append again would get it committed twice, not hang.
                await admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
                await admin.fetchval("SELECT pg_reload_conf()")
                await admin.close()

            killing.append(asyncio.get_running_loop().create_task(kill()))

        killing: list[asyncio.Task[None]] = []
        await cut_once(store, kill_while_waiting_for_the_standby)
        appended = await store.append("s", one(b"once"))
        await killing[0]
        assert store.unknown_outcomes == 1
        assert appended.first_position == 2
        assert [r.data for r in await read_list(store, "s")] == [b"before", b"once"]
    finally:
        running.sql("ALTER SYSTEM RESET synchronous_standby_names")
        running.sql("SELECT pg_reload_conf()")
        await store.close()


def test_a_server_left_by_a_killed_run_is_stopped_by_the_next_one(tmp_path: Path) -> None:
    """A test run killed before its clean-up (a timeout's SIGKILL) leaves its server
    running; the next run's start-up stops it and removes its directory."""
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; sys.path.insert(0, '.'); from benchmarks._postgres import started;"
         "s = started(); print(s.root, flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        root = Path(child.stdout.readline().strip())
        pid_file = root / "data" / "postmaster.pid"
        assert pid_file.exists()
        postmaster = int(pid_file.read_text().split()[0])
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    binaries = find_binaries()
    assert binaries is not None
    assert stop_orphans(binaries) >= 1
    assert not root.exists()
    for _ in range(200):  # the postmaster exits once pg_ctl's immediate stop is done
        if not alive(postmaster):
            break
        time.sleep(0.05)
    assert not alive(postmaster)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
