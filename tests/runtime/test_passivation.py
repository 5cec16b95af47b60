"""A passivated actor leaves nothing behind in the runtime: no host, no actor instance, no
waiter, whatever it did (answered callers, held events nobody waited for, failed); its
journal is its existence, and it answers from there."""

from __future__ import annotations

import contextlib
import gc
import weakref

import pytest

from actorflow import NO_RETRY, Actor, ActorRef, HandlerFailed, Runtime, handler
from actorflow.runtime._host import ActorHost
from journal import MemoryStore
from tests.runtime.support import eventually

pytestmark = pytest.mark.anyio

#: Actors the test passivates.
ACTORS = 40


class Worker(Actor, retry=NO_RETRY):
    @handler
    async def work(self, n: int) -> int:
        if n % 5 == 0:
            raise ValueError(f"{n} fails")
        return n


def live(kind: type) -> int:
    """How many objects of ``kind`` are alive."""
    gc.collect()
    return sum(1 for thing in gc.get_objects() if isinstance(thing, kind))


async def test_a_passivated_actor_leaves_no_object_in_the_runtime() -> None:
    store = MemoryStore()
    async with Runtime(store, [Worker], idle_timeout=0.05) as runtime:
        hosts: list[weakref.ref[ActorHost]] = []
        instances: list[weakref.ref[Actor]] = []
        for n in range(ACTORS):
            ref = ActorRef("Worker", f"w{n}")
            invocation = await runtime.send(ref, "work", (n,))
            with contextlib.suppress(HandlerFailed):
                await runtime.result(invocation, timeout=5)
            if n % 3 == 0:
                await runtime.deliver(ref, "unawaited", n)
            host = runtime._hosts.get(ref.id)
            if host is not None:
                hosts.append(weakref.ref(host))
                instances.append(weakref.ref(host.instance))
            del host

        async def passivated() -> bool:
            return runtime.in_memory() == 0

        await eventually(passivated, "every actor to be passivated")
        assert len(hosts) > ACTORS // 2  # most were caught in memory
        gc.collect()
        assert [ref for ref in hosts if ref() is not None] == []
        assert [ref for ref in instances if ref() is not None] == []
        assert live(ActorHost) == 0
        assert live(Worker) == 0
        assert runtime.hosted() == {}
        assert runtime._waiters == {}
        assert (await runtime.invocation(invocation)).state == "completed"  # type: ignore[union-attr]
    await store.close()
