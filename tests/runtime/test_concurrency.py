"""Concurrency inside a turn: ctx.gather and ctx.first give deterministic step ids and a
journaled winner; steps started by plain task groups are refused."""

from __future__ import annotations

import pathlib
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest

from actorflow import NO_RETRY, Actor, ActorflowError, ManualClock, handler
from tests.runtime.support import entries, hold, reaches, replay_held, run_to_hold, running

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

executions: Counter[str] = Counter()
completion_order: list[str] = []
seen: list[Any] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    executions.clear()
    completion_order.clear()
    seen.clear()


def record(label: str) -> str:
    executions[label] += 1
    completion_order.append(label)
    return label


async def in_child_tasks(run: Callable[..., Coroutine[Any, Any, Any]], *labels: str) -> str:
    """Start one ``ctx.run`` per label in a plain anyio task group; the refusal, if any."""
    refusals: list[str] = []
    try:
        async with anyio.create_task_group() as group:
            for label in labels:
                group.start_soon(run, record, label)
    except* ActorflowError as errors:
        refusals.extend(str(error) for error in errors.exceptions)
    return refusals[0] if refusals else "accepted"


class Fanout(Actor, retry=NO_RETRY):
    @handler
    async def gather_out_of_order(self) -> list[Any]:
        ctx = self.ctx
        fast_done = anyio.Event()

        async def slow() -> str:
            await fast_done.wait()
            return record("slow")

        async def fast() -> str:
            label = record("fast")
            fast_done.set()
            return label

        async def two_in_a_row() -> list[str]:
            return [await ctx.run(record, "third"), await ctx.run(record, "fourth")]

        results = await ctx.gather(
            ctx.run(slow), ctx.run(fast), two_in_a_row(), ctx.run(record, "fifth")
        )
        seen.append(results)
        await hold(ctx)
        return results

    @handler
    async def gather_with_errors(self) -> str:
        def fail(label: str) -> None:
            record(label)
            raise ValueError(f"{label} failed")

        try:
            await self.ctx.gather(
                self.ctx.run(record, "ok-before"),
                self.ctx.run(fail, "first-error"),
                self.ctx.run(fail, "second-error"),
                self.ctx.run(record, "ok-after"),
            )
        except ValueError as exc:
            outcome = str(exc)
        else:
            outcome = "no error"
        await hold(self.ctx)
        return outcome

    @handler
    async def approval_or_deadline(self) -> list[Any]:
        index, value = await self.ctx.first(self.ctx.wait_for("approved"), self.ctx.sleep(60))
        seen.append([index, value])
        await hold(self.ctx)
        return [index, value]

    @handler
    async def quick_or_deadline(self) -> list[Any]:
        index, value = await self.ctx.first(self.ctx.run(record, "quick"), self.ctx.sleep(60))
        seen.append([index, value])
        await hold(self.ctx)
        return [index, value]

    @handler
    async def approval(self) -> Any:
        return await self.ctx.wait_for("approved")

    @handler
    async def steps_in_a_task_group(self) -> str:
        return await in_child_tasks(self.ctx.run, "child-a", "child-b")

    @handler
    async def step_in_a_child_task_after_a_step(self) -> str:
        await self.ctx.run(record, "parent")
        return await in_child_tasks(self.ctx.run, "child")

    @handler
    async def step_in_a_single_child_task(self) -> str:
        return await in_child_tasks(self.ctx.run, "child")

    @handler
    async def ping(self) -> str:
        return "pong"


async def test_gather_returns_results_in_argument_order_whatever_order_they_finish(
    db: pathlib.Path,
) -> None:
    async with running(db, [Fanout], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Fanout, "k")
        invocation = await run_to_hold(actor, Fanout.gather_out_of_order)
        await actor.deliver("release")
        results = await rt.result(invocation)
    assert results == ["slow", "fast", ["third", "fourth"], "fifth"]
    assert completion_order.index("fast") < completion_order.index("slow")


async def test_gathered_steps_are_journaled_under_their_branch_paths(db: pathlib.Path) -> None:
    async with running(db, [Fanout], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Fanout, "k")
        await run_to_hold(actor, Fanout.gather_out_of_order)
        steps = {
            entry.data["step"]: entry.data["value"] for entry in await entries(rt, actor, "step")
        }
    # The gather is the handler's step 1; each branch numbers its own steps from 1.
    assert steps == {
        "1.1.1": "slow",
        "1.2.1": "fast",
        "1.3.1": "third",
        "1.3.2": "fourth",
        "1.4.1": "fifth",
    }


async def test_gathered_steps_replay_their_own_results_without_running(
    db: pathlib.Path,
) -> None:
    async with running(db, [Fanout], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Fanout, "k")
        invocation = await run_to_hold(actor, Fanout.gather_out_of_order)
    await replay_held(db, [Fanout], actor, invocation, clock=ManualClock(T0))
    assert seen == [["slow", "fast", ["third", "fourth"], "fifth"]] * 2
    assert set(executions.values()) == {1}


async def test_gather_runs_every_branch_then_raises_the_first_error_by_argument_order(
    db: pathlib.Path,
) -> None:
    async with running(db, [Fanout], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Fanout, "k")
        invocation = await run_to_hold(actor, Fanout.gather_with_errors)
        assert len(await entries(rt, actor, "step")) == 2
        assert len(await entries(rt, actor, "step_failed")) == 2
    assert executions == {"ok-before": 1, "first-error": 1, "second-error": 1, "ok-after": 1}
    outcome = await replay_held(db, [Fanout], actor, invocation, clock=ManualClock(T0))
    assert outcome == "first-error failed"
    assert executions == {"ok-before": 1, "first-error": 1, "second-error": 1, "ok-after": 1}


async def test_first_journals_the_winner_index(db: pathlib.Path) -> None:
    clock = ManualClock(T0)
    async with running(db, [Fanout], clock=clock) as rt:
        actor = rt.ref(Fanout, "k")
        invocation = await actor.send(Fanout.approval_or_deadline)
        await reaches(actor, "waiting-timer")
        clock.advance(60)
        await reaches(actor, "waiting-event")
        await actor.deliver("release")
        assert await rt.result(invocation) == [1, None]
        [winner] = [e for e in await entries(rt, actor, "step") if e.data["kind"] == "first"]
        assert (winner.data["step"], winner.data["value"]) == ("1", 1)


async def test_first_replays_the_journaled_winner_even_when_another_branch_could_win_now(
    db: pathlib.Path,
) -> None:
    clock = ManualClock(T0)
    async with running(db, [Fanout], clock=clock) as rt:
        actor = rt.ref(Fanout, "k")
        invocation = await actor.send(Fanout.approval_or_deadline)
        await reaches(actor, "waiting-timer")
        clock.advance(60)
        await reaches(actor, "waiting-event")  # held after the race
        await actor.deliver("approved", "late")

    async with running(db, [Fanout], clock=ManualClock(T0 + 60)) as rt:
        actor = rt.ref(Fanout, "k")
        # Replaying turn 1 takes the timer branch again and leaves the event for turn 2.
        await actor.deliver("release")
        assert await rt.result(invocation) == [1, None]
        assert await actor.call(Fanout.approval) == "late"
        assert (await actor.status()).error is None
    assert seen == [[1, None], [1, None]]


async def test_first_replays_a_step_winner_and_ignores_the_cancelled_branch(
    db: pathlib.Path,
) -> None:
    async with running(db, [Fanout], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Fanout, "k")
        invocation = await run_to_hold(actor, Fanout.quick_or_deadline)
    assert await replay_held(db, [Fanout], actor, invocation, clock=ManualClock(T0)) == [
        0,
        "quick",
    ]
    assert seen == [[0, "quick"], [0, "quick"]]
    assert executions == {"quick": 1}


async def test_steps_started_by_a_plain_task_group_are_refused(db: pathlib.Path) -> None:
    async with running(db, [Fanout], clock=ManualClock(T0)) as rt:
        message = await rt.ref(Fanout, "k").call(Fanout.steps_in_a_task_group)
    assert "ctx.gather or ctx.first did not start" in message
    assert "ctx.gather(ctx.run(a), ctx.run(b))" in message


async def test_a_step_in_a_plain_child_task_after_a_step_is_refused(db: pathlib.Path) -> None:
    async with running(db, [Fanout], clock=ManualClock(T0)) as rt:
        message = await rt.ref(Fanout, "k").call(Fanout.step_in_a_child_task_after_a_step)
    assert "ctx.gather or ctx.first did not start" in message
    assert executions == {"parent": 1}


async def test_a_step_in_a_plain_child_task_is_refused_even_as_the_first_operation(
    db: pathlib.Path,
) -> None:
    async with running(db, [Fanout], clock=ManualClock(T0)) as rt:
        message = await rt.ref(Fanout, "k").call(Fanout.step_in_a_single_child_task)
    assert "ctx.gather or ctx.first did not start" in message
    assert executions == {}
