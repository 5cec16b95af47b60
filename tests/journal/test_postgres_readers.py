"""The PostgreSQL store's read connections (`journal._postgres_readers.Readers`): at most
``size`` open, each lent to one read at a time; a connection whose read failed or was
cancelled part-way is closed, never lent again; reads waiting for a connection get the
next one handed back. On a real PostgreSQL server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from journal import StoreClosedError
from journal._postgres_readers import Readers

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def readers(postgres_dsn: str) -> AsyncIterator[Readers]:
    made = Readers(lambda: asyncpg.connect(postgres_dsn), 2)
    try:
        yield made
    finally:
        await made.close()


async def read(readers: Readers, sql: str, *args: Any, lent: asyncio.Event | None = None) -> Any:
    """One read as the store makes it (`PostgresStore._read`)."""
    conn = await readers.take()
    if lent is not None:
        lent.set()
    clean = False
    try:
        value = await conn.fetchval(sql, *args)
        clean = True
        return value
    finally:
        readers.give_back(conn, clean=clean)


async def test_no_more_than_size_connections_serve_many_concurrent_reads(
    readers: Readers,
) -> None:
    pids = await asyncio.gather(*(read(readers, "SELECT pg_backend_pid()") for _ in range(50)))
    assert len(set(pids)) <= 2
    assert readers._open <= 2


async def test_a_read_cancelled_part_way_closes_its_connection(readers: Readers) -> None:
    first_pid = await read(readers, "SELECT pg_backend_pid()")
    lent = asyncio.Event()
    task = asyncio.create_task(read(readers, "SELECT pg_sleep(30)", lent=lent))
    await lent.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pids = {await read(readers, "SELECT pg_backend_pid()") for _ in range(3)}
    assert first_pid not in pids  # the cancelled read's connection was not lent again
    assert await read(readers, "SELECT 41 + 1") == 42


async def test_a_failed_read_closes_its_connection_and_the_next_read_opens_one(
    readers: Readers,
) -> None:
    pid = await read(readers, "SELECT pg_backend_pid()")
    with pytest.raises(asyncpg.PostgresError):
        await read(readers, "SELECT 1 / 0")
    assert readers._idle == []  # (the failed read's connection was the only one open)
    assert await read(readers, "SELECT pg_backend_pid()") != pid


async def test_a_read_waiting_for_a_connection_gets_the_next_one_handed_back(
    readers: Readers,
) -> None:
    held = [await readers.take(), await readers.take()]
    waiting = asyncio.create_task(read(readers, "SELECT 7"))
    await asyncio.sleep(0)  # (one turn of the loop: the task runs until it waits)
    assert len(readers._waiters) == 1
    readers.give_back(held.pop(), clean=True)
    assert await asyncio.wait_for(waiting, 10) == 7
    readers.give_back(held.pop(), clean=True)


async def test_a_waiter_cancelled_before_its_turn_does_not_keep_others_waiting(
    readers: Readers,
) -> None:
    held = [await readers.take(), await readers.take()]
    first = asyncio.create_task(read(readers, "SELECT 1"))
    second = asyncio.create_task(read(readers, "SELECT 2"))
    await asyncio.sleep(0)  # (one turn of the loop: both tasks run until they wait)
    assert len(readers._waiters) == 2
    readers.give_back(held.pop(), clean=True)  # `first`'s turn...
    first.cancel()  # ...which it gives up before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 10) == 2
    readers.give_back(held.pop(), clean=True)


async def test_reads_waiting_when_the_store_closes_find_it_closed(postgres_dsn: str) -> None:
    """Not a lost connection to retry for `reconnect_timeout`, and no new connection."""
    readers = Readers(lambda: asyncpg.connect(postgres_dsn), 1)
    held = await readers.take()
    waiting = asyncio.create_task(read(readers, "SELECT 1"))
    await asyncio.sleep(0)  # (one turn of the loop: the task runs until it waits)
    assert len(readers._waiters) == 1
    await readers.close()
    with pytest.raises(StoreClosedError):
        await asyncio.wait_for(waiting, 10)
    with pytest.raises(StoreClosedError):
        await readers.take()
    readers.give_back(held, clean=True)  # closed, not kept
    assert readers._open == 0
    assert held.is_closed()
