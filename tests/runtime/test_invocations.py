"""What the runtime says about invocations is true: results forever, idempotency keys bound
to one request, stuck actors refusing work, cancellation of queued and stepless turns,
an actor's list of invocations, and an operator's retry of a failed one."""

from __future__ import annotations

import pathlib
from collections import Counter

import anyio
import msgspec
import pytest

from actorflow import (
    NO_RETRY,
    Actor,
    ActorStuckError,
    HandlerFailed,
    IdempotencyKeyReused,
    InvalidMessageError,
    InvocationNotRetryable,
    ManualClock,
    TooManyPendingEvents,
    handler,
)
from actorflow._events import ACTOR_CODEC, INBOX_CODEC, MessageAccepted, TurnStarted
from tests.runtime.support import reaches, running

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

ran: Counter[str] = Counter()
keys: list[str] = []
broken: set[str] = set()
gate: list[anyio.Event] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    ran.clear()
    keys.clear()
    broken.clear()
    gate.clear()


def step(label: str, idempotency_key: str) -> str:
    ran[label] += 1
    keys.append(idempotency_key)
    if label in broken:
        raise RuntimeError(f"{label} is broken")
    return f"{label} done"


class Approval(msgspec.Struct):
    by: str
    amount: int


class Desk(Actor, retry=NO_RETRY, events={"approval": Approval, "note": str}):
    @handler
    async def work(self, labels: list[str]) -> list[str]:
        return [await self.ctx.run(step, label) for label in labels]

    @handler
    async def echo(self, text: str, extra: dict[str, int] | None = None) -> str:
        return text

    @handler
    async def approve(self) -> str:
        approval: Approval = await self.ctx.wait_for("approval")
        return f"{approval.by} approved {approval.amount}"

    @handler
    async def stepless(self) -> str:
        await gate[0].wait()  # not a ctx wait: no step boundary to stop at
        ran["stepless"] += 1
        return "finished"


async def test_a_result_evicted_from_memory_is_read_back_from_the_journal(
    db: pathlib.Path,
) -> None:
    async with running(db, [Desk], clock=ManualClock(T0), keep_results=1) as rt:
        desk = rt.ref(Desk, "k")
        first = await desk.send(Desk.echo, "one")
        await desk.call(Desk.echo, "two")
        await desk.call(Desk.echo, "three")  # evicts "one" from memory
        with anyio.fail_after(5):
            assert await rt.result(first) == "one"


async def test_a_reused_idempotency_key_with_another_request_is_refused(
    db: pathlib.Path,
) -> None:
    async with running(db, [Desk], clock=ManualClock(T0)) as rt:
        ref = rt.ref(Desk, "k").ref
        first = await rt.send(
            ref, "echo", (), {"text": "hi", "extra": {"a": 1, "b": 2}}, idempotency_key="req-1"
        )
        # The same request (its JSON object's keys in another order) is the same invocation.
        again = await rt.send(
            ref, "echo", (), {"extra": {"b": 2, "a": 1}, "text": "hi"}, idempotency_key="req-1"
        )
        assert again == first
        with pytest.raises(IdempotencyKeyReused, match="first used for a different request"):
            await rt.send(ref, "echo", (), {"text": "bye"}, idempotency_key="req-1")
        with pytest.raises(IdempotencyKeyReused):
            await rt.send(ref, "work", (), {"labels": []}, idempotency_key="req-1")


async def test_idempotency_keys_expire_after_their_retention(db: pathlib.Path) -> None:
    clock = ManualClock(T0)
    async with running(db, [Desk], clock=clock, idempotency_retention=3600) as rt:
        ref = rt.ref(Desk, "k").ref
        first = await rt.send(ref, "echo", (), {"text": "hi"}, idempotency_key="k1")
        clock.advance(1800)
        assert await rt.expire_idempotency_keys() == 0
        assert await rt.send(ref, "echo", (), {"text": "hi"}, idempotency_key="k1") == first
        clock.advance(1801)
        assert await rt.expire_idempotency_keys() == 1
        assert await rt.store.list_streams("idempotency/") == []
        second = await rt.send(ref, "echo", (), {"text": "hi"}, idempotency_key="k1")
    assert second != first


async def test_a_stuck_actor_refuses_sends_events_cancels_and_results(db: pathlib.Path) -> None:
    class Before(Actor, name="Flip"):
        @handler
        async def go(self) -> str:
            await self.ctx.run(step, "first")
            await self.ctx.wait_for("x")
            return "old"

    class After(Actor, name="Flip"):
        @handler
        async def go(self) -> str:
            await self.ctx.sleep(1)  # not what the journal holds
            return "new"

    async with running(db, [Before], clock=ManualClock(T0)) as rt:
        invocation = await rt.ref(Before, "k").send(Before.go)
        await reaches(rt.ref(Before, "k"), "waiting-event")
    async with running(db, [After], clock=ManualClock(T0)) as rt:
        flip = rt.ref(After, "k")
        await reaches(flip, "stuck")
        with pytest.raises(ActorStuckError, match="non-deterministic"):
            await flip.send(After.go)
        with pytest.raises(ActorStuckError):
            await flip.deliver("x", 1)
        with pytest.raises(ActorStuckError):
            await rt.cancel(invocation)
        with pytest.raises(ActorStuckError):
            await rt.result(invocation)


async def test_cancelling_a_queued_invocation_cancels_it_at_once(db: pathlib.Path) -> None:
    gate.append(anyio.Event())
    async with running(db, [Desk], clock=ManualClock(T0)) as rt:
        desk = rt.ref(Desk, "k")
        busy = await desk.send(Desk.stepless)
        queued = await desk.send(Desk.work, ["never"])
        await reaches(desk, "running")
        await rt.cancel(queued)
        status = await rt.invocation(queued)
        assert status is not None
        assert status.state == "cancelled"
        with pytest.raises(HandlerFailed, match="cancelled"):
            await rt.result(queued)
        gate[0].set()
        assert await rt.result(busy) == "finished"
        await reaches(desk, "idle")
        assert (await rt.invocation(queued)).state == "cancelled"  # type: ignore[union-attr]
    assert ran == {"stepless": 1}


async def test_a_handler_without_steps_honours_cancellation(db: pathlib.Path) -> None:
    gate.append(anyio.Event())
    async with running(db, [Desk], clock=ManualClock(T0)) as rt:
        desk = rt.ref(Desk, "k")
        invocation = await desk.send(Desk.stepless)
        await reaches(desk, "running")
        await rt.cancel(invocation)
        gate[0].set()
        with pytest.raises(HandlerFailed, match="cancelled by request"):
            await rt.result(invocation)
        status = await rt.invocation(invocation)
    assert status is not None
    assert status.state == "cancelled"


async def test_an_actor_lists_its_invocations_before_and_after_a_restart(
    db: pathlib.Path,
) -> None:
    gate.append(anyio.Event())
    async with running(db, [Desk], clock=ManualClock(T0)) as rt:
        desk = rt.ref(Desk, "k")
        done = await desk.send(Desk.echo, "report")
        await rt.result(done)
        held = await desk.send(Desk.stepless)
        waiting = await desk.send(Desk.echo, "later")
        await reaches(desk, "running")
        listed = await desk.invocations()
        assert [(i.invocation, i.state) for i in listed] == [
            (held, "running"),
            (waiting, "queued"),
            (done, "completed"),
        ]
        assert listed[2].result == "report"
        gate[0].set()
        await rt.result(waiting)
    async with running(db, [Desk], clock=ManualClock(T0)) as rt:
        after = await rt.ref(Desk, "k").invocations()
    assert [(i.invocation, i.state, i.result) for i in after] == [
        (waiting, "completed", "later"),
        (held, "completed", "finished"),
        (done, "completed", "report"),
    ]


async def test_an_operator_retries_a_failed_invocation_from_its_last_journaled_step(
    db: pathlib.Path,
) -> None:
    broken.add("b")
    async with running(db, [Desk], clock=ManualClock(T0)) as rt:
        desk = rt.ref(Desk, "k")
        invocation = await desk.send(Desk.work, ["a", "b", "c"])
        with pytest.raises(HandlerFailed, match="b is broken"):
            await rt.result(invocation)
        failed = await rt.invocation(invocation)
        assert failed is not None
        assert failed.retryable
        await desk.call(Desk.echo, "something else meanwhile")
    broken.clear()  # the tool is fixed
    async with running(db, [Desk], clock=ManualClock(T0)) as rt:
        status = await rt.retry(invocation)
        assert status.state == "queued"
        assert await rt.result(invocation) == ["a done", "b done", "c done"]
        with pytest.raises(InvocationNotRetryable, match="completed"):
            await rt.retry(invocation)
    assert ran == {"a": 1, "b": 2, "c": 1}
    key_of = dict(zip(["a", "b1", "b2", "c"], keys, strict=True))
    assert key_of["b1"] == key_of["b2"]  # the failed step runs again under its own key


async def test_a_retry_is_refused_when_compensations_ran(db: pathlib.Path) -> None:
    class Saga(Actor, retry=NO_RETRY):
        @handler
        async def go(self) -> None:
            await self.ctx.run(step, "a", compensate=lambda value: None)
            raise ValueError("nope")

    async with running(db, [Saga], clock=ManualClock(T0)) as rt:
        invocation = await rt.ref(Saga, "k").send(Saga.go)
        with pytest.raises(HandlerFailed):
            await rt.result(invocation)
        with pytest.raises(InvocationNotRetryable, match="compensations ran"):
            await rt.retry(invocation)


async def test_declared_events_refuse_unknown_names_and_wrong_payloads(db: pathlib.Path) -> None:
    async with running(db, [Desk], clock=ManualClock(T0)) as rt:
        desk = rt.ref(Desk, "k")
        with pytest.raises(InvalidMessageError, match="does not wait for events called 'aproval'"):
            await desk.deliver("aproval", {"by": "ana", "amount": 3})
        with pytest.raises(InvalidMessageError, match=r"\$.amount"):
            await desk.deliver("approval", {"by": "ana", "amount": "three"})
        assert await rt.store.last_position("inbox/Desk/k") == 0  # nothing was accepted
        invocation = await desk.send(Desk.approve)
        await desk.deliver("approval", {"by": "ana", "amount": 3})
        assert await rt.result(invocation) == "ana approved 3"


async def test_events_nobody_waits_for_are_bounded_per_actor(db: pathlib.Path) -> None:
    async with running(db, [Desk], clock=ManualClock(T0), max_pending_events=3) as rt:
        desk = rt.ref(Desk, "k")
        for n in range(3):
            await desk.deliver("note", f"note {n}")
        with pytest.raises(TooManyPendingEvents, match="limit is 3"):
            await desk.deliver("note", "one too many")


async def test_step_keys_differ_between_two_journals_of_the_same_actor(
    tmp_path: pathlib.Path,
) -> None:
    for name in ("staging.db", "production.db"):
        async with running(tmp_path / name, [Desk], clock=ManualClock(T0)) as rt:
            await rt.ref(Desk, "k").call(Desk.work, ["mail"])
    staging, production = keys
    assert staging != production
    assert staging.partition(":")[2] == production.partition(":")[2] == "Desk/k/t1/s1"


async def test_a_turn_journaled_before_keys_carried_the_journal_keeps_its_old_keys(
    db: pathlib.Path,
) -> None:
    """A turn written by an older actorflow (rules 1) resumes with the keys it had."""
    async with running(db, [Desk], clock=ManualClock(T0)) as rt:
        store = rt.store
        args = msgspec.Raw(msgspec.msgpack.encode({"labels": ["x"]}))
        message = MessageAccepted("Desk/old#00ff", "work", args, T0)
        await store.append("inbox/Desk/old", [INBOX_CODEC.encode(message)])
        started = TurnStarted(1, "Desk/old#00ff", 1, "work", args, T0)  # rules=1
        await store.append("actor/Desk/old", [ACTOR_CODEC.encode(started)])
    async with running(db, [Desk], clock=ManualClock(T0)) as rt:
        assert await rt.result("Desk/old#00ff") == ["x done"]
    assert keys == ["Desk/old/t1/s1"]


async def test_an_unknown_invocation_is_an_error_not_a_wait(db: pathlib.Path) -> None:
    async with running(db, [Desk], clock=ManualClock(T0)) as rt:
        with pytest.raises(InvalidMessageError, match="no invocation"):
            await rt.result("Desk/k#0123")


@pytest.mark.parametrize("journaled", [["x done"], ["something else"]])
async def test_a_finished_turn_journaled_by_older_code_replays_once_and_is_checkpointed(
    db: pathlib.Path, journaled: list[str]
) -> None:
    """Older journals have finished turns after their last snapshot (checkpoints did not
    come with every turn): activation replays them, comparing their results (a result the
    code no longer gives is non-determinism), then checkpoints the actor the new way."""
    from actorflow._events import StepCompleted, TurnCompleted
    from actorflow._values import legacy_fingerprint

    async with running(db, [Desk], clock=ManualClock(T0)) as rt:
        store = rt.store
        args = msgspec.Raw(msgspec.msgpack.encode({"labels": ["x"]}))
        message = MessageAccepted("Desk/old#00ff", "work", args, T0)
        await store.append("inbox/Desk/old", [INBOX_CODEC.encode(message)])
        fp = legacy_fingerprint(("x",))
        done = msgspec.Raw(msgspec.msgpack.encode("x done"))
        result = msgspec.Raw(msgspec.msgpack.encode(journaled))
        entries = [
            TurnStarted(1, "Desk/old#00ff", 1, "work", args, T0),  # rules=1
            StepCompleted(1, "1", "step", "run", done, fp, at=T0),
            TurnCompleted(1, "Desk/old#00ff", result, T0, inbox=1),
        ]
        await store.append("actor/Desk/old", [ACTOR_CODEC.encode(e) for e in entries])
    async with running(db, [Desk], clock=ManualClock(T0)) as rt:
        old = rt.ref(Desk, "old")
        if journaled != ["x done"]:
            await old.send(Desk.work, ["y"])  # activates it: the old turn replays first
            await reaches(old, "stuck")
            assert "returning ['something else']" in str((await old.status()).error)
            return
        assert await old.call(Desk.work, ["y"]) == ["y done"]
        assert await rt.result("Desk/old#00ff") == ["x done"]
        status = await old.status()
        snapshot = await rt.store.load_snapshot("actor/Desk/old")
    assert status.error is None
    assert status.turns == 2
    assert ran == {"y": 1}  # the old turn's step was handed back, not run
    assert snapshot is not None


async def test_numbers_the_journal_cannot_store_are_refused_before_anything_is_accepted(
    db: pathlib.Path,
) -> None:
    class Counter_(Actor, name="Numbers"):
        @handler
        async def add(self, n: int) -> int:
            return n

    async with running(db, [Counter_], clock=ManualClock(T0)) as rt:
        numbers = rt.ref(Counter_, "k")
        with pytest.raises(InvalidMessageError, match="64 bits"):
            await numbers.send(Counter_.add, 2**64)
        with pytest.raises(InvalidMessageError, match="not encodable"):
            await numbers.deliver("n", 2**70)
        assert await rt.store.last_position("inbox/Numbers/k") == 0
