"""Two workers sharing a PostgreSQL journal: a subscriber on the worker that does not host
the streaming actor gets its chunks as they are appended, woken by the journal's notices."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import pytest

from actorflow import Actor, ClusterOptions, Runtime, StreamEvent, handler
from actorflow.cluster import NOTIFY_PREFIXES
from actorflow.runtime._streams import follow
from journal import PostgresStore
from tests.runtime.support import eventually

pytestmark = pytest.mark.anyio

#: Opened by the test: before the first chunk, and before the second.
gates: list[anyio.Event] = []


async def gated(words: list[str]) -> AsyncIterator[str]:
    for i, word in enumerate(words):
        if i < len(gates):
            await gates[i].wait()
        yield word


class Talker(Actor):
    @handler
    async def talk(self, words: list[str]) -> str:
        text: str = await self.ctx.stream(gated, words)
        return text


@contextlib.asynccontextmanager
async def worker(dsn: str, name: str) -> AsyncIterator[Runtime]:
    store = await PostgresStore.open(dsn, notify_prefixes=NOTIFY_PREFIXES)
    try:
        async with Runtime(store, [Talker], cluster=ClusterOptions(worker_id=name)) as runtime:
            yield runtime
    finally:
        await store.close()


async def test_a_subscriber_on_another_worker_is_woken_by_each_flush(postgres_dsn: str) -> None:
    gates[:] = [anyio.Event(), anyio.Event()]
    async with worker(postgres_dsn, "w1") as one, worker(postgres_dsn, "w2") as two:
        invocation = await one.ref(Talker, "t").send(Talker.talk, ["a", "b", "c"])

        async def hosted() -> bool:
            return "Talker/t" in one.hosted() or "Talker/t" in two.hosted()

        await eventually(hosted, "the actor to be hosted")
        other = two if "Talker/t" in one.hosted() else one
        seen: list[StreamEvent] = []
        # No keep-alive re-read: only a notice from the journal wakes this subscriber.
        async for batch in follow(other, invocation, keepalive=3600):
            seen.extend(batch)
            if not gates[0].is_set():
                assert seen == []
                gates[0].set()
            elif seen and not gates[1].is_set():
                assert [e.data for e in seen] == ["a"]  # the step still waits at gate 1
                gates[1].set()
    assert [(e.kind, e.id) for e in seen] == [
        ("chunk", "1:1"),
        ("chunk", "1:2"),
        ("chunk", "1:3"),
        ("result", "1:4"),
        ("end", "end"),
    ]
