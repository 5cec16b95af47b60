"""Sync step functions run in worker threads (a blocking tool never stalls other agents),
at most ``step_threads`` at once; async ones run on the event loop."""

from __future__ import annotations

import pathlib
import threading
import time

import pytest

from actorflow import Actor, ManualClock, Runtime, handler
from journal import MemoryStore
from tests.runtime.support import reaches, running

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

#: Set by the quick actor's step; awaited (with a bound) by the blocking step.
other_ran = threading.Event()
running_now = [0, 0]  # (now, most at once)
lock = threading.Lock()
threads: dict[str, str] = {}  # tool -> the thread it ran in


@pytest.fixture(autouse=True)
def _reset() -> None:
    other_ran.clear()
    running_now[:] = [0, 0]
    threads.clear()


def blocking_tool() -> bool:
    """Blocks its thread until the other actor ran a turn (or 5 s pass)."""
    threads["blocking"] = threading.current_thread().name
    return other_ran.wait(timeout=5)


async def quick_tool() -> str:
    threads["quick"] = threading.current_thread().name
    other_ran.set()
    return "quick"


def busy(seconds: float) -> None:
    with lock:
        running_now[0] += 1
        running_now[1] = max(running_now[1], running_now[0])
    time.sleep(seconds)
    with lock:
        running_now[0] -= 1


class Tools(Actor):
    @handler
    async def block(self) -> bool:
        ok: bool = await self.ctx.run(blocking_tool)
        return ok

    @handler
    async def quick(self) -> str:
        return str(await self.ctx.run(quick_tool))

    @handler
    async def many(self, count: int) -> None:
        await self.ctx.gather(*(self.ctx.run(busy, 0.05) for _ in range(count)))

    @handler
    async def key_in_thread(self) -> list[str]:
        ctx = self.ctx

        def both(idempotency_key: str) -> list[str]:
            return [idempotency_key, ctx.idempotency_key]

        result: list[str] = await ctx.run(both)
        return result


async def test_a_blocking_sync_step_does_not_stall_other_actors(db: pathlib.Path) -> None:
    async with running(db, [Tools], clock=ManualClock(T0)) as rt:
        blocked = await rt.ref(Tools, "a").send(Tools.block)
        assert await rt.ref(Tools, "b").call(Tools.quick) == "quick"
        # The blocking step saw the other actor's step run while it blocked its thread.
        assert await rt.result(blocked) is True
    main = threading.main_thread().name
    assert threads["blocking"] != main  # the sync step ran in a worker thread
    assert threads["quick"] == main  # the async step ran on the loop


async def test_sync_steps_run_at_most_step_threads_at_once(db: pathlib.Path) -> None:
    async with running(db, [Tools], clock=ManualClock(T0), step_threads=2) as rt:
        await rt.ref(Tools, "k").call(Tools.many, 6)
    assert running_now[1] == 2


async def test_a_sync_step_sees_its_idempotency_key_in_its_thread(db: pathlib.Path) -> None:
    async with running(db, [Tools], clock=ManualClock(T0)) as rt:
        from_keyword, from_ctx = await rt.ref(Tools, "k").call(Tools.key_in_thread)
    assert from_keyword == from_ctx
    assert from_keyword.endswith(":Tools/k/t1/s1")


async def test_a_step_thread_still_running_at_shutdown_is_abandoned_within_grace(
    db: pathlib.Path,
) -> None:
    release = threading.Event()

    def stuck_tool() -> str:
        release.wait(timeout=10)
        return "late"

    class Slow(Actor):
        @handler
        async def go(self) -> str:
            return str(await self.ctx.run(stuck_tool))

    started = time.monotonic()
    try:
        async with running(db, [Slow], clock=ManualClock(T0), grace=0.2) as rt:
            await rt.ref(Slow, "k").send(Slow.go)
            await reaches(rt.ref(Slow, "k"), "running")
        assert time.monotonic() - started < 5
    finally:
        release.set()


def test_step_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="step_threads"):
        Runtime(MemoryStore(), [Tools], step_threads=0)
