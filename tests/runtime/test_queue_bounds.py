"""A busy actor's queue: bounded (sends beyond the limit are refused, nothing accepted), and
cheap (only a page of queued messages keeps its arguments in memory; the others are read
back from the inbox when their turn comes)."""

from __future__ import annotations

import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from actorflow import Actor, ManualClock, TooManyQueuedMessages, handler
from actorflow.runtime._host import HELD_MESSAGES
from journal import Store
from tests.runtime.support import eventually, reaches, running

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


class SlowClaims:
    """A store whose claims wait for `release`: an actor it activates stays activating."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.release = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def claim(self, stream: str) -> int:
        await self.release.wait()
        return await self.inner.claim(stream)


async def test_a_send_does_not_wait_for_its_actor_s_activation(db: pathlib.Path) -> None:
    slow: list[SlowClaims] = []

    def wrap(store: Store) -> SlowClaims:
        slow.append(SlowClaims(store))
        return slow[0]

    async with running(db, [Busy], wrap=wrap, max_queued_messages=5) as rt:
        busy = rt.ref(Busy, "k")
        first = await busy.send(Busy.take, "a")  # activates the actor, which waits
        with anyio.fail_after(5):  # a send behind the activation would wait for ever
            second = await busy.send(Busy.take, "b")
        assert rt.hosted() == {"Busy/k": "pending"}  # still activating
        slow[0].release.set()
        assert await rt.result(first, timeout=10) == 1
        assert await rt.result(second, timeout=10) == 1
    assert taken == ["a", "b"]


class GatedInboxReads:
    """A store whose inbox reads, once `closed`, each wait at a gate of their own (the
    n-th read at ``gates[n]``; `waiting` counts the reads that reached theirs)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.closed = False
        self.gates = [anyio.Event(), anyio.Event()]
        self.waiting = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read_batches(self, stream: str, start: int = 1, **options: Any) -> Any:
        if self.closed and stream.startswith("inbox/") and self.waiting < len(self.gates):
            gate = self.gates[self.waiting]
            self.waiting += 1
            await gate.wait()
        async for batch in self.inner.read_batches(stream, start, **options):
            yield batch


async def test_a_message_read_while_its_notice_arrives_counts_once(db: pathlib.Path) -> None:
    """A send committed during an inbox read that picks it up is queued once, not also
    counted as unread until the next read: the queue fills to its limit, not one short."""
    gated: list[GatedInboxReads] = []

    def wrap(store: Store) -> GatedInboxReads:
        gated.append(GatedInboxReads(store))
        return gated[0]

    async with running(db, [Busy], wrap=wrap, clock=ManualClock(T0), max_queued_messages=3) as rt:
        busy = rt.ref(Busy, "k")
        await busy.send(Busy.block)
        await reaches(busy, "waiting-event")
        store = gated[0]
        store.closed = True
        await busy.send(Busy.take, "m0")  # its notice starts a read, held at the first gate

        def reads_waiting(count: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return store.waiting == count

            return check

        await eventually(reads_waiting(1), "the first read to wait")
        await busy.send(Busy.take, "m1")  # committed before the held read's query runs
        store.gates[0].set()  # it reads both; m1's notice starts a second read, held
        await eventually(reads_waiting(2), "the second read to wait")
        host = rt._hosts["Busy/k"]
        assert len(host.queued_messages()) == 2
        assert host.queue_length() == 2
        await busy.send(Busy.take, "m2")  # the third of three
        with pytest.raises(TooManyQueuedMessages):
            await busy.send(Busy.take, "m3")
        store.gates[1].set()
        await busy.deliver("go")
        await reaches(busy, "idle")
    assert taken == ["m0", "m1", "m2"]
