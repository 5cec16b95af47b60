"""ctx.wait_for: outside events kept in order until waited for, across restarts; timeouts
are durable and journaled."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from actorflow import Actor, ActorHandle, ManualClock, handler
from tests.runtime.support import (
    entries,
    eventually,
    hold,
    reaches,
    replay_held,
    running,
    settle,
)

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

outcomes: list[Any] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    outcomes.clear()


class Approver(Actor):
    @handler
    async def two_answers(self) -> list[Any]:
        first = await self.ctx.wait_for("answer")
        second = await self.ctx.wait_for("answer")
        return [first, second]

    @handler
    async def after_a_nap(self) -> list[Any]:
        await self.ctx.sleep(60)
        return [await self.ctx.wait_for("answer"), await self.ctx.wait_for("answer")]

    @handler
    async def approval(self) -> bool:
        approved: bool = await self.ctx.wait_for("approved", type=bool)
        return approved

    @handler
    async def approval_or_timeout(self) -> str:
        try:
            answer = await self.ctx.wait_for("approved", timeout=600)
        except TimeoutError:
            outcomes.append("timeout")
            return "timed out"
        outcomes.append(answer)
        return f"got {answer}"

    @handler
    async def approval_or_timeout_held(self) -> str:
        outcome = await self.approval_or_timeout()
        await hold(self.ctx)
        return outcome

    @handler
    async def ping(self) -> str:
        return "pong"


async def test_events_delivered_before_the_handler_waits_are_kept_in_order(
    db: pathlib.Path,
) -> None:
    async with running(db, [Approver], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Approver, "k")
        await actor.deliver("answer", "first")
        await actor.deliver("other", "unrelated")
        await actor.deliver("answer", {"n": 2})
        assert await actor.call(Approver.two_answers) == ["first", {"n": 2}]


async def test_events_delivered_while_the_handler_is_busy_are_kept_in_order(
    db: pathlib.Path,
) -> None:
    clock = ManualClock(T0)
    async with running(db, [Approver], clock=clock) as rt:
        actor = rt.ref(Approver, "k")
        invocation = await actor.send(Approver.after_a_nap)
        await reaches(actor, "waiting-timer")
        await actor.deliver("answer", 1)
        await actor.deliver("answer", 2)
        clock.advance(60)
        assert await rt.result(invocation) == [1, 2]


async def test_an_event_delivered_before_a_restart_is_kept(db: pathlib.Path) -> None:
    async with running(db, [Approver], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Approver, "k")
        invocation = await actor.send(Approver.after_a_nap)
        await reaches(actor, "waiting-timer")
        await actor.deliver("answer", "kept")

    clock = ManualClock(T0 + 30)
    async with running(db, [Approver], clock=clock) as rt:
        actor = rt.ref(Approver, "k")
        await reaches(actor, "waiting-timer")
        await actor.deliver("answer", "later")
        clock.advance(30)
        assert await rt.result(invocation) == ["kept", "later"]


async def test_an_event_delivered_after_a_restart_reaches_the_waiting_handler(
    db: pathlib.Path,
) -> None:
    async with running(db, [Approver], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Approver, "k")
        invocation = await actor.send(Approver.approval)
        await reaches(actor, "waiting-event")

    async with running(db, [Approver], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Approver, "k")
        await reaches(actor, "waiting-event")
        await actor.deliver("approved", True)
        assert await rt.result(invocation) is True
        [step] = await entries(rt, actor, "step")
        assert (step.data["kind"], step.data["value"]) == ("event", True)


async def test_a_wait_that_times_out_raises_timeout_error(db: pathlib.Path) -> None:
    clock = ManualClock(T0)
    async with running(db, [Approver], clock=clock) as rt:
        actor = rt.ref(Approver, "k")
        invocation = await actor.send(Approver.approval_or_timeout)
        await reaches(actor, "waiting-event")
        clock.advance(599)
        await settle()
        assert outcomes == []
        clock.advance(1)
        assert await rt.result(invocation) == "timed out"
        [failed] = await entries(rt, actor, "step_failed")
        assert failed.data["kind"] == "event"
        assert failed.data["error"]["type"] == "builtins.TimeoutError"


async def test_a_timed_out_wait_replays_as_a_timeout_even_if_the_event_came_later(
    db: pathlib.Path,
) -> None:
    clock = ManualClock(T0)
    async with running(db, [Approver], clock=clock) as rt:
        actor = rt.ref(Approver, "k")
        invocation = await actor.send(Approver.approval_or_timeout_held)
        await reaches(actor, "waiting-event")
        clock.advance(600)
        await eventually_held(actor)
        await actor.deliver("approved", "too late")

    # Activation replays the first turn: it must time out again, not take the late event.
    held = await replay_held(db, [Approver], actor, invocation, clock=ManualClock(T0))
    assert held == "timed out"
    async with running(db, [Approver], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Approver, "k")
        assert await actor.call(Approver.approval_or_timeout) == "got too late"
    assert outcomes == ["timeout", "timeout", "too late"]


async def eventually_held(actor: ActorHandle[Approver]) -> None:
    """Wait until the turn has timed out and waits at its hold."""

    async def timed_out() -> bool:
        return outcomes == ["timeout"] and (await actor.status()).state == "waiting-event"

    await eventually(timed_out, f"{actor.id} to time out and hold")


async def test_a_timeout_counts_from_when_the_wait_began_across_a_restart(
    db: pathlib.Path,
) -> None:
    async with running(db, [Approver], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Approver, "k")
        invocation = await actor.send(Approver.approval_or_timeout)
        await reaches(actor, "waiting-event")

    clock = ManualClock(T0 + 500)
    async with running(db, [Approver], clock=clock) as rt:
        actor = rt.ref(Approver, "k")
        await reaches(actor, "waiting-event")
        clock.advance(99)
        await settle()
        assert outcomes == []
        clock.advance(1)
        assert await rt.result(invocation) == "timed out"
