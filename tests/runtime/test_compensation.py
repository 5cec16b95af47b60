"""Compensation: undos of completed steps, newest first, each journaled and exactly once;
an irreversible step is the turn's point of no return."""

from __future__ import annotations

import pathlib
from collections import Counter

import anyio
import pytest

from actorflow import Actor, ActorflowError, HandlerFailed, ManualClock, handler
from tests.runtime.support import crashing, entries, eventually, replays_cleanly, running

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

booked: Counter[str] = Counter()
#: Undo executions, in the order they ran, with the result they were given.
undone: list[str] = []
#: An undo that should hang (in flight at a crash) the first time it runs.
hang_once: set[str] = set()


@pytest.fixture(autouse=True)
def _reset() -> None:
    booked.clear()
    undone.clear()
    hang_once.clear()


def book(what: str) -> str:
    booked[what] += 1
    return f"{what}-booking"


async def cancel(booking: str) -> None:
    undone.append(booking)
    if booking in hang_once:
        hang_once.discard(booking)
        await anyio.Event().wait()


class Trip(Actor):
    async def book_all(self) -> None:
        await self.ctx.run(book, "flight", name="flight", compensate=cancel)
        await self.ctx.run(book, "hotel", name="hotel", compensate=cancel)
        await self.ctx.run(book, "museum", name="museum")  # nothing to undo

    @handler
    async def plan(self, fail: bool) -> str:
        await self.book_all()
        if fail:
            raise ValueError("payment declined")
        return "booked"

    @handler(compensate_on_error=False)
    async def plan_without_undo(self) -> str:
        await self.book_all()
        raise ValueError("payment declined")

    @handler
    async def plan_then_email(self) -> str:
        await self.book_all()
        await self.ctx.run(book, "email", name="email", irreversible=True)
        raise ValueError("printer on fire")

    @handler
    async def email_then_compensate(self) -> str:
        await self.book_all()
        await self.ctx.run(book, "email", name="email", irreversible=True)
        try:
            await self.ctx.compensate()
        except ActorflowError as exc:
            return str(exc)
        return "compensated"

    @handler
    async def change_of_mind(self) -> list[list[str]]:
        await self.book_all()
        first = await self.ctx.compensate()
        again = await self.ctx.compensate()
        return [first, again]

    @handler
    async def ping(self) -> str:
        return "pong"


async def replay(db: pathlib.Path) -> None:
    async with running(db, [Trip], clock=ManualClock(T0)) as rt:
        await replays_cleanly(rt.ref(Trip, "k"), Trip.ping)


async def test_a_failing_turn_undoes_its_completed_steps_newest_first(db: pathlib.Path) -> None:
    async with running(db, [Trip], clock=ManualClock(T0)) as rt:
        trip = rt.ref(Trip, "k")
        with pytest.raises(HandlerFailed, match="payment declined"):
            await trip.call(Trip.plan, True)
        undos = [e.data for e in await entries(rt, trip, "step") if e.data["kind"] == "undo"]
        [failed] = await entries(rt, trip, "turn_failed")
    assert undone == ["hotel-booking", "flight-booking"]
    assert [(u["step"], u["name"]) for u in undos] == [("2~undo", "hotel"), ("1~undo", "flight")]
    assert failed.data["compensated"] == ("hotel", "flight")


async def test_a_successful_turn_undoes_nothing(db: pathlib.Path) -> None:
    async with running(db, [Trip], clock=ManualClock(T0)) as rt:
        assert await rt.ref(Trip, "k").call(Trip.plan, False) == "booked"
    assert undone == []


async def test_undos_are_not_run_again_on_replay(db: pathlib.Path) -> None:
    async with running(db, [Trip], clock=ManualClock(T0)) as rt:
        with pytest.raises(HandlerFailed):
            await rt.ref(Trip, "k").call(Trip.plan, True)
    await replay(db)
    assert undone == ["hotel-booking", "flight-booking"]
    assert booked == {"flight": 1, "hotel": 1, "museum": 1}


async def test_compensation_interrupted_by_a_crash_resumes_without_repeating_finished_undos(
    db: pathlib.Path,
) -> None:
    hang_once.add("flight-booking")
    async with crashing(db, [Trip], clock=ManualClock(T0)) as rt:
        invocation = await rt.ref(Trip, "k").send(Trip.plan, True)

        async def flight_undo_started() -> bool:
            return "flight-booking" in undone

        await eventually(flight_undo_started, "the flight's undo to start")

    async with running(db, [Trip], clock=ManualClock(T0)) as rt:
        trip = rt.ref(Trip, "k")
        with pytest.raises(HandlerFailed, match="payment declined"):
            await rt.result(invocation)
        undos = [
            e.data["name"] for e in await entries(rt, trip, "step") if e.data["kind"] == "undo"
        ]
    # The finished undo ran once; only the one in flight at the crash ran again.
    assert undone == ["hotel-booking", "flight-booking", "flight-booking"]
    assert undos == ["hotel", "flight"]
    assert booked == {"flight": 1, "hotel": 1, "museum": 1}


async def test_compensate_on_error_false_leaves_completed_steps_alone(db: pathlib.Path) -> None:
    async with running(db, [Trip], clock=ManualClock(T0)) as rt:
        with pytest.raises(HandlerFailed, match="payment declined"):
            await rt.ref(Trip, "k").call(Trip.plan_without_undo)
    assert undone == []


async def test_a_completed_irreversible_step_means_no_compensation(db: pathlib.Path) -> None:
    async with running(db, [Trip], clock=ManualClock(T0)) as rt:
        trip = rt.ref(Trip, "k")
        with pytest.raises(HandlerFailed, match="printer on fire"):
            await trip.call(Trip.plan_then_email)
        [failed] = await entries(rt, trip, "turn_failed")
    assert undone == []
    assert failed.data["compensated"] == ()


async def test_compensate_after_an_irreversible_step_raises(db: pathlib.Path) -> None:
    async with running(db, [Trip], clock=ManualClock(T0)) as rt:
        message = await rt.ref(Trip, "k").call(Trip.email_then_compensate)
    assert "point of no return" in message
    assert "'email'" in message
    assert undone == []


async def test_a_handler_can_compensate_explicitly_and_only_once(db: pathlib.Path) -> None:
    async with running(db, [Trip], clock=ManualClock(T0)) as rt:
        trip = rt.ref(Trip, "k")
        assert await trip.call(Trip.change_of_mind) == [["hotel", "flight"], []]
        assert len(await entries(rt, trip, "turn_done")) == 1
    assert undone == ["hotel-booking", "flight-booking"]
    await replay(db)
    assert undone == ["hotel-booking", "flight-booking"]
