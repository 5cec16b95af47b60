"""The status API and the readable journal: what an actor is doing, and what it did."""

from __future__ import annotations

import pathlib
from collections.abc import Awaitable, Callable

import anyio
import pytest

from actorflow import Actor, ActorRef, ActorStatus, JournalEntry, ManualClock, handler
from tests.runtime.support import eventually, reaches, running

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

#: Lets a test hold a step function open (the actor is then "running").
gates: dict[str, anyio.Event] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    gates.clear()


async def held(label: str) -> str:
    gates[label] = anyio.Event()
    await gates[label].wait()
    return label


class Worker(Actor):
    @handler
    async def busy(self) -> str:
        return await self.ctx.run(held, "busy")

    @handler
    async def nap(self) -> None:
        await self.ctx.sleep(60)

    @handler
    async def approval(self) -> bool:
        approved: bool = await self.ctx.wait_for("approved", type=bool)
        return approved

    @handler
    async def echo(self, text: str) -> str:
        return text


async def test_an_actor_running_a_step_is_running_with_its_invocation(db: pathlib.Path) -> None:
    async with running(db, [Worker], clock=ManualClock(T0)) as rt:
        worker = rt.ref(Worker, "k")
        invocation = await worker.send(Worker.busy)
        await eventually(_gate_open("busy"), "the step to start")
        status = await worker.status()
        assert (status.actor, status.state, status.invocation, status.turns) == (
            "Worker/k",
            "running",
            invocation,
            1,
        )
        assert rt.hosted() == {"Worker/k": "running"}
        gates["busy"].set()
        assert await rt.result(invocation) == "busy"


async def test_an_actor_in_a_durable_sleep_is_waiting_timer(db: pathlib.Path) -> None:
    clock = ManualClock(T0)
    async with running(db, [Worker], clock=clock) as rt:
        worker = rt.ref(Worker, "k")
        invocation = await worker.send(Worker.nap)
        await reaches(worker, "waiting-timer")
        assert (await worker.status()).invocation == invocation
        clock.advance(60)
        await rt.result(invocation)


async def test_an_actor_waiting_for_an_event_is_waiting_event(db: pathlib.Path) -> None:
    async with running(db, [Worker], clock=ManualClock(T0)) as rt:
        worker = rt.ref(Worker, "k")
        invocation = await worker.send(Worker.approval)
        await reaches(worker, "waiting-event")
        assert (await worker.status()).invocation == invocation
        await worker.deliver("approved", True)
        assert await rt.result(invocation) is True


async def test_an_actor_with_nothing_to_do_is_idle_with_no_invocation(db: pathlib.Path) -> None:
    async with running(db, [Worker], clock=ManualClock(T0)) as rt:
        worker = rt.ref(Worker, "k")
        await worker.call(Worker.echo, "one")
        await worker.call(Worker.echo, "two")
        await reaches(worker, "idle")
        status = await worker.status()
        assert (status.invocation, status.turns, status.error) == (None, 2, None)


async def test_an_idle_actor_reads_the_same_before_and_after_a_restart(
    db: pathlib.Path,
) -> None:
    async with running(db, [Worker], clock=ManualClock(T0)) as rt:
        assert (await rt.status(ActorRef("Worker", "nobody"))) == ActorStatus(
            "Worker/nobody", "idle", None, 0
        )
        await rt.ref(Worker, "k").call(Worker.echo, "done")
        await reaches(rt.ref(Worker, "k"), "idle")
        before = await rt.status(ActorRef("Worker", "k"))
    async with running(db, [Worker], clock=ManualClock(T0)) as rt:
        after = await rt.status(ActorRef("Worker", "k"))
        assert rt.hosted() == {}
    version = rt.versions["Worker"]
    assert version.startswith("src-")  # none given: derived from the class's source
    assert before == after == ActorStatus("Worker/k", "idle", None, 1, version=version)


async def test_the_journal_reads_as_plain_entries_in_order(db: pathlib.Path) -> None:
    async with running(db, [Worker], clock=ManualClock(T0)) as rt:
        worker = rt.ref(Worker, "k")
        invocation = await worker.send(Worker.echo, "hello")
        await rt.result(invocation)
        journal = await rt.journal(worker.ref)
    assert all(isinstance(entry, JournalEntry) for entry in journal)
    assert [(e.stream, e.position, e.type) for e in journal] == [
        ("actor", 1, "turn"),
        ("actor", 2, "turn_done"),
        ("inbox", 1, "message"),
    ]
    started, done, message = journal
    assert started.data["handler"] == "echo"
    assert started.data["args"] == {"text": "hello"}
    assert started.data["invocation"] == invocation
    assert done.data["result"] == "hello"
    assert message.data["args"] == {"text": "hello"}
    assert started.at == T0


async def test_the_journal_shows_steps_timers_and_events_decoded(db: pathlib.Path) -> None:
    clock = ManualClock(T0)
    async with running(db, [Worker], clock=clock) as rt:
        worker = rt.ref(Worker, "k")
        naps = await worker.send(Worker.nap)
        await reaches(worker, "waiting-timer")
        clock.advance(60)
        await rt.result(naps)
        await worker.deliver("approved", True)
        await worker.call(Worker.approval)
        journal = await rt.journal(worker.ref)
    actor = [
        (e.type, e.data.get("kind"), e.data.get("name")) for e in journal if e.stream == "actor"
    ]
    assert actor == [
        ("turn", None, None),
        ("timer", "sleep", "sleep"),
        ("turn_done", None, None),
        ("turn", None, None),
        ("step", "event", "approved"),
        ("turn_done", None, None),
    ]
    [event] = [e for e in journal if e.type == "event"]
    assert (event.data["name"], event.data["payload"]) == ("approved", True)


def _gate_open(label: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return label in gates

    return check
