"""Replay agrees with the live run: losing branches of ctx.first, wrapped callables, steps
that use ctx themselves, and what ctx.send sends."""

from __future__ import annotations

import functools
import pathlib
from collections import Counter
from typing import Any

import pytest

from actorflow import (
    NO_RETRY,
    Actor,
    ContextMisuseError,
    ManualClock,
    handler,
)
from tests.runtime.support import entries, hold, reaches, replay_held, run_to_hold, running

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

executions: Counter[str] = Counter()
undone: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    executions.clear()
    undone.clear()


async def quick(label: str) -> str:
    executions[label] += 1
    return label


def undo(value: str) -> None:
    undone.append(value)


class Racer(Actor, retry=NO_RETRY):
    @handler
    async def race_an_event(self) -> list[Any]:
        """A step and a wait for an event that is already there: both branches end in
        the same loop iteration; the step wins, the wait (the loser) consumed the event."""
        ctx = self.ctx
        winner, value = await ctx.first(ctx.run(quick, "step"), ctx.wait_for("go"))
        await hold(ctx)
        after = await ctx.wait_for("go")  # must be the second "go", not the first again
        return [winner, value, after]

    @handler
    async def race_two_undoable_steps(self) -> list[str]:
        """Two undoable steps that both complete; the turn then fails: both undo."""
        ctx = self.ctx
        await ctx.first(ctx.run(quick, "a", compensate=undo), ctx.run(quick, "b", compensate=undo))
        await hold(ctx)
        raise ValueError("the trip fell through")


async def test_a_losing_branch_that_consumed_an_event_consumes_it_on_replay_too(
    db: pathlib.Path,
) -> None:
    async with running(db, [Racer], clock=ManualClock(T0)) as rt:
        racer = rt.ref(Racer, "k")
        await racer.deliver("go", "first go")
        invocation = await run_to_hold(racer, Racer.race_an_event)
        consumed = [e.data for e in await entries(rt, racer, "step") if e.data["kind"] == "event"]
        await racer.deliver("go", "second go")
    assert [c["value"] for c in consumed] == ["first go"]  # the loser consumed it, live
    result = await replay_held(db, [Racer], racer, invocation, clock=ManualClock(T0))
    assert result == [0, "step", "second go"]
    assert executions == {"step": 1}


async def test_a_losing_branch_s_compensation_runs_after_a_replay_too(db: pathlib.Path) -> None:
    async with running(db, [Racer], clock=ManualClock(T0)) as rt:
        racer = rt.ref(Racer, "k")
        invocation = await run_to_hold(racer, Racer.race_two_undoable_steps)
    async with running(db, [Racer], clock=ManualClock(T0)) as rt:
        await rt.deliver(racer.ref, "release")
        status = None
        with pytest.raises(Exception, match="fell through"):
            await rt.result(invocation)
        status = await rt.invocation(invocation)
    assert status is not None
    assert status.compensated == ("quick", "quick")  # the loser's undo, then the winner's
    assert undone == ["b", "a"]
    assert executions == {"a": 1, "b": 1}


# -- wrapped callables --------------------------------------------------------------------


def charge(amount: int, idempotency_key: str) -> str:
    executions[f"charge {amount}"] += 1
    return f"charged {amount}"


def refund(amount: int, idempotency_key: str) -> str:
    executions[f"refund {amount}"] += 1
    return f"refunded {amount}"


class PayV1(Actor, name="Pay"):
    @handler
    async def go(self) -> str:
        done = await self.ctx.run(functools.partial(charge, amount=100))
        await hold(self.ctx)
        return done


class PayV2Other(Actor, name="Pay"):
    @handler
    async def go(self) -> str:
        done = await self.ctx.run(functools.partial(refund, amount=999))
        await hold(self.ctx)
        return done


class PayV2Amount(Actor, name="Pay"):
    @handler
    async def go(self) -> str:
        done = await self.ctx.run(functools.partial(charge, amount=999))
        await hold(self.ctx)
        return done


async def test_a_partial_step_is_named_and_fingerprinted_by_what_it_wraps(
    db: pathlib.Path,
) -> None:
    async with running(db, [PayV1], clock=ManualClock(T0)) as rt:
        pay = rt.ref(PayV1, "k")
        invocation = await run_to_hold(pay, PayV1.go)
        [step] = await entries(rt, pay, "step")
    assert step.data["name"] == "charge"
    assert step.data["fingerprint"] != 0
    assert await replay_held(db, [PayV1], pay, invocation, clock=ManualClock(T0)) == "charged 100"


@pytest.mark.parametrize("changed", [PayV2Other, PayV2Amount])
async def test_changing_what_a_partial_step_wraps_is_non_determinism(
    db: pathlib.Path, changed: type[Actor]
) -> None:
    async with running(db, [PayV1], clock=ManualClock(T0)) as rt:
        await run_to_hold(rt.ref(PayV1, "k"), PayV1.go)
    async with running(db, [changed], clock=ManualClock(T0)) as rt:
        pay = rt.ref(changed, "k")
        await reaches(pay, "stuck")
        status = await pay.status()
    assert status.error is not None
    assert "non-deterministic replay" in status.error
    assert executions == {"charge 100": 1}


# -- ctx inside a step ----------------------------------------------------------------------


class Nested(Actor):  # the default retry policy: a refusal must still not be retried
    @handler
    async def step_uses_ctx(self) -> str:
        ctx = self.ctx

        async def outer() -> str:
            executions["outer"] += 1
            return str(await ctx.run(quick, "inner"))

        try:
            return await ctx.run(outer)
        except ContextMisuseError as exc:
            return f"refused: {exc}"

    @handler
    async def sync_step_reads_the_clock(self) -> str:
        ctx = self.ctx

        def stamp() -> float:
            executions["stamp"] += 1
            return ctx.now()

        try:
            return str(await ctx.run(stamp))
        except ContextMisuseError as exc:
            return f"refused: {exc}"


@pytest.mark.parametrize("name", ["step_uses_ctx", "sync_step_reads_the_clock"])
async def test_ctx_inside_a_step_is_refused_at_once_and_not_retried(
    db: pathlib.Path, name: str
) -> None:
    async with running(db, [Nested], clock=ManualClock(T0)) as rt:
        nested = rt.ref(Nested, "k")
        outcome = await nested.call(getattr(Nested, name))
        [failed] = await entries(rt, nested, "step_failed")
    assert outcome.startswith("refused: actor Nested/k: ctx.")
    assert "inside a step's function" in outcome
    assert "Call ctx from the handler instead" in outcome
    assert failed.data["attempts"] == 1
    assert "inner" not in executions
    assert sum(executions.values()) == 1


# -- what ctx.send sends --------------------------------------------------------------------


class Inbox(Actor):
    @handler
    async def note(self, text: str) -> str:
        return text


class SenderV1(Actor, name="Sender"):
    @handler
    async def go(self) -> str:
        sent = await self.ctx.send(self.ctx.ref(Inbox, "i"), Inbox.note, "hello")
        await hold(self.ctx)
        return sent


class SenderV2(Actor, name="Sender"):
    @handler
    async def go(self) -> str:
        sent = await self.ctx.send(self.ctx.ref(Inbox, "i"), Inbox.note, "goodbye")
        await hold(self.ctx)
        return sent


async def test_changing_what_ctx_send_sends_is_non_determinism(db: pathlib.Path) -> None:
    async with running(db, [SenderV1, Inbox], clock=ManualClock(T0)) as rt:
        await run_to_hold(rt.ref(SenderV1, "k"), SenderV1.go)
    async with running(db, [SenderV2, Inbox], clock=ManualClock(T0)) as rt:
        sender = rt.ref(SenderV2, "k")
        await reaches(sender, "stuck")
        status = await sender.status()
    assert status.error is not None
    assert "different inputs" in status.error
