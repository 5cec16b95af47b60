"""Checkpoints: every turn's end checkpoints the actor in the same transaction, so a
finished turn is never replayed; a turn that fails leaves the state as it was; the journal
is truncated behind the checkpoint every few turns, and nothing is lost by it."""

from __future__ import annotations

import pathlib
from collections import Counter as Tally_
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorflow import NO_RETRY, Actor, HandlerFailed, ManualClock, Runtime, handler
from journal import MemoryStore
from tests.runtime.support import eventually, running, stream_types

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
STREAM = "actor/Ledger/k"

#: Raw executions of the deposit step, by amount; and every run of a handler's code.
executions: Tally_[int] = Tally_()
handler_runs: list[int] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    executions.clear()
    handler_runs.clear()


class Book(msgspec.Struct):
    balance: int = 0
    entries: list[str] = []
    lucky: list[float] = []


def fee(amount: int) -> int:
    executions[amount] += 1
    return amount // 10


class Ledger(Actor, state=Book):
    state: Book

    @handler
    async def deposit(self, amount: int) -> int:
        handler_runs.append(amount)
        charged = await self.ctx.run(fee, amount)
        self.state.balance += amount - charged
        self.state.entries.append(f"+{amount}-{charged}")
        return self.state.balance

    @handler
    async def withdraw(self, amount: int) -> int:
        handler_runs.append(-amount)
        if amount > self.state.balance:
            raise ValueError(f"balance {self.state.balance} is below {amount}")
        self.state.balance -= amount
        self.state.entries.append(f"-{amount}")
        return self.state.balance

    @handler
    async def overdraw(self, amount: int) -> int:
        """Change the state, then fail: the change must not stay."""
        handler_runs.append(-amount)
        self.state.balance -= amount
        self.state.entries.append(f"-{amount} (overdrawn)")
        charged = await self.ctx.run(fee, amount)
        raise ValueError(f"overdrawn by {amount + charged - self.state.balance}")

    @handler
    async def draw(self) -> float:
        value = self.ctx.random()
        self.state.lucky.append(value)
        return value

    @handler
    async def book(self) -> Book:
        return self.state


async def test_every_turn_end_checkpoints_the_actor_in_the_same_transaction(
    db: pathlib.Path,
) -> None:
    async with running(db, [Ledger], clock=ManualClock(T0), snapshot_every=0) as rt:
        ledger = rt.ref(Ledger, "k")
        for turn, amount in enumerate((100, 200, 300), start=1):
            await ledger.call(Ledger.deposit, amount)
            await eventually(lambda: _idle(rt), "the turn's end to be journaled")
            info = await rt.store.stream_info(STREAM)
            snapshot = await rt.store.load_snapshot(STREAM)
            assert snapshot is not None
            assert info.snapshot_position == info.last_position == 3 * turn
            checkpoint = msgspec.msgpack.decode(snapshot.data)
            assert (checkpoint["turn"], checkpoint["state"]["balance"]) == (
                turn,
                sum(a - a // 10 for a in (100, 200, 300)[:turn]),
            )
        assert await stream_types(rt.store, STREAM) == ["turn", "step", "turn_done"] * 3


async def _idle(rt: Runtime) -> bool:
    return (await rt.ref(Ledger, "k").status()).state == "idle"


async def test_a_restart_restores_the_checkpoint_and_replays_no_finished_turn(
    db: pathlib.Path,
) -> None:
    async with running(db, [Ledger], clock=ManualClock(T0), snapshot_every=2) as rt:
        ledger = rt.ref(Ledger, "k")
        for amount in (100, 200, 300, 400, 500):
            await ledger.call(Ledger.deposit, amount)
    handler_runs.clear()

    async with running(db, [Ledger], clock=ManualClock(T0), snapshot_every=2) as rt:
        restored = await rt.ref(Ledger, "k").call(Ledger.book)
    assert restored == Book(1350, ["+100-10", "+200-20", "+300-30", "+400-40", "+500-50"])
    assert handler_runs == []  # no turn ran again
    assert executions == {100: 1, 200: 1, 300: 1, 400: 1, 500: 1}


async def test_a_failed_turn_leaves_the_state_as_it_was_before_the_turn(db: pathlib.Path) -> None:
    async with running(db, [Ledger], clock=ManualClock(T0), retry=NO_RETRY) as rt:
        ledger = rt.ref(Ledger, "k")
        await ledger.call(Ledger.deposit, 100)
        with pytest.raises(HandlerFailed, match="overdrawn"):
            await ledger.call(Ledger.overdraw, 500)
        live = await ledger.call(Ledger.book)
    assert live == Book(90, ["+100-10"])
    async with running(db, [Ledger], clock=ManualClock(T0)) as rt:
        assert await rt.ref(Ledger, "k").call(Ledger.book) == live


async def test_the_journal_is_truncated_behind_the_checkpoint_every_few_turns(
    db: pathlib.Path,
) -> None:
    async with running(db, [Ledger], clock=ManualClock(T0), snapshot_every=2) as rt:
        ledger = rt.ref(Ledger, "k")
        for amount in (100, 200, 300, 400, 500):
            await ledger.call(Ledger.deposit, amount)
        await eventually(lambda: _idle(rt), "the last turn's end")
        actor = await rt.store.stream_info(STREAM)
        inbox = await rt.store.stream_info("inbox/Ledger/k")
    assert actor.first_position == 13  # truncated after turn 4 (positions 1-12)
    assert actor.snapshot_position == actor.last_position == 15
    assert inbox.first_position == 5  # the messages of turns 1-4
    assert inbox.last_position == 5


async def test_results_of_invocations_before_a_truncation_are_still_available(
    db: pathlib.Path,
) -> None:
    async with running(db, [Ledger], clock=ManualClock(T0), snapshot_every=1) as rt:
        ledger = rt.ref(Ledger, "k")
        first = await ledger.send(Ledger.deposit, 100)
        await ledger.call(Ledger.deposit, 200)
        assert (await rt.invocation(first)).state == "completed"  # type: ignore[union-attr]
    async with running(db, [Ledger], clock=ManualClock(T0), snapshot_every=1) as rt:
        assert await rt.result(first, timeout=5) == 90
        status = await rt.invocation(first)
    assert status is not None
    assert (status.state, status.result) == ("completed", 90)


async def test_an_actor_passivated_between_turns_is_still_truncated(db: pathlib.Path) -> None:
    options: dict[str, Any] = {"snapshot_every": 2, "idle_timeout": 0.01}
    async with running(db, [Ledger], clock=ManualClock(T0), **options) as rt:
        ledger = rt.ref(Ledger, "k")

        async def passivated() -> bool:
            return "Ledger/k" not in rt.hosted()

        for amount in (100, 200, 300, 400):
            await ledger.call(Ledger.deposit, amount)
            await eventually(passivated, "the idle actor to be passivated")
        info = await rt.store.stream_info(STREAM)
    # Four turns, snapshot_every=2: the journal must not keep growing from turn 1.
    assert info.snapshot_position > 0
    assert info.first_position > 1


async def test_actors_without_state_are_checkpointed_too(db: pathlib.Path) -> None:
    class Plain(Actor):
        @handler
        async def ping(self) -> str:
            return "pong"

    async with running(db, [Plain], clock=ManualClock(T0), snapshot_every=0) as rt:
        for _ in range(3):
            await rt.ref(Plain, "k").call(Plain.ping)
        info = await rt.store.stream_info("actor/Plain/k")
    assert (info.first_position, info.snapshot_position) == (1, 6)


# -- property: snapshots change nothing that replay gives back -------------------------------

OPERATIONS = st.one_of(
    st.tuples(st.just("deposit"), st.integers(0, 1000)),
    st.tuples(st.just("withdraw"), st.integers(0, 1500)),
    st.tuples(st.just("draw"), st.just(0)),
)


async def run_turns(
    store: MemoryStore, snapshot_every: int, turns: list[tuple[str, int]]
) -> tuple[list[Any], Book]:
    """Run the turns live, then restart on the same store: the state read back after the
    restart must be the one the live run ended with. Return the outcomes and that state."""
    outcomes: list[Any] = []
    options: dict[str, Any] = {"clock": ManualClock(T0), "snapshot_every": snapshot_every}
    async with Runtime(store, [Ledger], **options) as rt:
        ledger = rt.ref(Ledger, "k")
        for name, amount in turns:
            args = () if name == "draw" else (amount,)
            invocation = await rt.send(ledger.ref, name, args)
            try:
                outcomes.append(await rt.result(invocation, timeout=5))
            except HandlerFailed as exc:
                outcomes.append(exc.error_type)
        live = await ledger.call(Ledger.book)
    async with Runtime(store, [Ledger], **options) as rt:
        restored = await rt.ref(Ledger, "k").call(Ledger.book)
    assert restored == live
    return outcomes, restored


def without_draws(outcomes: list[Any], book: Book) -> tuple[list[Any], Book]:
    """Random draws are seeded by invocation ids, which differ between two runs."""
    kept = [o for o in outcomes if not isinstance(o, float)]
    return kept, Book(book.balance, book.entries, [0.0] * len(book.lucky))


@settings(max_examples=30, deadline=None)
@given(turns=st.lists(OPERATIONS, min_size=1, max_size=9))
async def test_replay_from_a_snapshot_gives_the_same_state_as_replay_from_the_start(
    turns: list[tuple[str, int]],
) -> None:
    executions.clear()
    async with MemoryStore() as plain, MemoryStore() as snapshotted:
        without = await run_turns(plain, 0, turns)
        steps_without = dict(executions)
        executions.clear()
        with_snapshots = await run_turns(snapshotted, 2, turns)
        assert without_draws(*with_snapshots) == without_draws(*without)
        # Each deposit's step ran once in the live run; neither replay ran it again.
        assert dict(executions) == steps_without
        info = await snapshotted.stream_info(STREAM)
    assert info.snapshot_position > 0  # every run has at least two turns: one snapshot
