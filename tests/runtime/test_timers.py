"""Durable timers: pending until due, only the remaining time after a restart, and a timer
that expired while the process was down fires at once on recovery."""

from __future__ import annotations

import pathlib

import pytest

from actorflow import Actor, ManualClock, handler
from tests.runtime.support import entries, reaches, running, settle

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
HOUR = 3600.0

woke: list[float] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    woke.clear()


class Sleeper(Actor):
    @handler
    async def nap(self, seconds: float) -> float:
        await self.ctx.sleep(seconds)
        woke.append(self.ctx.now())
        return self.ctx.now()

    @handler
    async def until(self, deadline: float) -> float:
        await self.ctx.sleep_until(deadline)
        return self.ctx.now()

    @handler
    async def negative(self) -> str:
        try:
            await self.ctx.sleep(-1)
        except ValueError as exc:
            return str(exc)
        return "slept"


async def test_a_timer_is_pending_until_the_clock_reaches_it(db: pathlib.Path) -> None:
    clock = ManualClock(T0)
    async with running(db, [Sleeper], clock=clock) as rt:
        actor = rt.ref(Sleeper, "k")
        invocation = await actor.send(Sleeper.nap, HOUR)
        await reaches(actor, "waiting-timer")
        [timer] = await entries(rt, actor, "timer")
        assert timer.data["fire_at"] == T0 + HOUR
        clock.advance(HOUR - 1)
        await settle()
        assert woke == []
        assert (await actor.status()).state == "waiting-timer"
        clock.advance(1)
        assert await rt.result(invocation) == T0 + HOUR
    assert woke == [T0 + HOUR]


async def test_a_timer_until_a_deadline_fires_at_the_deadline(db: pathlib.Path) -> None:
    clock = ManualClock(T0)
    async with running(db, [Sleeper], clock=clock) as rt:
        actor = rt.ref(Sleeper, "k")
        invocation = await actor.send(Sleeper.until, T0 + 90)
        await reaches(actor, "waiting-timer")
        clock.advance(120)
        assert await rt.result(invocation) == T0 + 90


async def test_after_a_restart_only_the_remaining_time_is_waited(db: pathlib.Path) -> None:
    async with running(db, [Sleeper], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Sleeper, "k")
        invocation = await actor.send(Sleeper.nap, HOUR)
        await reaches(actor, "waiting-timer")

    clock = ManualClock(T0 + HOUR / 2)
    async with running(db, [Sleeper], clock=clock) as rt:
        actor = rt.ref(Sleeper, "k")
        await reaches(actor, "waiting-timer")
        clock.advance(HOUR / 2 - 1)
        await settle()
        assert woke == []
        clock.advance(1)
        assert await rt.result(invocation) == T0 + HOUR
        assert len(await entries(rt, actor, "timer")) == 1
    assert woke == [T0 + HOUR]


async def test_a_timer_that_expired_while_down_fires_at_once_on_recovery(
    db: pathlib.Path,
) -> None:
    async with running(db, [Sleeper], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Sleeper, "k")
        invocation = await actor.send(Sleeper.nap, HOUR)
        await reaches(actor, "waiting-timer")

    async with running(db, [Sleeper], clock=ManualClock(T0 + 5 * HOUR)) as rt:
        # Recovery wakes the actor at start: its turn ends with no message and no advance.
        await reaches(rt.ref(Sleeper, "k"), "idle")
        assert woke == [T0 + HOUR]
        assert await rt.result(invocation) == T0 + HOUR


async def test_a_negative_sleep_is_refused(db: pathlib.Path) -> None:
    async with running(db, [Sleeper], clock=ManualClock(T0)) as rt:
        assert "seconds >= 0" in await rt.ref(Sleeper, "k").call(Sleeper.negative)
