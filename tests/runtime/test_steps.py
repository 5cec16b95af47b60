"""ctx.run: results and errors journaled, never re-executed on replay; retries; keys."""

from __future__ import annotations

import pathlib
import random
from collections import Counter
from typing import Any

import anyio
import pytest

from actorflow import (
    NO_RETRY,
    Actor,
    ActorflowError,
    InvalidResultError,
    ManualClock,
    Retry,
    StepError,
    StepFailed,
    handler,
)
from tests.runtime.support import (
    crashing,
    entries,
    eventually,
    hold,
    reaches,
    replay_held,
    replays_cleanly,
    run_to_hold,
    running,
)

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

#: Raw executions of step functions, by name: what a replay must not add to.
executions: Counter[str] = Counter()
#: What handler code saw, on every run of it (live or replayed).
seen: list[Any] = []
#: Idempotency keys as step functions saw them: (from the keyword, from ctx).
keys: list[tuple[str, str]] = []
#: Set by a test to let a blocked step function finish.
release: dict[str, anyio.Event] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    executions.clear()
    seen.clear()
    keys.clear()
    release.clear()


class Declined(StepError):
    """A step error a handler catches by type; rebuilt from the journal as itself."""


class LedgerDown(Exception):
    """An ordinary exception: it surfaces as StepFailed, live and on replay."""


def draw(label: str) -> float:
    executions[label] += 1
    return random.random()


def fail_with(kind: str) -> None:
    executions[kind] += 1
    if kind == "builtin":
        raise ValueError("amount must be positive, got -3")
    if kind == "registered":
        raise Declined("card declined", 402)
    raise LedgerDown("ledger unreachable")


def describe(exc: Exception) -> str:
    if isinstance(exc, StepFailed):
        return f"StepFailed {exc.error_type}: {exc.message}"
    return f"{type(exc).__name__} {exc.args!r}"


def flaky(label: str, fail_times: int, error: type[Exception]) -> str:
    executions[label] += 1
    if executions[label] <= fail_times:
        raise error(f"attempt {executions[label]} failed")
    return f"{label} done"


class Steps(Actor, retry=NO_RETRY):  # a failed step fails at once (retries: test_retries)
    @handler
    async def two_draws(self) -> list[float]:
        first = await self.ctx.run(draw, "first")
        seen.append(("first", first))
        await self.ctx.sleep(60)
        second = await self.ctx.run(draw, "second")
        seen.append(("second", second))
        return [first, second]

    @handler
    async def failing(self, kind: str) -> str:
        try:
            await self.ctx.run(fail_with, kind)
        except (ValueError, Declined, StepFailed) as exc:
            outcome = describe(exc)
        seen.append(outcome)
        await hold(self.ctx)
        return outcome

    @handler
    async def registered_error(self) -> list[Any]:
        try:
            await self.ctx.run(fail_with, "registered")
        except Declined as exc:
            return list(exc.args)
        return []

    @handler
    async def retried(self, fail_times: int, attempts: int) -> str:
        retry = Retry(attempts=attempts, initial=0, retry_on=(ConnectionError,))
        try:
            return await self.ctx.run(flaky, "flaky", fail_times, ConnectionError, retry=retry)
        except ConnectionError as exc:
            return f"gave up: {exc}"

    @handler
    async def not_retryable(self) -> str:
        retry = Retry(attempts=5, initial=0, retry_on=(ConnectionError,))
        try:
            return await self.ctx.run(flaky, "strict", 10, KeyError, retry=retry)
        except KeyError as exc:
            return f"not retried: {exc.args[0]}"

    @handler
    async def unencodable(self) -> str:
        try:
            await self.ctx.run(lambda: object(), name="opaque")
        except InvalidResultError as exc:
            return f"InvalidResultError: {exc}"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "no error"

    @handler
    async def mistyped(self) -> str:
        def count() -> int:
            return "three"  # type: ignore[return-value]

        try:
            await self.ctx.run(count)
        except InvalidResultError as exc:
            return f"InvalidResultError: {exc}"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "no error"

    @handler
    async def keyed(self) -> list[str]:
        ctx = self.ctx

        async def charge(amount: int, *, idempotency_key: str) -> str:
            keys.append((idempotency_key, ctx.idempotency_key))
            executions["charge"] += 1
            if executions["charge"] == 1:
                await anyio.Event().wait()  # in flight until the crash
            return f"charged {amount}"

        def refund(amount: int) -> str:
            keys.append(("", ctx.idempotency_key))
            return f"refunded {amount}"

        return [await ctx.run(charge, 30), await ctx.run(refund, 10)]

    @handler
    async def key_outside_a_step(self) -> str:
        try:
            return self.ctx.idempotency_key
        except ActorflowError as exc:
            return str(exc)

    @handler
    async def values(self) -> list[str]:
        at = self.ctx.now()
        result = [str(at), str(self.ctx.random()), str(self.ctx.uuid()), str(self.ctx.random())]
        seen.append(result)
        await hold(self.ctx)
        return result


async def replay_first_turn(db: pathlib.Path, clock: ManualClock) -> None:
    """Restart and send another message: activation replays every journaled turn."""
    async with running(db, [Steps], clock=clock) as rt:
        await replays_cleanly(rt.ref(Steps, "k"), Steps.key_outside_a_step)


async def test_a_step_result_is_journaled_and_not_re_executed_after_a_restart(
    db: pathlib.Path,
) -> None:
    async with running(db, [Steps], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Steps, "k")
        invocation = await actor.send(Steps.two_draws)
        await reaches(actor, "waiting-timer")
        [step] = await entries(rt, actor, "step")
        assert step.data["name"] == "draw"
        assert step.data["value"] == seen[0][1]
    assert executions == {"first": 1}

    async with running(db, [Steps], clock=ManualClock(T0 + 60)) as rt:
        first, second = await rt.result(invocation)
    assert executions == {"first": 1, "second": 1}
    assert seen == [("first", first), ("first", first), ("second", second)]

    # A finished turn is never replayed: its end checkpointed the actor.
    await replay_first_turn(db, ManualClock(T0 + 120))
    assert executions == {"first": 1, "second": 1}
    assert seen == [("first", first), ("first", first), ("second", second)]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("builtin", "ValueError ('amount must be positive, got -3',)"),
        ("registered", "Declined ('card declined', 402)"),
        (
            "other",
            "StepFailed tests.runtime.test_steps.LedgerDown: ledger unreachable",
        ),
    ],
)
async def test_a_step_error_is_journaled_and_re_raised_the_same_on_replay(
    db: pathlib.Path, kind: str, expected: str
) -> None:
    async with running(db, [Steps], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Steps, "k")
        invocation = await run_to_hold(actor, Steps.failing, kind)
        [failed] = await entries(rt, actor, "step_failed")
        assert failed.data["name"] == "fail_with"
        assert failed.data["error"]["type"].rpartition(".")[2] in expected

    assert await replay_held(db, [Steps], actor, invocation, clock=ManualClock(T0)) == expected
    assert executions == {kind: 1}
    assert seen == [expected, expected]


async def test_a_registered_step_error_comes_back_with_its_arguments(db: pathlib.Path) -> None:
    async with running(db, [Steps], clock=ManualClock(T0)) as rt:
        assert await rt.ref(Steps, "k").call(Steps.registered_error) == ["card declined", 402]


async def test_a_retried_step_journals_only_its_final_success_with_the_attempts(
    db: pathlib.Path,
) -> None:
    async with running(db, [Steps], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Steps, "k")
        assert await actor.call(Steps.retried, 2, 3) == "flaky done"
        assert executions == {"flaky": 3}
        [step] = await entries(rt, actor, "step")
        assert (step.data["name"], step.data["attempts"]) == ("flaky", 3)
        assert await entries(rt, actor, "step_failed") == []
    await replay_first_turn(db, ManualClock(T0))
    assert executions == {"flaky": 3}


async def test_a_step_that_exhausts_its_retries_journals_its_last_error(
    db: pathlib.Path,
) -> None:
    async with running(db, [Steps], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Steps, "k")
        assert await actor.call(Steps.retried, 5, 3) == "gave up: attempt 3 failed"
        assert executions == {"flaky": 3}
        [failed] = await entries(rt, actor, "step_failed")
        assert failed.data["attempts"] == 3
        assert failed.data["error"]["type"] == "builtins.ConnectionError"


async def test_an_exception_not_listed_as_retryable_is_not_retried(db: pathlib.Path) -> None:
    async with running(db, [Steps], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Steps, "k")
        assert await actor.call(Steps.not_retryable) == "not retried: attempt 1 failed"
        assert executions == {"strict": 1}
        [failed] = await entries(rt, actor, "step_failed")
        assert failed.data["attempts"] == 1


def test_a_retry_policy_refuses_impossible_settings() -> None:
    with pytest.raises(ValueError, match="at least one attempt"):
        Retry(attempts=0)
    with pytest.raises(ValueError, match="factor >= 1"):
        Retry(factor=0.5)


def test_retry_delays_grow_exponentially_up_to_the_maximum_with_bounded_jitter() -> None:
    policy = Retry(initial=1.0, factor=2.0, maximum=5.0, jitter=0.5)
    assert [policy.delay(attempt, 0.0) for attempt in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert policy.delay(1, 1.0) == 1.5


@pytest.mark.parametrize("handler_name", ["unencodable", "mistyped"])
async def test_a_result_that_cannot_be_journaled_is_an_invalid_result_error_at_the_first_run(
    db: pathlib.Path, handler_name: str
) -> None:
    async with running(db, [Steps], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Steps, "k")
        outcome = await actor.call(getattr(Steps, handler_name))
        assert outcome.startswith("InvalidResultError: step ")
        assert "cannot be journaled" in outcome
    await replay_first_turn(db, ManualClock(T0))


async def test_the_idempotency_key_is_the_same_inside_the_step_and_on_re_execution(
    db: pathlib.Path,
) -> None:
    async with crashing(db, [Steps], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Steps, "k")
        invocation = await actor.send(Steps.keyed)
        await eventually(lambda: _true(keys), "the charge step to start")
    assert executions == {"charge": 1}

    async with running(db, [Steps], clock=ManualClock(T0)) as rt:
        assert await rt.result(invocation) == ["charged 30", "refunded 10"]
    assert executions == {"charge": 2}
    (first_kw, first_ctx), (again_kw, again_ctx), (_, refund_key) = keys
    assert first_kw == first_ctx == again_kw == again_ctx
    assert first_kw.endswith(":Steps/k/t1/s1")
    assert refund_key.endswith(":Steps/k/t1/s2")


async def test_the_idempotency_key_is_undefined_outside_a_step(db: pathlib.Path) -> None:
    async with running(db, [Steps], clock=ManualClock(T0)) as rt:
        message = await rt.ref(Steps, "k").call(Steps.key_outside_a_step)
    assert "only defined while a step's function runs" in message


async def test_now_random_and_uuid_are_the_same_on_replay(db: pathlib.Path) -> None:
    async with running(db, [Steps], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Steps, "k")
        invocation = await run_to_hold(actor, Steps.values)
    values = await replay_held(db, [Steps], actor, invocation, clock=ManualClock(T0 + 999))
    assert float(values[0]) == T0
    assert values[1] != values[3]
    assert seen == [values, values]


async def _true(items: list[Any]) -> bool:
    return bool(items)
