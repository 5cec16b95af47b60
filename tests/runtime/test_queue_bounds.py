"""A busy actor's queue: bounded (sends beyond the limit are refused, nothing accepted), and
cheap (only a page of queued messages keeps its arguments in memory; the others are read
back from the inbox when their turn comes)."""

from __future__ import annotations

import pathlib

import pytest

from actorflow import Actor, ManualClock, TooManyQueuedMessages, handler
from actorflow.runtime._host import HELD_MESSAGES
from tests.runtime.support import reaches, running

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

taken: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    taken.clear()


class Busy(Actor):
    @handler
    async def block(self) -> None:
        await self.ctx.wait_for("go")

    @handler
    async def take(self, text: str) -> int:
        taken.append(text)
        return len(text)


async def test_sends_beyond_the_queue_limit_are_refused_and_accept_nothing(
    db: pathlib.Path,
) -> None:
    async with running(db, [Busy], clock=ManualClock(T0), max_queued_messages=5) as rt:
        busy = rt.ref(Busy, "k")
        await busy.send(Busy.block)
        await reaches(busy, "waiting-event")
        first = await rt.send(busy.ref, "take", ("a",), idempotency_key="k-a")
        for n in range(4):
            await busy.send(Busy.take, f"m{n}")
        before = await rt.store.last_position("inbox/Busy/k")
        with pytest.raises(TooManyQueuedMessages, match="limit is 5"):
            await busy.send(Busy.take, "one too many")
        assert await rt.store.last_position("inbox/Busy/k") == before
        # A retry of an accepted request still gets its invocation, full queue or not.
        assert await rt.send(busy.ref, "take", ("a",), idempotency_key="k-a") == first
        await busy.deliver("go")
        await reaches(busy, "idle")
        assert await busy.call(Busy.take, "room again") == 10
    assert taken == ["a", "m0", "m1", "m2", "m3", "room again"]


async def test_only_a_page_of_queued_messages_keeps_its_arguments_in_memory(
    db: pathlib.Path,
) -> None:
    count = 3 * HELD_MESSAGES + 5
    async with running(db, [Busy], clock=ManualClock(T0)) as rt:
        busy = rt.ref(Busy, "k")
        await busy.send(Busy.block)
        await reaches(busy, "waiting-event")
        for n in range(count):
            await busy.send(Busy.take, f"message {n} " + "x" * 1000)
        host = rt._hosts["Busy/k"]
        await host.read_new()
        queued = host.queued_messages()
        held = [q for q in queued if q.message is not None]
        assert len(queued) == count
        assert len(held) <= HELD_MESSAGES
        await busy.deliver("go")
        await reaches(busy, "idle")
    assert [t.partition(" x")[0] for t in taken] == [f"message {n}" for n in range(count)]
