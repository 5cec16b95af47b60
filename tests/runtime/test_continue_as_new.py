"""ctx.continue_as_new: a long single invocation ends its journal segment and goes on in
a fresh one, with its state, events and queue, its identity, and the code deployed when
the next segment starts."""

from __future__ import annotations

import pathlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from actorflow import (
    Actor,
    ContextMisuseError,
    HandlerFailed,
    InvalidMessageError,
    ManualClock,
    MessageTooLarge,
    Runtime,
    UnknownHandlerError,
    handler,
    testing,
)
from actorflow._events import ActorSnapshot, TurnStarted
from actorflow.runtime import _inspect
from journal import MemoryStore, SqliteStore, Store, StreamAppend
from tests.runtime.faults import FaultyStore, actor_entries, first_time
from tests.runtime.support import (
    RELEASE,
    eventually,
    hold,
    reaches,
    running,
    settles,
    stream_types,
)

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
STREAM = "actor/Looper/k"

#: Executions of each step, by name; and the `n` of every run of the handler's code.
executions: Counter[str] = Counter()
handler_runs: list[int] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    executions.clear()
    handler_runs.clear()


def tick(n: int, i: int) -> str:
    executions[f"tick {n}.{i}"] += 1
    return f"{n}.{i}"


class Progress(msgspec.Struct):
    ticks: list[str] = []


class Looper(Actor, name="Looper", state=Progress):
    """Three steps per segment; ``until`` segments; the last waits for `RELEASE` when
    ``hold_last`` so that a test can restart the process mid-segment."""

    state: Progress

    @handler
    async def loop(self, n: int, until: int, hold_last: bool = False) -> list[str]:
        handler_runs.append(n)
        for i in range(3):
            self.state.ticks.append(await self.ctx.run(tick, n, i))
        if n < until:
            await self.ctx.continue_as_new(self.loop, n + 1, until, hold_last)
        if hold_last:
            await hold(self.ctx)
        return self.state.ticks

    @handler
    async def count(self) -> int:
        return len(self.state.ticks)


async def first_turn(store: Store) -> TurnStarted:
    """The first record of the actor's journal, a turn's start."""
    async for record in store.read(STREAM):
        return msgspec.msgpack.decode(record.data, type=TurnStarted)
    raise AssertionError("the journal is empty")


def expected(until: int) -> list[str]:
    return [f"{n}.{i}" for n in range(1, until + 1) for i in range(3)]


async def test_the_caller_gets_the_last_segments_result_and_every_step_ran_once(
    db: pathlib.Path,
) -> None:
    async with running(db, [Looper], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Looper, "k")
        invocation = await actor.send(Looper.loop, 1, 5)
        assert await rt.result(invocation) == expected(5)
        status = await rt.invocation(invocation)
        assert status is not None
        assert status.state == "completed"
        assert (await actor.status()).turns == 5  # one turn per segment, one invocation
        # Each segment's journal went with it: only the last one is left.
        assert await stream_types(rt.store, STREAM) == ["turn", "step", "step", "step", "turn_done"]
        started = await first_turn(rt.store)
        assert (started.turn, started.invocation, started.handler) == (5, invocation, "loop")
    assert executions == dict.fromkeys([f"tick {e}" for e in expected(5)], 1)
    assert handler_runs == [1, 2, 3, 4, 5]


async def test_a_restart_replays_only_the_segment_in_flight(db: pathlib.Path) -> None:
    async with running(db, [Looper], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Looper, "k")
        invocation = await actor.send(Looper.loop, 1, 4, True)
        await reaches(actor, "waiting-event")
    assert handler_runs == [1, 2, 3, 4]

    async with running(db, [Looper], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Looper, "k")
        await reaches(actor, "waiting-event")
        assert handler_runs == [1, 2, 3, 4, 4]  # the segment in flight, and nothing before
        await rt.deliver(actor.ref, RELEASE)
        assert await rt.result(invocation) == expected(4)
    assert executions == dict.fromkeys([f"tick {e}" for e in expected(4)], 1)


async def test_queued_messages_and_pending_events_are_carried_to_the_next_segment(
    db: pathlib.Path,
) -> None:
    async with running(db, [Looper], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Looper, "k")
        looping = await actor.send(Looper.loop, 1, 3, True)
        counting = await actor.send(Looper.count)  # queued behind the whole invocation
        await rt.deliver(actor.ref, RELEASE)  # delivered before any segment waits for it
        assert await rt.result(looping) == expected(3)
        assert await rt.result(counting) == 9


async def test_a_cancelled_invocation_stops_in_the_segment_it_reached(db: pathlib.Path) -> None:
    async with running(db, [Looper], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Looper, "k")
        invocation = await actor.send(Looper.loop, 1, 3, True)
        await reaches(actor, "waiting-event")  # in its third segment
        await rt.cancel(invocation)
        status = await settles(actor)
        outcome = await rt.invocation(invocation)
        assert outcome is not None
        assert outcome.state == "cancelled"
        assert status.turns == 3
        # The finished segments' work stays; the cancelled one's is undone with its turn.
        assert await actor.call(Looper.count) == 6


def _refuse_second_segment(appends: Sequence[StreamAppend]) -> bool:
    return any(
        isinstance(entry, TurnStarted) and entry.turn == 2 for entry in actor_entries(appends)
    )


class LooperV2(Actor, name="Looper", state=Progress):
    """A deploy changed the step of every segment (`tick` -> `tock`): a finished segment
    replayed under it would diverge."""

    state: Progress

    @handler
    async def loop(self, n: int, until: int, hold_last: bool = False) -> list[str]:
        handler_runs.append(n)
        for i in range(3):
            self.state.ticks.append(await self.ctx.run(tock, n, i))
        if n < until:
            await self.ctx.continue_as_new(self.loop, n + 1, until, hold_last)
        return self.state.ticks


def tock(n: int, i: int) -> str:
    executions[f"tock {n}.{i}"] += 1
    return f"{n}.{i}"


async def test_a_process_stopped_between_segments_starts_the_next_one_on_the_new_code(
    db: pathlib.Path,
) -> None:
    def faulty(store: Any) -> FaultyStore:
        return FaultyStore(store, first_time(_refuse_second_segment, times=1_000))

    async with running(db, [Looper], wrap=faulty, clock=ManualClock(T0)) as rt:
        actor = rt.ref(Looper, "k")
        invocation = await actor.send(Looper.loop, 1, 2)

        async def between() -> bool:
            return rt.hosted().get("Looper/k") == "retrying"

        await eventually(between, "the second segment's start to fail")
    assert handler_runs == [1]

    store = await SqliteStore.open(db)
    try:
        snapshot = await store.load_snapshot(STREAM)
        assert snapshot is not None
        checkpoint = msgspec.msgpack.decode(snapshot.data, type=ActorSnapshot)
        assert checkpoint.continuation is not None
        assert checkpoint.continuation.invocation == invocation
        assert await stream_types(store, STREAM) == []  # the first segment is gone
        view = await _inspect.view(store, "Looper/k")  # what status shows, not hosted
        assert view.unfinished is not None
        assert (view.unfinished.invocation, view.unfinished.turn) == (invocation, 2)
    finally:
        await store.close()

    async with running(db, [LooperV2], clock=ManualClock(T0), version="v2") as rt:
        actor = rt.ref(LooperV2, "k")
        assert await rt.result(invocation) == expected(2)
        assert (await first_turn(rt.store)).version == "v2"
        assert (await actor.status()).version == "v2"
    assert handler_runs == [1, 2]
    assert executions == {"tick 1.0": 1, "tick 1.1": 1, "tick 1.2": 1} | {
        "tock 2.0": 1,
        "tock 2.1": 1,
        "tock 2.2": 1,
    }


class Misuse(Actor, name="Misuse"):
    @handler
    async def in_branch(self) -> None:
        await self.ctx.gather(self.ctx.continue_as_new(self.in_branch))

    @handler
    async def in_step(self) -> None:
        async def step() -> None:
            await self.ctx.continue_as_new(self.in_step)

        await self.ctx.run(step)

    @handler
    async def with_compensation(self) -> None:
        await self.ctx.run(tick, 0, 0, compensate=undo)
        await self.ctx.continue_as_new(self.with_compensation)

    @handler
    async def unknown(self) -> None:
        await self.ctx.continue_as_new("nope")

    @handler
    async def wrong_type(self, n: int) -> None:
        await self.ctx.continue_as_new(self.wrong_type, "not a number")

    @handler
    async def too_large(self, text: str) -> None:
        await self.ctx.continue_as_new(self.too_large, "x" * 100_000)


def undo(value: str) -> None:
    executions[f"undo {value}"] += 1


@pytest.mark.parametrize(
    ("name", "error", "words"),
    [
        ("in_branch", ContextMisuseError, "inside a ctx.gather or ctx.first branch"),
        ("in_step", ContextMisuseError, "inside a step"),
        ("with_compensation", ContextMisuseError, "compensations registered in this segment"),
        ("unknown", UnknownHandlerError, "has no handler 'nope'"),
        ("wrong_type", InvalidMessageError, "Expected `int`"),
        ("too_large", MessageTooLarge, "over the"),
    ],
)
async def test_continue_as_new_is_refused_where_the_next_segment_could_not_go_on(
    name: str, error: type[Exception], words: str
) -> None:
    store = MemoryStore(max_record_bytes=65536)  # large values off: the record limit applies
    async with Runtime(store, [Misuse], clock=ManualClock(T0), value_threshold=0) as rt:
        actor = rt.ref(Misuse, "k")
        args: tuple[Any, ...] = {"wrong_type": (1,), "too_large": ("",)}.get(name, ())
        invocation = await actor.send(name, *args)
        with pytest.raises(HandlerFailed) as raised:
            await rt.result(invocation)
        assert words in str(raised.value)
        assert error.__name__ in str(raised.value)
        assert (await settles(actor)).turns == 1  # nothing continued


class LooperEarlyChange(Actor, name="Looper", state=Progress):
    """A deploy changed the step of every segment but the last (`tick` -> `tock` while
    ``n < until``): only the segment in flight replays, and it did not change."""

    state: Progress

    @handler
    async def loop(self, n: int, until: int, hold_last: bool = False) -> list[str]:
        step = tock if n < until else tick
        for i in range(3):
            self.state.ticks.append(await self.ctx.run(step, n, i))
        if n < until:
            await self.ctx.continue_as_new(self.loop, n + 1, until, hold_last)
        if hold_last:
            await hold(self.ctx)
        return self.state.ticks


async def test_the_deploy_check_replays_only_the_segment_in_flight(db: pathlib.Path) -> None:
    async with running(db, [Looper], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Looper, "k")
        await actor.send(Looper.loop, 1, 3, True)
        await reaches(actor, "waiting-event")  # in its third segment
    executions.clear()

    finished_segments_changed = await testing.replay_async([LooperEarlyChange], journal=db)
    assert (finished_segments_changed.checked, finished_segments_changed.ok) == (1, True)
    every_segment_changed = await testing.replay_async([LooperV2], journal=db)
    assert [d.actor for d in every_segment_changed.diverged] == ["Looper/k"]
    assert not executions  # a check executes nothing


class LooperAsksFirst(Actor, name="Looper", state=Progress):
    """A deploy added a step before each segment's ticks, without a patch: the segment
    in flight diverges and the actor is stuck until it is reset."""

    state: Progress

    @handler
    async def loop(self, n: int, until: int, hold_last: bool = False) -> list[str]:
        await self.ctx.run(tock, n, -1)
        for i in range(3):
            self.state.ticks.append(await self.ctx.run(tick, n, i))
        if n < until:
            await self.ctx.continue_as_new(self.loop, n + 1, until, hold_last)
        return self.state.ticks


async def test_a_reset_runs_the_segment_in_flight_again_from_its_start(db: pathlib.Path) -> None:
    async with running(db, [Looper], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Looper, "k")
        invocation = await actor.send(Looper.loop, 1, 2, True)
        await reaches(actor, "waiting-event")  # in its second segment, turn 2
    executions.clear()

    async with running(db, [LooperAsksFirst], clock=ManualClock(T0)) as rt:
        actor = rt.ref(LooperAsksFirst, "k")
        assert (await settles(actor)).state == "stuck"
        reset = await rt.reset_to_last_turn(actor.ref, 2)
        assert (reset.turn, reset.invocation) == (2, invocation)
        # The second segment starts again from the continuation its first one left.
        assert await rt.result(invocation) == expected(2)
        assert (await actor.status()).turns == 2
    assert executions == {"tock 2.-1": 1, "tick 2.0": 1, "tick 2.1": 1, "tick 2.2": 1}
