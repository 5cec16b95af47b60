"""The inbox across checkpoints and replays: a message is taken once, an event consumed
once, a send and its acceptance are one fact, and nothing the inbox leaves behind grows
with the actor's age."""

from __future__ import annotations

import pathlib
from collections import Counter
from typing import Any

import msgspec
import pytest

from actorflow import Actor, ManualClock, handler
from actorflow._events import ActorSnapshot
from tests.runtime.faults import FaultyStore, carrying, first_time
from tests.runtime.support import hold, reaches, replay_held, run_to_hold, running

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

runs: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    runs.clear()


class Listener(Actor):
    @handler
    async def take(self, label: str) -> Any:
        runs[label] += 1
        return await self.ctx.wait_for("x")

    @handler
    async def take_twice(self) -> list[Any]:
        first = await self.ctx.wait_for("x")
        await hold(self.ctx)
        return [first, await self.ctx.wait_for("x")]

    @handler
    async def ping(self, label: str) -> str:
        runs[label] += 1
        return label

    @handler
    async def cancelled_ping(self) -> None:
        pass


async def checkpoint(rt: Any, actor: str) -> ActorSnapshot:
    snapshot = await rt.store.load_snapshot(f"actor/{actor}")
    assert snapshot is not None
    return msgspec.msgpack.decode(snapshot.data, type=ActorSnapshot)


async def test_a_restart_takes_no_message_twice(db: pathlib.Path) -> None:
    async with running(db, [Listener], clock=ManualClock(T0)) as rt:
        listener = rt.ref(Listener, "k")
        for label in ("a", "b", "c"):
            await listener.call(Listener.ping, label)
        await reaches(listener, "idle")
    async with running(db, [Listener], clock=ManualClock(T0)) as rt:
        listener = rt.ref(Listener, "k")
        await listener.call(Listener.ping, "d")
    assert runs == {"a": 1, "b": 1, "c": 1, "d": 1}


async def test_an_event_consumed_before_a_checkpoint_is_not_delivered_again(
    db: pathlib.Path,
) -> None:
    """The event arrives after the message that consumes it: it lies beyond the inbox
    position the checkpoint folded in, so only the checkpoint's list of consumed events
    keeps a restart from buffering it again."""
    async with running(db, [Listener], clock=ManualClock(T0)) as rt:
        listener = rt.ref(Listener, "k")
        first = await listener.send(Listener.take, "first")
        await reaches(listener, "waiting-event")
        await listener.deliver("x", "x1")
        assert await rt.result(first) == "x1"
        await reaches(listener, "idle")
        folded = await checkpoint(rt, "Listener/k")
    assert folded.events == [2]  # x1, at inbox position 2, after the message at 1
    async with running(db, [Listener], clock=ManualClock(T0)) as rt:
        listener = rt.ref(Listener, "k")
        second = await listener.send(Listener.take, "second")
        await reaches(listener, "waiting-event")  # x1 is not offered again
        await listener.deliver("x", "x2")
        assert await rt.result(second) == "x2"


async def test_a_replayed_turn_leaves_no_consumed_event_in_the_buffer(db: pathlib.Path) -> None:
    async with running(db, [Listener], clock=ManualClock(T0)) as rt:
        listener = rt.ref(Listener, "k")
        await listener.deliver("x", "x1")
        invocation = await run_to_hold(listener, Listener.take_twice)
        await listener.deliver("x", "x2")
    # The replay hands back x1 from the journal; it must not also leave x1 waiting, or the
    # second wait would take it again.
    result = await replay_held(db, [Listener], listener, invocation, clock=ManualClock(T0))
    assert result == ["x1", "x2"]


class Sender(Actor):
    @handler
    async def go(self) -> str:
        return await self.ctx.send(self.ctx.ref(Listener, "r"), Listener.ping, "sent")


@pytest.mark.parametrize("mode", ["refuse", "lose_ack"])
async def test_a_send_and_its_acceptance_are_one_fact(db: pathlib.Path, mode: Any) -> None:
    """The write that journals a send fails: the message must be accepted exactly once
    (if the two were separate writes, one order loses it and the other sends it twice)."""
    faulty: list[FaultyStore] = []

    def wrap(store: Any) -> FaultyStore:
        faulty.append(FaultyStore(store, first_time(carrying("send"), mode)))
        return faulty[0]

    async with running(db, [Sender, Listener], clock=ManualClock(T0), wrap=wrap) as rt:
        sent = await rt.ref(Sender, "s").call(Sender.go)
        assert await rt.result(sent) == "sent"
        inbox = [e for e in await rt.journal(rt.ref(Listener, "r").ref) if e.type == "message"]
    assert [f.mode for f in faulty[0].faults] == [mode]
    assert [f.streams for f in faulty[0].faults] == [("actor/Sender/s", "inbox/Listener/r")]
    assert len(inbox) == 1
    assert runs == {"sent": 1}


async def test_nothing_the_inbox_leaves_behind_grows_with_the_actor_s_age(
    db: pathlib.Path,
) -> None:
    async with running(db, [Listener], clock=ManualClock(T0), snapshot_every=10) as rt:
        listener = rt.ref(Listener, "k")
        for n in range(60):
            invocation = await listener.send(Listener.take, f"t{n}")
            await listener.deliver("x", n)
            assert await rt.result(invocation) == n
            doomed = await listener.send(Listener.cancelled_ping)
            await rt.cancel(doomed)
        await reaches(listener, "idle")
        folded = await checkpoint(rt, "Listener/k")
        inbox = await rt.store.stream_info("inbox/Listener/k")
        actor = await rt.store.stream_info("actor/Listener/k")
        host = rt._hosts.get("Listener/k")
        cancels = len(host.cancels) if host is not None else 0
    assert len(folded.events) <= 2
    assert folded.pending == []
    assert inbox.last_position - inbox.first_position < 4 * 10  # at most ~10 turns' entries
    assert actor.last_position - actor.first_position < 4 * 10
    assert cancels <= 1
