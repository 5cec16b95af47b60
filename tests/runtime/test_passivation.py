"""A passivated actor leaves nothing behind: no host, no actor instance, no turn, whatever
its turns did (steps, timers, events, calls to other actors, failures, compensations).
Its journal is its existence, and it answers from there.

And it leaves nothing *at once*: the host, the actor and their turns are freed by reference
counting as the actor is passivated, not by the cyclic garbage collector some time later.
An idle server allocates nothing, so the collector may never run: anything a reference
cycle kept would stay in memory for good (20,000 passivated actors held 355 MiB that way).
So these tests run with the collector disabled and never call it.
"""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections.abc import Iterator

import pytest

from actorflow import (
    NO_RETRY,
    Actor,
    ActorRef,
    Context,
    HandlerFailed,
    Runtime,
    TurnEndedError,
    handler,
)
from actorflow.replay._turn import Turn
from actorflow.runtime._host import ActorHost
from journal import MemoryStore
from tests.runtime.support import eventually

pytestmark = pytest.mark.anyio

#: Actors the test passivates.
ACTORS = 30


def double(n: int) -> int:
    return 2 * n


def undo(result: int) -> None:
    pass


class Helper(Actor, retry=NO_RETRY):
    @handler
    async def echo(self, n: int) -> int:
        return n


class Worker(Actor, retry=NO_RETRY, events={"go": int}):
    """Each turn does one of the things a turn can do, by ``n`` modulo 6."""

    @handler
    async def work(self, n: int) -> int:
        kind = n % 6
        if kind == 1:
            return await self.ctx.run(double, n)
        if kind == 2:
            await self.ctx.sleep(0.01)
            return n
        if kind == 3:
            return await self.ctx.call(ActorRef("Helper", f"h{n}"), "echo", n)
        if kind == 4:  # a step that registers its undo, then the turn fails: undone
            await self.ctx.run(double, n, compensate=undo)
            await self.ctx.compensate()
            raise ValueError(f"{n} fails after a step")
        if kind == 5:
            a, b = await self.ctx.gather(self.ctx.run(double, n), self.ctx.run(double, n + 1))
            return a + b
        raise ValueError(f"{n} fails")


#: The contexts `Keeper` kept.
KEPT: list[Context] = []


class Keeper(Actor):
    """Keeps its turn's context past the turn, as a background task might."""

    @handler
    async def keep(self) -> str:
        KEPT.append(self.ctx)
        return self.ctx.actor_id


@contextlib.contextmanager
def no_collector() -> Iterator[None]:
    """Run without the cyclic garbage collector (and never call it)."""
    was = gc.isenabled()
    gc.collect()  # start clean: nothing of earlier tests left to find
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def alive(kind: type) -> int:
    """How many objects of ``kind`` are alive, without collecting anything."""
    return sum(1 for thing in gc.get_objects() if isinstance(thing, kind))


async def test_a_passivated_actor_is_freed_at_once_without_the_garbage_collector() -> None:
    with no_collector():
        store = MemoryStore()
        async with Runtime(store, [Worker, Helper], idle_timeout=0.05) as runtime:
            hosts: list[weakref.ref[ActorHost]] = []
            instances: list[weakref.ref[Actor]] = []
            for n in range(ACTORS):
                ref = ActorRef("Worker", f"w{n}")
                if n % 7 == 0:
                    await runtime.deliver(ref, "go", n)  # an event no turn waits for
                invocation = await runtime.send(ref, "work", (n,))
                with contextlib.suppress(HandlerFailed):
                    await runtime.result(invocation, timeout=10)
                host = runtime._hosts.get(ref.id)
                if host is not None:
                    hosts.append(weakref.ref(host))
                    instances.append(weakref.ref(host.instance))
                del host

            async def passivated() -> bool:
                return runtime.in_memory() == 0

            await eventually(passivated, "every actor to be passivated")
            assert len(hosts) > ACTORS // 2  # most were caught in memory
            assert [ref for ref in hosts if ref() is not None] == []
            assert [ref for ref in instances if ref() is not None] == []
            assert alive(ActorHost) == 0
            assert alive(Turn) == 0
            assert alive(Worker) == 0
            assert runtime.hosted() == {}
            assert len(runtime._waiters) == 0
            status = await runtime.invocation(invocation)
            assert status is not None
            assert status.state == "completed"
        await store.close()


async def test_a_context_kept_past_its_turn_says_the_turn_has_ended() -> None:
    KEPT.clear()
    async with Runtime(MemoryStore(), [Keeper]) as runtime:
        invocation = await runtime.send(ActorRef("Keeper", "k"), "keep", ())
        assert await runtime.result(invocation, timeout=10) == "Keeper/k"
    (ctx,) = KEPT
    with pytest.raises(TurnEndedError, match="turn 1 of Keeper/k, which has ended"):
        ctx.now()
    with pytest.raises(TurnEndedError):
        await ctx.run(double, 1)
