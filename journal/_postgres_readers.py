"""The read connections of `journal.PostgresStore`.

Up to ``size`` connections, each lent to one read at a time and taken back after it.
asyncpg's own pool does more on every hand-back than these reads need (they set no session
state, hold no locks and listen to nothing): measured on this project's machines, a read
through it cost 78-97 us of the client's CPU against 26-31 us lent from a plain list.

A connection comes back to the list only if the read ended normally and left it outside
a transaction; one whose read failed or was cancelled part-way (its protocol state is
then unknown) is closed, and a new one is opened when a read needs it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

from journal._errors import StoreClosedError


class Readers:
    """Up to ``size`` connections made by ``connect``, lent one read at a time."""

    def __init__(self, connect: Callable[[], Awaitable[Any]], size: int) -> None:
        self._connect = connect
        self._size = max(1, size)
        self._idle: list[Any] = []
        self._open = 0  # connections open or being opened, lent or idle
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    async def take(self) -> Any:
        """A connection for one read: an idle one, a new one while fewer than ``size``
        are open, or the next one handed back."""
        while True:
            if self._closed:
                raise StoreClosedError("the PostgreSQL store's read connections")
            if self._idle:
                return self._idle.pop()
            if self._open < self._size:
                self._open += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._open -= 1
                    self._wake_one()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass on the turn this waiter was given
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def give_back(self, conn: Any, *, clean: bool) -> None:
        """Take ``conn`` back after its read: kept if the read ended normally (``clean``)
        and left it outside a transaction, else closed."""
        if clean and not self._closed and not conn.is_closed() and not conn.is_in_transaction():
            self._idle.append(conn)
        else:
            self._open -= 1
            conn.terminate()
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Close the idle connections; those lent out are closed as they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._open -= 1
            try:
                await asyncio.wait_for(conn.close(), timeout=5)
            except Exception:
                conn.terminate()
        while self._waiters:  # each finds the store closed (not a lost connection to retry)
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
