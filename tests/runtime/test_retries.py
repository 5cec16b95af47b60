"""Steps retry by default with bounded backoff; each failed attempt is journaled with the
time of the next one, so a restart during the backoff neither restarts the count nor the
wait; policies per step, per actor type and per runtime; failed compensations."""

from __future__ import annotations

import pathlib
from collections import Counter

import anyio.lowlevel
import pytest

from actorflow import (
    NO_RETRY,
    Actor,
    CompensationFailed,
    HandlerFailed,
    ManualClock,
    Retry,
    handler,
)
from tests.runtime.support import entries, eventually, reaches, running

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

attempts: Counter[str] = Counter()
#: How many times each flaky step fails before it succeeds.
failures: dict[str, int] = {}
undone: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    attempts.clear()
    failures.clear()
    undone.clear()


class JumpingClock(ManualClock):
    """Backoffs jump the clock to their end: retries take no real time."""

    async def sleep_until(self, deadline: float) -> None:
        if self.now() < deadline:
            self.advance(deadline - self.now())
        await anyio.lowlevel.checkpoint()


def flaky(label: str) -> str:
    attempts[label] += 1
    if attempts[label] <= failures.get(label, 0):
        raise ConnectionError(f"{label}: attempt {attempts[label]} failed")
    return f"{label} ok"


def undo_flaky(value: str) -> None:
    label = value.removesuffix(" ok")
    attempts[f"undo {label}"] += 1
    if attempts[f"undo {label}"] <= failures.get(f"undo {label}", 0):
        raise ConnectionError(f"undo {label} failed")
    undone.append(label)


class Caller(Actor):
    @handler
    async def call(self, label: str) -> str:
        return str(await self.ctx.run(flaky, label))

    @handler
    async def once(self, label: str) -> str:
        return str(await self.ctx.run(flaky, label, retry=NO_RETRY))

    @handler
    async def saga(self) -> list[str]:
        ctx = self.ctx
        quick = Retry(attempts=2, initial=1)
        for label in ("a", "b", "c"):
            await ctx.run(flaky, label, compensate=undo_flaky, retry=quick)
        try:
            return await ctx.compensate()
        except CompensationFailed as exc:
            return [f"undone {exc.undone}", f"failed {exc.failed}"]

    @handler
    async def failing_saga(self) -> str:
        quick = Retry(attempts=2, initial=1)
        for label in ("a", "b", "c"):
            await self.ctx.run(flaky, label, compensate=undo_flaky, retry=quick)
        raise ValueError("the order was refused")


class Patient(Actor, retry=Retry(attempts=8, initial=1)):
    @handler
    async def call(self, label: str) -> str:
        return str(await self.ctx.run(flaky, label))


async def test_a_step_retries_by_default_and_journals_each_failed_attempt(
    db: pathlib.Path,
) -> None:
    failures["llm"] = 2
    clock = JumpingClock(T0)
    async with running(db, [Caller], clock=clock) as rt:
        caller = rt.ref(Caller, "k")
        assert await caller.call(Caller.call, "llm") == "llm ok"
        retried = await entries(rt, caller, "step_retry")
        [done] = await entries(rt, caller, "step")
    assert attempts == {"llm": 3}
    assert [r.data["attempt"] for r in retried] == [1, 2]
    assert retried[0].data["error"]["type"] == "builtins.ConnectionError"
    # Default backoff: about 1 s, then about 2 s (each stretched by up to 20 %).
    first_wait = retried[0].data["retry_at"] - retried[0].at
    second_wait = retried[1].data["retry_at"] - retried[1].at
    assert 1.0 <= first_wait <= 1.2
    assert 2.0 <= second_wait <= 2.4
    assert done.data["attempts"] == 3


async def test_the_default_policy_gives_up_after_five_attempts(db: pathlib.Path) -> None:
    failures["down"] = 99
    async with running(db, [Caller], clock=JumpingClock(T0)) as rt:
        with pytest.raises(HandlerFailed, match="attempt 5 failed"):
            await rt.ref(Caller, "k").call(Caller.call, "down")
        [failed] = await entries(rt, rt.ref(Caller, "k"), "step_failed")
    assert attempts == {"down": 5}
    assert failed.data["attempts"] == 5


async def test_retry_attempts_1_opts_out(db: pathlib.Path) -> None:
    failures["once"] = 1
    async with running(db, [Caller], clock=JumpingClock(T0)) as rt:
        with pytest.raises(HandlerFailed, match="attempt 1 failed"):
            await rt.ref(Caller, "k").call(Caller.once, "once")
    assert attempts == {"once": 1}


async def test_an_actor_type_and_a_runtime_can_set_the_policy(db: pathlib.Path) -> None:
    failures["patient"] = 6
    failures["impatient"] = 1
    async with running(db, [Patient, Caller], clock=JumpingClock(T0), retry=NO_RETRY) as rt:
        assert await rt.ref(Patient, "k").call(Patient.call, "patient") == "patient ok"
        with pytest.raises(HandlerFailed):
            await rt.ref(Caller, "k").call(Caller.call, "impatient")
    assert attempts == {"patient": 7, "impatient": 1}


async def test_a_restart_during_the_backoff_resumes_the_count_and_the_wait(
    db: pathlib.Path,
) -> None:
    failures["llm"] = 1
    clock = ManualClock(T0)
    async with running(db, [Caller], clock=clock) as rt:
        caller = rt.ref(Caller, "k")
        invocation = await caller.send(Caller.call, "llm")
        await reaches(caller, "waiting-retry")
        [retry] = await entries(rt, caller, "step_retry")
    assert attempts == {"llm": 1}

    failures["llm"] = 99  # from here every attempt fails: the count decides the outcome
    clock = ManualClock(T0 + 0.5)  # the process was down half a second
    async with running(db, [Caller], clock=clock) as rt:
        caller = rt.ref(Caller, "k")
        await reaches(caller, "waiting-retry")
        assert attempts == {"llm": 1}  # still waiting: the backoff goes on, not from zero
        clock.advance(retry.data["retry_at"] - clock.now())

        async def retried(times: int) -> bool:
            return len(await entries(rt, caller, "step_retry")) == times

        await eventually(lambda: retried(2), "the second attempt to fail")
        assert attempts == {"llm": 2}
        for times in (3, 4):
            clock.advance(60)
            await eventually(lambda t=times: retried(t), f"attempt {times} to fail")
        clock.advance(60)
        with pytest.raises(HandlerFailed, match="attempt 5 failed"):
            await rt.result(invocation)
    assert attempts == {"llm": 5}  # five in all, across the restart


async def test_a_failed_compensation_is_retried_then_the_others_still_run(
    db: pathlib.Path,
) -> None:
    failures["undo b"] = 5  # more than its policy's two attempts
    failures["undo a"] = 1  # recovers on its retry
    async with running(db, [Caller], clock=JumpingClock(T0)) as rt:
        caller = rt.ref(Caller, "k")
        outcome = await caller.call(Caller.saga)
        failed = [e for e in await entries(rt, caller, "step_failed") if e.data["kind"] == "undo"]
    assert outcome[0] == "undone ['flaky', 'flaky']"
    assert "flaky: builtins.ConnectionError: undo b failed" in outcome[1]
    assert undone == ["c", "a"]
    assert attempts["undo b"] == 2
    assert attempts["undo a"] == 2
    assert len(failed) == 1


async def test_a_turn_whose_compensation_failed_ends_failed_and_says_so(
    db: pathlib.Path,
) -> None:
    failures["undo b"] = 5
    async with running(db, [Caller], clock=JumpingClock(T0)) as rt:
        caller = rt.ref(Caller, "k")
        invocation = await caller.send(Caller.failing_saga)
        with pytest.raises(HandlerFailed, match="the order was refused"):
            await rt.result(invocation)
        status = await rt.invocation(invocation)
        actor = await caller.status()
        # The actor stays usable for later messages.
        assert await caller.call(Caller.call, "later") == "later ok"
    assert status is not None
    assert status.state == "failed"
    assert status.compensated == ("flaky", "flaky")
    assert status.compensation_failed == ("flaky: builtins.ConnectionError: undo b failed",)
    assert status.retryable is False
    assert actor.attention == [invocation]
    assert undone == ["c", "a"]
