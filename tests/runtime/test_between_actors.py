"""ctx.send and ctx.call: exactly-once messages between actors, durable replies."""

from __future__ import annotations

import pathlib
from collections import Counter

import pytest

from actorflow import Actor, HandlerFailed, ManualClock, handler
from tests.runtime.support import reaches, running, stream_types

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

#: Raw executions of the callee's work step, by callee key.
work_done: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    work_done.clear()


def do_work(key: str, n: int) -> int:
    work_done[key] += 1
    return n * 2


class Callee(Actor):
    @handler
    async def double(self, n: int) -> int:
        return await self.ctx.run(do_work, self.key, n)

    @handler
    async def double_when_told(self, n: int) -> int:
        await self.ctx.wait_for("go")
        return await self.ctx.run(do_work, self.key, n)

    @handler
    async def explode(self, n: int) -> int:
        raise ValueError(f"cannot handle {n}")


class Caller(Actor):
    @handler
    async def send_then_nap(self, n: int) -> str:
        invocation = await self.ctx.send(self.ctx.ref(Callee, "c"), Callee.double_when_told, n)
        await self.ctx.sleep(3600)
        return invocation

    @handler
    async def call(self, n: int) -> int:
        result: int = await self.ctx.call(self.ctx.ref(Callee, "c"), Callee.double, n)
        return result

    @handler
    async def call_failing(self, n: int) -> str:
        try:
            await self.ctx.call(self.ctx.ref(Callee, "c"), Callee.explode, n)
        except HandlerFailed as exc:
            return f"{exc.error_type}: {exc.message}"
        return "no error"

    @handler
    async def call_failing_uncaught(self, n: int) -> int:
        result: int = await self.ctx.call(self.ctx.ref("Callee", "c"), "explode", n)
        return result

    @handler
    async def call_twice(self, n: int) -> list[int]:
        first = await self.ctx.call(self.ctx.ref(Callee, "c"), Callee.double, n)
        await self.ctx.sleep(60)
        second = await self.ctx.call(self.ctx.ref(Callee, "d"), Callee.double, first)
        return [first, second]


ACTORS = [Caller, Callee]


async def test_a_sent_message_is_delivered_exactly_once_across_a_restart(
    db: pathlib.Path,
) -> None:
    async with running(db, ACTORS, clock=ManualClock(T0)) as rt:
        caller = rt.ref(Caller, "a")
        sent = await caller.send(Caller.send_then_nap, 21)
        await reaches(caller, "waiting-timer")
        await reaches(rt.ref(Callee, "c"), "waiting-event")
        assert await stream_types(rt.store, "inbox/Callee/c") == ["message"]

    clock = ManualClock(T0 + 10)
    async with running(db, ACTORS, clock=clock) as rt:
        caller, callee = rt.ref(Caller, "a"), rt.ref(Callee, "c")
        await reaches(caller, "waiting-timer")  # the send replayed, not sent again
        await reaches(callee, "waiting-event")
        await callee.deliver("go")
        clock.advance(3600)
        invocation = await rt.result(sent)
        assert invocation.startswith("Callee/c#")
        assert await rt.result(invocation) == 42
        assert await stream_types(rt.store, "inbox/Callee/c") == ["message", "event"]
    assert work_done == {"c": 1}


async def test_call_returns_the_callees_result(db: pathlib.Path) -> None:
    async with running(db, ACTORS, clock=ManualClock(T0)) as rt:
        assert await rt.ref(Caller, "a").call(Caller.call, 21) == 42
        assert await rt.ref(Caller, "b").call(Caller.call, 5) == 10
    assert work_done == {"c": 2}


async def test_a_callee_error_surfaces_in_the_caller_as_handler_failed(
    db: pathlib.Path,
) -> None:
    async with running(db, ACTORS, clock=ManualClock(T0)) as rt:
        outcome = await rt.ref(Caller, "a").call(Caller.call_failing, 7)
    assert outcome == "builtins.ValueError: cannot handle 7"


async def test_an_uncaught_callee_error_fails_the_callers_invocation(db: pathlib.Path) -> None:
    async with running(db, ACTORS, clock=ManualClock(T0)) as rt:
        with pytest.raises(HandlerFailed) as raised:
            await rt.ref(Caller, "a").call(Caller.call_failing_uncaught, 7)
    assert raised.value.error_type == "actorflow._errors.HandlerFailed"
    assert "cannot handle 7" in raised.value.message


async def test_calls_replayed_after_a_restart_are_not_sent_again(db: pathlib.Path) -> None:
    async with running(db, ACTORS, clock=ManualClock(T0)) as rt:
        caller = rt.ref(Caller, "a")
        invocation = await caller.send(Caller.call_twice, 3)
        await reaches(caller, "waiting-timer")
        assert work_done == {"c": 1}

    async with running(db, ACTORS, clock=ManualClock(T0 + 60)) as rt:
        assert await rt.result(invocation) == [6, 12]
        assert await stream_types(rt.store, "inbox/Callee/c") == ["message"]
        assert await stream_types(rt.store, "inbox/Callee/d") == ["message"]
        assert await stream_types(rt.store, "inbox/Caller/a") == ["message", "event", "event"]
    assert work_done == {"c": 1, "d": 1}


class Fan(Actor):
    @handler
    async def leaf(self, n: int) -> int:
        return await self.ctx.run(do_work, self.key, n)

    @handler
    async def fan(self, n: int) -> list[int]:
        out: list[int] = await self.ctx.gather(
            self.ctx.call(self.ctx.ref(Fan, "a"), Fan.leaf, n),
            self.ctx.call(self.ctx.ref(Fan, "b"), Fan.leaf, n),
        )
        return out


async def test_actors_called_from_gather_branches_take_steps_of_their_own(
    tmp_path: pathlib.Path,
) -> None:
    """An actor activated by a send from a ctx.gather branch runs its turns as its own
    (it once inherited the caller's branch, and its first step was refused)."""
    async with running(tmp_path / "journal.db", [Fan]) as runtime:
        invocation = await runtime.send(runtime.ref(Fan, "root").ref, "fan", (2,))
        assert await runtime.result(invocation) == [4, 4]
