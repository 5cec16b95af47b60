"""The step in flight at a crash: at-most-once steps raise StepOutcomeUnknown, reconcile
probes decide, plain steps run again; only the first two pay for a durable start."""

from __future__ import annotations

import pathlib
from collections import Counter
from typing import Any

import anyio
import pytest

from actorflow import (
    Actor,
    HandlerFailed,
    Happened,
    ManualClock,
    Runtime,
    StepOutcomeUnknown,
    handler,
)
from journal import MemoryStore
from tests.runtime.support import (
    crashing,
    entries,
    eventually,
    hold,
    reaches,
    replay_held,
    running,
    stream_types,
)

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

executions: Counter[str] = Counter()
#: Idempotency keys as the step functions and the probes saw them.
step_keys: list[str] = []
probe_keys: list[str] = []
#: What a reconcile probe answers after the restart.
probe_answer: list[Happened | None] = []
seen: list[Any] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    executions.clear()
    step_keys.clear()
    probe_keys.clear()
    probe_answer.clear()
    seen.clear()


async def transfer(amount: int, *, idempotency_key: str) -> str:
    """Hangs on its first run (in flight when the process dies), then succeeds."""
    executions["transfer"] += 1
    step_keys.append(idempotency_key)
    if executions["transfer"] == 1:
        await anyio.Event().wait()
    return f"sent {amount}"


async def probe(idempotency_key: str) -> Happened | None:
    probe_keys.append(idempotency_key)
    return probe_answer[0]


def plain(amount: int) -> str:
    executions["plain"] += 1
    return f"plain {amount}"


class Wire(Actor):
    @handler
    async def at_most_once(self, amount: int) -> str:
        try:
            outcome = await self.ctx.run(transfer, amount, at_most_once=True)
        except StepOutcomeUnknown as exc:
            outcome = f"unknown: {exc.idempotency_key}"
        seen.append(outcome)
        return outcome

    @handler
    async def reconciled(self, amount: int) -> str:
        outcome: str = await self.ctx.run(transfer, amount, reconcile=probe)
        seen.append(outcome)
        return outcome

    @handler
    async def at_most_once_held(self, amount: int) -> str:
        outcome = await self.at_most_once(amount)
        await hold(self.ctx)
        return outcome

    @handler
    async def reconciled_held(self, amount: int) -> str:
        outcome = await self.reconciled(amount)
        await hold(self.ctx)
        return outcome

    @handler
    async def plain_steps(self, amount: int) -> list[str]:
        return [await self.ctx.run(plain, amount), await self.ctx.run(transfer, amount)]

    @handler
    async def ping(self) -> str:
        return "pong"


async def crash_in_flight(db: pathlib.Path, handler_name: str) -> str:
    """Send the message, wait until its step function runs, and kill the runtime there."""
    async with crashing(db, [Wire], clock=ManualClock(T0)) as rt:
        wire = rt.ref(Wire, "k")
        invocation = await rt.send(wire.ref, handler_name, (100,))

        async def in_flight() -> bool:
            return executions["transfer"] == 1

        await eventually(in_flight, "the transfer step to start")
    return invocation


async def test_an_at_most_once_step_journals_its_start_before_running(db: pathlib.Path) -> None:
    await crash_in_flight(db, "at_most_once")
    async with running(db, [Wire], clock=ManualClock(T0)) as rt:
        types = await stream_types(rt.store, "actor/Wire/k")
    assert types[:2] == ["turn", "step_started"]


async def test_an_at_most_once_step_in_flight_at_a_crash_is_not_run_again(
    db: pathlib.Path,
) -> None:
    invocation = await crash_in_flight(db, "at_most_once")
    async with running(db, [Wire], clock=ManualClock(T0)) as rt:
        wire = rt.ref(Wire, "k")
        outcome = await rt.result(invocation)
        [failed] = await entries(rt, wire, "step_failed")
    assert outcome == f"unknown: {step_keys[0]}"
    assert executions == {"transfer": 1}
    assert failed.data["name"] == "transfer"
    assert failed.data["error"]["type"].endswith("StepOutcomeUnknown")


async def test_an_unknown_outcome_is_journaled_so_a_later_replay_sees_it_too(
    db: pathlib.Path,
) -> None:
    invocation = await crash_in_flight(db, "at_most_once_held")
    async with running(db, [Wire], clock=ManualClock(T0)) as rt:
        await reaches(rt.ref(Wire, "k"), "waiting-event")  # held after the unknown outcome
    wire = rt.ref(Wire, "k")
    assert await replay_held(db, [Wire], wire, invocation, clock=ManualClock(T0)) == seen[0]
    assert seen == [f"unknown: {step_keys[0]}"] * 2
    assert executions == {"transfer": 1}


async def test_a_reconcile_probe_that_finds_the_effect_returns_its_result(
    db: pathlib.Path,
) -> None:
    invocation = await crash_in_flight(db, "reconciled")
    probe_answer.append(Happened("sent 100 (found by the probe)"))
    async with running(db, [Wire], clock=ManualClock(T0)) as rt:
        assert await rt.result(invocation) == "sent 100 (found by the probe)"
        [step] = await entries(rt, rt.ref(Wire, "k"), "step")
    assert executions == {"transfer": 1}
    assert probe_keys == step_keys
    assert step.data["value"] == "sent 100 (found by the probe)"


async def test_a_reconcile_probe_that_finds_nothing_runs_the_step_again(
    db: pathlib.Path,
) -> None:
    invocation = await crash_in_flight(db, "reconciled")
    probe_answer.append(None)
    async with running(db, [Wire], clock=ManualClock(T0)) as rt:
        assert await rt.result(invocation) == "sent 100"
    assert executions == {"transfer": 2}
    assert probe_keys == [step_keys[0]]
    assert step_keys == [step_keys[0]] * 2


async def test_a_reconciled_step_replays_without_probing(db: pathlib.Path) -> None:
    invocation = await crash_in_flight(db, "reconciled_held")
    probe_answer.append(Happened("found"))
    async with running(db, [Wire], clock=ManualClock(T0)) as rt:
        await reaches(rt.ref(Wire, "k"), "waiting-event")  # held after the probe answered
    wire = rt.ref(Wire, "k")
    assert await replay_held(db, [Wire], wire, invocation, clock=ManualClock(T0)) == "found"
    assert len(probe_keys) == 1
    assert seen == ["found", "found"]


async def test_a_plain_step_in_flight_at_a_crash_runs_again_under_the_same_key(
    db: pathlib.Path,
) -> None:
    invocation = await crash_in_flight(db, "plain_steps")
    async with running(db, [Wire], clock=ManualClock(T0)) as rt:
        assert await rt.result(invocation) == ["plain 100", "sent 100"]
        types = await stream_types(rt.store, "actor/Wire/k")
    assert executions == {"plain": 1, "transfer": 2}
    assert step_keys[0] == step_keys[1]
    assert "step_started" not in types
    assert types == ["turn", "step", "step", "turn_done"]


async def test_reconcile_and_at_most_once_are_exclusive() -> None:
    class Both(Actor):
        @handler
        async def go(self) -> None:
            await self.ctx.run(plain, 1, reconcile=probe, at_most_once=True)

    async with MemoryStore() as store, Runtime(store, [Both], clock=ManualClock(T0)) as rt:
        with pytest.raises(HandlerFailed, match="reconcile= or at_most_once=True, not both"):
            await rt.ref(Both, "k").call(Both.go)
