"""Durable budgets: reservations decided in the journal, settled with step results,
inherited by called actors, and released when an invocation ends."""

from __future__ import annotations

import contextlib
import pathlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
import pytest

import actorflow
from actorflow import (
    NO_RETRY,
    Actor,
    Budget,
    BudgetExceeded,
    HandlerFailed,
    ManualClock,
    Runtime,
    Spend,
    handler,
)
from actorflow._budget import LEDGER_CODEC, Amount, Reserved, Settled, ledger_stream
from journal import MemoryStore, SqliteStore
from tests.runtime.support import crashing, reaches, running

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
#: Raw executions of each step function, by name.
calls: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


class Usage(msgspec.Struct):
    total_tokens: int


def llm(tokens: int) -> Usage:
    calls["llm"] += 1
    return Usage(tokens)


def tool(name: str) -> str:
    calls[name] += 1
    return name


def broken() -> None:
    calls["broken"] += 1
    raise ValueError("no")


async def forever() -> None:
    calls["forever"] += 1
    await anyio.sleep_forever()


def by_usage(result: Usage) -> Spend:
    return Spend(tokens=result.total_tokens, llm_calls=1)


class Agent(Actor):
    @handler
    async def think(self, rounds: int, tokens: int) -> list[str]:
        """Call the model ``rounds`` times, stopping gracefully when the budget ends."""
        done: list[str] = []
        for n in range(rounds):
            try:
                await self.ctx.run(
                    llm, tokens, reserve=Spend(tokens=tokens, llm_calls=1), spend=by_usage
                )
            except BudgetExceeded as exc:
                done.append(f"stopped:{exc.dimension}")
                return done
            done.append(f"round{n}")
        return done

    @handler
    async def think_then_wait(self, tokens: int) -> list[str]:
        done = await self.think(2, tokens)
        await self.ctx.wait_for("go")
        return done

    @handler
    async def tools(self, names: list[str]) -> int:
        for name in names:
            await self.ctx.run(tool, name, reserve=Spend(tool_calls=1, cost="USD 0.25"))
        return len(names)

    @handler
    async def delegate(self, rounds: int, tokens: int) -> list[list[str]]:
        helper = self.ctx.ref(Agent, f"{self.key}-helper")
        out: list[list[str]] = await self.ctx.gather(
            self.ctx.call(helper, Agent.think, rounds, tokens),
            self.ctx.call(self.ctx.ref(Agent, f"{self.key}-other"), Agent.think, rounds, tokens),
        )
        return out

    @handler
    async def once(self, tokens: int) -> int:
        try:
            await self.ctx.run(llm, tokens, reserve=Spend(tokens=tokens))
        except BudgetExceeded:
            return 0
        return 1

    @handler
    async def fan(self, helpers: int, tokens: int) -> int:
        calls = [
            self.ctx.call(self.ctx.ref(Agent, f"{self.key}-{n}"), Agent.once, tokens)
            for n in range(helpers)
        ]
        done: list[int] = await self.ctx.gather(*calls)
        return sum(done)

    @handler
    async def fail_then_wait(self) -> str:
        with contextlib.suppress(ValueError):
            await self.ctx.run(broken, reserve=Spend(tokens=50), retry=NO_RETRY)
        await self.ctx.wait_for("go")
        return "done"

    @handler
    async def race(self) -> int:
        winner, _ = await self.ctx.first(
            self.ctx.run(forever, reserve=Spend(tokens=50)), self.ctx.wait_for("stop")
        )
        return int(winner)

    @handler
    async def carve(self, share: int, rounds: int, tokens: int) -> list[str]:
        helper = self.ctx.ref(Agent, f"{self.key}-carved")
        try:
            done: list[str] = await self.ctx.call(
                helper, Agent.think, rounds, tokens, budget=Budget(tokens=share)
            )
        except BudgetExceeded as exc:
            return [f"refused:{exc.dimension}"]
        return done

    @handler
    async def carve_waiting(self, share: int) -> int:
        helper = self.ctx.ref(Agent, f"{self.key}-carved")
        tokens: int = await self.ctx.call(
            helper, Agent.wait_then_spend, 10, budget=Budget(tokens=share)
        )
        return tokens

    @handler
    async def wait_then_spend(self, tokens: int) -> int:
        await self.ctx.run(llm, tokens, reserve=Spend(tokens=tokens))
        await self.ctx.wait_for("go")
        await self.ctx.run(llm, tokens, reserve=Spend(tokens=tokens))
        return tokens


class Capped(Actor, budget=Budget(llm_calls=2)):
    @handler
    async def think(self, rounds: int) -> int:
        n = 0
        for _ in range(rounds):
            await self.ctx.run(llm, 5, spend=by_usage)
            n += 1
        return n


async def ledger(runtime: Runtime, invocation: str) -> list[Any]:
    stream = ledger_stream(invocation)
    return [LEDGER_CODEC.decode(r) async for r in runtime.store.read(stream)]


async def test_a_step_that_does_not_fit_raises_before_it_runs_and_the_handler_finishes(
    db: pathlib.Path,
) -> None:
    async with running(db, [Agent]) as runtime:
        invocation = await runtime.send(
            actorflow.ActorRef("Agent", "a"), "think", (3, 40), budget=Budget(tokens=100)
        )
        assert await runtime.result(invocation) == ["round0", "round1", "stopped:tokens"]
        assert calls["llm"] == 2
        status = await runtime.budget(invocation)
        assert status is not None
        assert status.spent.tokens == 80
        assert status.spent.llm_calls == 2
        assert status.reserved == Spend()
        assert status.holds == 0
        assert status.remaining == {"tokens": 20}


async def test_without_a_budget_reserve_and_spend_cost_nothing(db: pathlib.Path) -> None:
    async with running(db, [Agent]) as runtime:
        invocation = await runtime.send(actorflow.ActorRef("Agent", "a"), "think", (3, 40))
        assert await runtime.result(invocation) == ["round0", "round1", "round2"]
        assert await runtime.budget(invocation) is None


async def test_the_refusal_replays_at_the_same_point(db: pathlib.Path) -> None:
    """A turn replayed from its journal meets BudgetExceeded where it met it live, though
    by then its ledger would have room: the decision is the journal's, not made again."""
    ref = actorflow.ActorRef("Agent", "r")
    async with crashing(db, [Agent]) as runtime:
        invocation = await runtime.send(ref, "think_then_wait", (60,), budget=Budget(tokens=100))
        await reaches(runtime.ref(Agent, "r"), "waiting-event")
    store = await SqliteStore.open(db)
    try:  # give the ledger room again behind the actor's back
        refund = Settled("refund", Amount(tokens=-60), T0)
        await store.append(ledger_stream(invocation), [LEDGER_CODEC.encode(refund)])
    finally:
        await store.close()
    async with running(db, [Agent]) as runtime:
        await runtime.deliver(ref, "go", None)
        assert await runtime.result(invocation) == ["round0", "stopped:tokens"]
        kinds = [e.data.get("kind") for e in await runtime.journal(ref) if e.stream == "actor"]
    assert calls["llm"] == 1
    assert kinds.count("budget") == 2


async def test_settlement_is_what_spend_says_and_cost_adds_up_exactly(db: pathlib.Path) -> None:
    async with running(db, [Agent]) as runtime:
        ref = actorflow.ActorRef("Agent", "t")
        budget = Budget(cost="USD 1.00", tool_calls=10)
        invocation = await runtime.send(ref, "tools", (["a", "b", "c", "d", "e"],), budget=budget)
        with pytest.raises(HandlerFailed, match="budget exceeded on cost"):
            await runtime.result(invocation)
        assert sum(calls.values()) == 4
        status = await runtime.budget(invocation)
        assert status is not None
        assert status.spent == Spend(cost="USD 1", tool_calls=4)
        assert status.remaining == {"tool_calls": 6, "cost": "USD 0"}
        records = await ledger(runtime, invocation)
        assert sum(isinstance(r, Reserved) for r in records) == 4
        assert sum(isinstance(r, Settled) for r in records) == 4


async def test_called_actors_spend_from_the_root_budget(db: pathlib.Path) -> None:
    async with running(db, [Agent]) as runtime:
        ref = actorflow.ActorRef("Agent", "root")
        invocation = await runtime.send(ref, "delegate", (4, 30), budget=Budget(tokens=150))
        results = await runtime.result(invocation)
        rounds = sum(r.startswith("round") for branch in results for r in branch)
        assert rounds == 5  # 150 tokens, 30 each, across both helpers
        assert calls["llm"] == 5
        status = await runtime.budget(invocation)
        assert status is not None
        assert status.spent.tokens == 150
        assert await runtime.budget(invocation.replace("root", "root-helper")) is None


async def test_an_actor_type_default_budget(db: pathlib.Path) -> None:
    async with running(db, [Capped]) as runtime:
        invocation = await runtime.send(actorflow.ActorRef("Capped", "c"), "think", (5,))
        with pytest.raises(HandlerFailed, match="budget exceeded on llm_calls"):
            await runtime.result(invocation)
        assert calls["llm"] == 2
        status = await runtime.budget(invocation)
        assert status is not None
        assert status.limit == Budget(llm_calls=2)


async def test_an_unfinished_turn_keeps_its_reservation_across_a_crash_and_releases_it_at_its_end(
    db: pathlib.Path,
) -> None:
    ref = actorflow.ActorRef("Agent", "w")
    async with crashing(db, [Agent]) as runtime:
        invocation = await runtime.send(ref, "wait_then_spend", (10,), budget=Budget(tokens=100))
        await runtime_eventually_spent(runtime, invocation, 10)
    async with running(db, [Agent]) as runtime:
        status = await runtime.budget(invocation)
        assert status is not None
        assert status.spent.tokens == 10
        await runtime.deliver(ref, "go", None)
        assert await runtime.result(invocation) == 10
        status = await runtime.budget(invocation)
        assert status is not None
        assert status.spent.tokens == 20
        assert status.holds == 0
    assert calls["llm"] == 2


async def runtime_eventually_spent(runtime: Runtime, invocation: str, tokens: int) -> None:
    from tests.runtime.support import eventually

    async def check() -> bool:
        status = await runtime.budget(invocation)
        return status is not None and status.spent.tokens == tokens

    await eventually(check, f"{tokens} tokens spent")


@pytest.fixture
async def memory_runtime() -> AsyncIterator[Runtime]:
    async with Runtime(MemoryStore(), [Agent], clock=ManualClock(T0)) as runtime:
        yield runtime


async def test_wall_time_is_checked_at_each_reservation(memory_runtime: Runtime) -> None:
    clock = memory_runtime.clock
    assert isinstance(clock, ManualClock)
    ref = actorflow.ActorRef("Agent", "slow")
    invocation = await memory_runtime.send(
        ref, "wait_then_spend", (1,), budget=Budget(wall_time=60)
    )
    await runtime_eventually_spent(memory_runtime, invocation, 1)
    clock.advance(61)
    await memory_runtime.deliver(ref, "go", None)
    with pytest.raises(HandlerFailed, match="budget exceeded on wall_time"):
        await memory_runtime.result(invocation)
    assert calls["llm"] == 1


@pytest.mark.parametrize("store", ["sqlite", "memory"])
async def test_parallel_reservations_from_many_actors_never_overbook(
    db: pathlib.Path, store: str
) -> None:
    """Twelve actors reserve from one ledger at once: each reservation is appended at the
    ledger position its decision read, so exactly as many fit as the limit allows."""
    ref = actorflow.ActorRef("Agent", "fan")
    if store == "sqlite":
        context = running(db, [Agent])
    else:
        context = Runtime(MemoryStore(), [Agent])
    async with context as runtime:
        invocation = await runtime.send(ref, "fan", (12, 30), budget=Budget(tokens=100))
        assert await runtime.result(invocation) == 3
        status = await runtime.budget(invocation)
        assert status is not None
        assert status.spent.tokens == 90
    assert calls["llm"] == 3


async def test_a_failed_step_releases_its_hold_with_its_error(db: pathlib.Path) -> None:
    ref = actorflow.ActorRef("Agent", "f")
    async with running(db, [Agent]) as runtime:
        invocation = await runtime.send(ref, "fail_then_wait", (), budget=Budget(tokens=100))
        await reaches(runtime.ref(Agent, "f"), "waiting-event")
        status = await runtime.budget(invocation)
        assert status is not None
        assert (status.holds, status.spent, status.remaining) == (0, Spend(), {"tokens": 100})
        await runtime.deliver(ref, "go", None)
        assert await runtime.result(invocation) == "done"
    assert calls["broken"] == 1


async def test_the_end_of_an_invocation_releases_what_its_steps_still_hold(
    db: pathlib.Path,
) -> None:
    """A step cancelled mid-way (its ctx.first branch lost) never settles: its hold is
    released, unspent, with the turn's end."""
    ref = actorflow.ActorRef("Agent", "race")
    async with running(db, [Agent]) as runtime:
        invocation = await runtime.send(ref, "race", (), budget=Budget(tokens=100))
        await runtime_eventually_holding(runtime, invocation)
        await runtime.deliver(ref, "stop", None)
        assert await runtime.result(invocation) == 1
        status = await runtime.budget(invocation)
        assert status is not None
        assert (status.holds, status.spent, status.remaining) == (0, Spend(), {"tokens": 100})
    assert calls["forever"] == 1


async def runtime_eventually_holding(runtime: Runtime, invocation: str) -> None:
    from tests.runtime.support import eventually

    async def check() -> bool:
        status = await runtime.budget(invocation)
        return status is not None and status.holds == 1

    await eventually(check, "a hold")


async def test_a_carved_sub_budget_is_reserved_whole_and_settled_with_what_it_spent(
    db: pathlib.Path,
) -> None:
    ref = actorflow.ActorRef("Agent", "p")
    async with running(db, [Agent]) as runtime:
        invocation = await runtime.send(ref, "carve", (60, 3, 25), budget=Budget(tokens=100))
        assert await runtime.result(invocation) == ["round0", "round1", "stopped:tokens"]
        root = await runtime.budget(invocation)
        assert root is not None
        assert (root.spent.tokens, root.holds, root.remaining) == (50, 0, {"tokens": 50})
        (child,) = await runtime.invocations(actorflow.ActorRef("Agent", "p-carved"))
        carved = await runtime.budget(child.invocation)
        assert carved is not None
        assert carved.limit == Budget(tokens=60)
        assert (carved.spent.tokens, carved.remaining) == (50, {"tokens": 10})
        records = await ledger(runtime, child.invocation)
        assert type(records[-1]).__name__ == "Closed"


async def test_a_carve_that_does_not_fit_is_refused_before_the_message_is_sent(
    db: pathlib.Path,
) -> None:
    ref = actorflow.ActorRef("Agent", "q")
    async with running(db, [Agent]) as runtime:
        invocation = await runtime.send(ref, "carve", (101, 3, 25), budget=Budget(tokens=100))
        assert await runtime.result(invocation) == ["refused:tokens"]
        assert await runtime.invocations(actorflow.ActorRef("Agent", "q-carved")) == []
    assert calls["llm"] == 0


async def test_a_carve_must_limit_what_its_parent_limits(db: pathlib.Path) -> None:
    ref = actorflow.ActorRef("Agent", "m")
    async with running(db, [Agent]) as runtime:
        budget = Budget(tokens=100, llm_calls=5)
        invocation = await runtime.send(ref, "carve", (50, 1, 5), budget=budget)
        with pytest.raises(HandlerFailed, match="leaves out llm_calls"):
            await runtime.result(invocation)


async def test_a_caller_replays_its_carved_call_after_a_crash(db: pathlib.Path) -> None:
    ref = actorflow.ActorRef("Agent", "cw")
    helper = actorflow.ActorRef("Agent", "cw-carved")
    async with crashing(db, [Agent]) as runtime:
        invocation = await runtime.send(ref, "carve_waiting", (40,), budget=Budget(tokens=100))
        await reaches(runtime.ref(Agent, "cw-carved"), "waiting-event")
    async with running(db, [Agent]) as runtime:
        await runtime.deliver(helper, "go", None)
        assert await runtime.result(invocation) == 10
        root = await runtime.budget(invocation)
        assert root is not None
        assert (root.spent.tokens, root.holds, root.remaining) == (20, 0, {"tokens": 80})
    assert calls["llm"] == 2
