"""Listings are cheap per item and exact: an actor at rest costs one checkpoint read to
list, an actor in memory none; a state only actors in memory can be in is answered from
memory; an actor's invocations page back through its outcomes with each invocation once,
at its latest outcome, also for outcomes journaled before the index existed."""

from __future__ import annotations

import contextlib
import pathlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from actorflow import NO_RETRY, Actor, ActorRef, HandlerFailed, Runtime, handler
from actorflow._events import invocation_stream
from journal import Record, Snapshot, SqliteStore, Store, StreamInfo
from tests.runtime.support import eventually

pytestmark = pytest.mark.anyio

broken: set[str] = set()


class Clerk(Actor, retry=NO_RETRY):
    @handler
    async def file(self, what: str) -> str:
        if what in broken:
            raise ValueError(f"cannot file {what}")
        return f"filed {what}"

    @handler
    async def hold(self) -> str:
        return str(await self.ctx.wait_for("go"))


class CountingStore:
    """Delegates to ``inner``; counts the calls that read the journal, by name."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        self.calls["load_snapshot"] += 1
        return await self.inner.load_snapshot(stream)

    async def stream_info(self, stream: str) -> StreamInfo:
        self.calls["stream_info"] += 1
        return await self.inner.stream_info(stream)

    async def list_stream_infos(self, prefix: str = "", **options: Any) -> list[StreamInfo]:
        self.calls["list_stream_infos"] += 1
        return await self.inner.list_stream_infos(prefix, **options)

    async def read_batches(
        self, stream: str, from_position: int = 1, *, limit: int | None = None
    ) -> AsyncIterator[list[Record]]:
        self.calls["read_batches"] += 1
        async for batch in self.inner.read_batches(stream, from_position, limit=limit):
            yield batch


async def passivated(runtime: Runtime, keep: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    async def only_kept() -> bool:
        return set(runtime.hosted()) <= keep

    await eventually(only_kept, "the actors to be passivated")


@pytest.fixture(autouse=True)
def _reset() -> None:
    broken.clear()


async def test_listing_actors_at_rest_reads_one_checkpoint_each(db: pathlib.Path) -> None:
    store = CountingStore(await SqliteStore.open(db))
    try:
        async with Runtime(store, [Clerk], idle_timeout=0.05) as runtime:  # type: ignore[arg-type]
            for n in range(30):
                await runtime.ref(Clerk, f"c{n:02d}").call(Clerk.file, "a")
            holding = runtime.ref(Clerk, "holding")
            await holding.send(Clerk.hold)
            await passivated(runtime, {"Clerk/holding"})

            store.calls.clear()
            listed = await runtime.list_actors()
            assert len(listed) == 31
            assert store.calls["load_snapshot"] == 30  # none for the one in memory
            assert store.calls["read_batches"] == store.calls["stream_info"] == 0
            assert store.calls["list_stream_infos"] <= 4

            store.calls.clear()
            waiting = await runtime.list_actors(state="waiting-event")
            assert [status.actor for status in waiting] == ["Clerk/holding"]
            assert sum(store.calls.values()) == 0
            for status in listed:  # a listing says what each status says
                assert status == await runtime.status(ActorRef("Clerk", status.actor[6:]))
    finally:
        await store.close()


async def test_an_actor_with_work_after_its_checkpoint_lists_as_its_status_says(
    db: pathlib.Path,
) -> None:
    async with Runtime(await SqliteStore.open(db), [Clerk], idle_timeout=0.05) as runtime:
        try:
            await runtime.ref(Clerk, "e").call(Clerk.file, "a")
            await runtime.deliver(ActorRef("Clerk", "e"), "go", "later")  # nobody waits
            await passivated(runtime)
            [listed] = await runtime.list_actors()
            assert listed == await runtime.status(ActorRef("Clerk", "e"))
            assert (listed.state, listed.turns) == ("idle", 1)
        finally:
            await runtime.store.close()


async def test_a_retried_invocation_is_listed_once_at_its_latest_outcome(
    db: pathlib.Path,
) -> None:
    broken.add("b")
    async with Runtime(await SqliteStore.open(db), [Clerk], idle_timeout=0.05) as runtime:
        try:
            clerk = runtime.ref(Clerk, "r")
            ids = []
            for what in ("a", "b", "c", "d"):
                invocation = await clerk.send(Clerk.file, what)
                with contextlib.suppress(HandlerFailed):
                    await runtime.result(invocation, timeout=5)
                ids.append(invocation)
            broken.clear()
            await runtime.retry(ids[1])
            assert await runtime.result(ids[1], timeout=5) == "filed b"
            await passivated(runtime)

            wanted = [(ids[1], "completed"), (ids[3], "completed"), (ids[2], "completed")]
            wanted.append((ids[0], "completed"))
            assert await listed_one_at_a_time(runtime) == wanted

            for invocation in ids:  # as an actorflow from before the index wrote them
                await runtime.store.delete_stream(invocation_stream(invocation))
            assert await listed_one_at_a_time(runtime) == wanted
        finally:
            await runtime.store.close()


async def listed_one_at_a_time(runtime: Runtime) -> list[tuple[str, str]]:
    listed, cursor = [], None
    for _ in range(100):  # more pages than there are invocations
        page = await runtime.invocations_page(ActorRef("Clerk", "r"), cursor=cursor, limit=1)
        listed += [(status.invocation, status.state) for status in page.items]
        if page.next is None:
            return listed
        cursor = page.next
    raise AssertionError("the invocations had a next page after 100 pages")
