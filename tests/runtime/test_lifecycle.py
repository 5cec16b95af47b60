"""The runtime's life: recovery at start, passivation of idle actors, and stopping."""

from __future__ import annotations

import pathlib
from collections.abc import Awaitable, Callable

import anyio
import msgspec
import pytest

from actorflow import Actor, ManualClock, Runtime, handler
from journal import MemoryStore
from tests.runtime.support import eventually, reaches, running

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0


class Tally(msgspec.Struct):
    total: int = 0
    entries: list[int] = []


class Counter(Actor, state=Tally):
    state: Tally

    @handler
    async def add(self, n: int) -> int:
        self.state.total += n
        self.state.entries.append(n)
        return self.state.total

    @handler
    async def nap(self) -> None:
        await self.ctx.sleep(60)


def gone(rt: Runtime, actor_id: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return actor_id not in rt.hosted()

    return check


async def test_an_idle_actor_is_passivated(db: pathlib.Path) -> None:
    async with running(db, [Counter], clock=ManualClock(T0), idle_timeout=0.05) as rt:
        await rt.ref(Counter, "k").call(Counter.add, 5)
        assert "Counter/k" in rt.hosted()
        await eventually(gone(rt, "Counter/k"), "the idle actor to be passivated")


async def test_a_passivated_actor_is_reactivated_by_a_message_with_its_state(
    db: pathlib.Path,
) -> None:
    async with running(db, [Counter], clock=ManualClock(T0), idle_timeout=0.05) as rt:
        counter = rt.ref(Counter, "k")
        assert await counter.call(Counter.add, 5) == 5
        await eventually(gone(rt, "Counter/k"), "the idle actor to be passivated")
        assert await counter.call(Counter.add, 3) == 8
        assert "Counter/k" in rt.hosted()


async def test_an_actor_waiting_on_a_timer_is_not_passivated(db: pathlib.Path) -> None:
    clock = ManualClock(T0)
    async with running(db, [Counter], clock=clock, idle_timeout=0.01) as rt:
        counter = rt.ref(Counter, "k")
        invocation = await counter.send(Counter.nap)
        await reaches(counter, "waiting-timer")
        await anyio.sleep(0.1)  # ten idle timeouts: a waiting actor is not idle
        assert rt.hosted() == {"Counter/k": "waiting-timer"}
        clock.advance(60)
        await rt.result(invocation)


async def test_recovery_at_start_resumes_unfinished_turns_without_a_new_message(
    db: pathlib.Path,
) -> None:
    async with running(db, [Counter], clock=ManualClock(T0)) as rt:
        counter = rt.ref(Counter, "k")
        await counter.send(Counter.nap)
        await reaches(counter, "waiting-timer")
        await rt.ref(Counter, "done").call(Counter.add, 1)

    async with running(db, [Counter], clock=ManualClock(T0)) as rt:
        await reaches(rt.ref(Counter, "k"), "waiting-timer")
        assert "Counter/done" not in rt.hosted()  # nothing left to do: not activated


async def test_a_runtime_cancelled_from_outside_exits_cleanly_and_recovers_later() -> None:
    async with MemoryStore() as store:
        with anyio.CancelScope() as scope:
            async with Runtime(store, [Counter], clock=ManualClock(T0)) as rt:
                counter = rt.ref(Counter, "k")
                await counter.send(Counter.nap)
                await reaches(counter, "waiting-timer")
                scope.cancel()
        assert scope.cancelled_caught
        async with Runtime(store, [Counter], clock=ManualClock(T0)) as rt:
            await reaches(rt.ref(Counter, "k"), "waiting-timer")
