"""`actorflow journal inspect TYPE/KEY --follow`: an actor's new journal entries, printed as
a running server appends them, read from the journal (no server API).

It reads the actor's streams after the last positions printed, every ``interval`` seconds
(each read bounded by the store's page size, so a burst is printed page by page). On
PostgreSQL it also listens to the store's notification channel: the server announces
every append to an actor's inbox and outcomes streams, so a message, an event or a turn's
end is printed at once; a step in the middle of a turn (on the actor stream, which is not
announced) within ``interval``. On SQLite it polls a read-only connection, which takes no
lock and never blocks the server.

SIGINT (Ctrl-C) and SIGTERM stop it cleanly: the store is closed and it exits 0.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator, Callable

import anyio
from anyio import CancelScope

from actorflow.cli import _offline_inspect as inspecting
from actorflow.cli._offline_inspect import Entry
from journal import PostgresStore, Store

#: Seconds between two reads of the journal by default.
DEFAULT_INTERVAL = 0.5


class _Wakeup:
    """Set when the journal announces an append to the actor's streams; replaced once
    waited for."""

    def __init__(self) -> None:
        self.event = anyio.Event()

    def reset(self) -> None:
        if self.event.is_set():
            self.event = anyio.Event()


async def follow(
    store: Store,
    actor_id: str,
    after: dict[str, int],
    interval: float,
    show: Callable[[list[Entry]], None],
) -> None:
    """Print (through ``show``) the actor's entries after ``after``, as they are appended,
    until SIGINT or SIGTERM."""
    wakeup = _Wakeup()
    async with anyio.create_task_group() as group:
        group.start_soon(_stop_on_signal, group.cancel_scope)
        async with _listening(store, actor_id, wakeup):
            while True:  # read first: appends made before the listener was set up
                found = await inspecting.entries_after(store, actor_id, after)
                found.sort(key=lambda pair: pair[1].global_position)
                show([entry for _, entry in found])
                with anyio.move_on_after(interval):
                    await wakeup.event.wait()
                wakeup.reset()


async def _stop_on_signal(scope: CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


@contextlib.asynccontextmanager
async def _listening(store: Store, actor_id: str, wakeup: _Wakeup) -> AsyncIterator[None]:
    """On PostgreSQL, set ``wakeup`` whenever the journal announces an append to the
    actor's inbox or outcomes (or may have missed one); on SQLite, nothing."""
    while not isinstance(store, PostgresStore) and hasattr(store, "inner"):
        store = store.inner  # under the wrappers that resolve values or open seals
    if not isinstance(store, PostgresStore):
        yield
        return
    watched = {f"inbox/{actor_id}", f"outcomes/{actor_id}"}
    async with store.listen() as notices, anyio.create_task_group() as group:

        async def hear() -> None:
            async for notice in notices:
                if notice.kind == "resync" or notice.name in watched:
                    wakeup.event.set()

        group.start_soon(hear)
        yield
        group.cancel_scope.cancel()
