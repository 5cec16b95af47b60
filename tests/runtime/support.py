"""Shared helpers: open a runtime on a journal file, poll for a condition, read streams."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import anyio
import anyio.lowlevel

from actorflow import Actor, ActorHandle, ActorStatus, Context, JournalEntry, Runtime
from journal import SqliteStore, Store

#: How long a poll waits for the runtime to reach a state before the test fails.
DEADLINE = 5.0
#: The event a handler waits for at the end of a turn a test wants replayed (see `hold`).
RELEASE = "release"


@contextlib.asynccontextmanager
async def running(
    path: pathlib.Path,
    actors: Iterable[type[Actor]],
    wrap: Callable[[Store], Any] | None = None,
    **options: Any,
) -> AsyncIterator[Runtime]:
    """A runtime over the SQLite journal at ``path``; closing it closes the store too.

    Leaving the block and opening another one on the same path is a process restart.
    ``wrap`` puts something between the runtime and the store (see `tests.runtime.faults`).
    """
    store = await SqliteStore.open(path)
    try:
        async with Runtime(wrap(store) if wrap else store, actors, **options) as runtime:
            yield runtime
    finally:
        with anyio.CancelScope(shield=True):  # a test that ran out of time still closes
            await store.close()


@contextlib.asynccontextmanager
async def crashing(
    path: pathlib.Path, actors: Iterable[type[Actor]], **options: Any
) -> AsyncIterator[Runtime]:
    """Like `running`, but leaving the block stops the runtime with no grace: a step whose
    function is still running is abandoned where it stands, as at a crash (its outcome is
    never journaled, so the next runtime on the journal finds it in flight)."""
    async with running(path, actors, grace=0, **options) as runtime:
        yield runtime


async def eventually(
    predicate: Callable[[], Awaitable[bool]], what: str, *, timeout: float = DEADLINE
) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        # Status and journals are read, not signalled: polling is the only way to watch.
        while not await predicate():  # noqa: ASYNC110
            await anyio.sleep(0.002)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def reaches(handle: ActorHandle[Any], state: str) -> None:
    """Wait until the actor's status state is ``state``."""

    async def check() -> bool:
        return (await handle.status()).state == state

    await eventually(check, f"{handle.id} to be {state!r}")


async def settles(handle: ActorHandle[Any]) -> ActorStatus:
    """Wait until the actor is done with its work (idle or stuck); return its status."""

    async def check() -> bool:
        return (await handle.status()).state in ("idle", "stuck")

    await eventually(check, f"{handle.id} to be idle or stuck")
    return await handle.status()


async def replays_cleanly(handle: ActorHandle[Any], handler: Any, *args: Any) -> None:
    """Send a message to an actor not in memory (activation replays its journaled turns)
    and check that it ends idle, not stuck."""
    invocation = await handle.send(handler, *args)
    status = await settles(handle)
    assert status.error is None, status.error
    assert status.state == "idle"
    assert invocation is not None


async def hold(ctx: Context) -> None:
    """Keep the turn unfinished until the test delivers `RELEASE`.

    A finished turn is never replayed (its end checkpoints the actor), so a test that
    wants to see a turn replayed holds it open here, restarts, and releases it.
    """
    await ctx.wait_for(RELEASE)


async def run_to_hold(handle: ActorHandle[Any], handler: Any, *args: Any) -> str:
    """Send a message and wait until its turn waits at `hold` (or any other event)."""
    invocation = await handle.send(handler, *args)
    await reaches(handle, "waiting-event")
    return invocation


async def replay_held(
    path: pathlib.Path,
    actors: Iterable[type[Actor]],
    handle: ActorHandle[Any],
    invocation: str,
    **options: Any,
) -> Any:
    """Restart on the journal at ``path``: activation replays the held turn of
    ``handle``'s actor; release it and return its result (or raise its error)."""
    async with running(path, actors, **options) as runtime:
        await runtime.deliver(handle.ref, RELEASE)
        return await runtime.result(invocation)


async def settle(rounds: int = 50) -> None:
    """Let every runnable task take a few turns (to check that nothing happens)."""
    for _ in range(rounds):
        await anyio.lowlevel.checkpoint()


async def stream_types(store: Store, stream: str) -> list[str]:
    """The record types of one stream, in order."""
    return [record.type async for record in store.read(stream)]


async def entries(runtime: Runtime, handle: ActorHandle[Any], type_: str) -> list[JournalEntry]:
    """The actor's readable journal entries of one record type."""
    return [entry for entry in await runtime.journal(handle.ref) if entry.type == type_]


async def journaled(runtime: Runtime, handle: ActorHandle[Any], type_: str, **data: Any) -> bool:
    """Whether the actor's journal holds an entry of ``type_`` whose data match ``data``."""
    for entry in await entries(runtime, handle, type_):
        if all(entry.data.get(key) == value for key, value in data.items()):
            return True
    return False
