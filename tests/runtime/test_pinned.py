"""versioning="pinned": a turn in flight that another code version started, whose replay
under this process's code diverges, is held (not stuck) until its version runs again;
versioning="upgrade" (the default) moves it to the new code at once."""

from __future__ import annotations

import pathlib

import anyio
import pytest

from actorflow import Actor, ActorDefinitionError, ActorStuckError, handler
from tests.runtime.counted_steps import charge, executions, quote, reserve
from tests.runtime.support import RELEASE, hold, reaches, run_to_hold, running, settles

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _reset() -> None:
    executions.clear()


class TripA(Actor, name="Trip", versioning="pinned"):
    @handler
    async def book(self, item: str) -> str:
        await self.ctx.run(reserve, item)
        await hold(self.ctx)
        return await self.ctx.run(charge, item)


class TripB(Actor, name="Trip", versioning="pinned"):
    """Version B asks for a quote first: the replay of A's turns diverges at step 1."""

    @handler
    async def book(self, item: str) -> str:
        await self.ctx.run(quote, item)
        await self.ctx.run(reserve, item)
        await hold(self.ctx)
        return await self.ctx.run(charge, item)


class TripBCompatible(Actor, name="Trip", versioning="pinned"):
    """Version B that only changes what happens after the journaled steps."""

    @handler
    async def book(self, item: str) -> str:
        await self.ctx.run(reserve, item)
        await hold(self.ctx)
        await self.ctx.run(quote, item)
        return await self.ctx.run(charge, item)


class UpgradeTripB(Actor, name="Trip"):
    """TripB, declared with the default versioning ("upgrade")."""

    @handler
    async def book(self, item: str) -> str:
        await self.ctx.run(quote, item)
        return await self.ctx.run(charge, item)


async def start_on_a(db: pathlib.Path) -> str:
    """Version A starts a turn and stops while it waits."""
    async with running(db, [TripA], version="A") as rt:
        return await run_to_hold(rt.ref(TripA, "t"), TripA.book, "x")


def test_versioning_is_checked_with_the_class() -> None:
    with pytest.raises(ActorDefinitionError, match="versioning='sometimes'; use 'upgrade' or"):

        class Bad(Actor, versioning="sometimes"):  # type: ignore[call-arg]
            @handler
            async def go(self) -> None: ...

    assert TripA.__actorflow_versioning__ == "pinned"
    assert UpgradeTripB.__actorflow_versioning__ == "upgrade"


async def test_a_pinned_turn_that_would_diverge_is_held_with_the_reason(db: pathlib.Path) -> None:
    await start_on_a(db)
    async with running(db, [TripB], version="B") as rt:
        actor = rt.ref(TripB, "t")
        await reaches(actor, "held")
        status = await actor.status()
        assert rt.hosted() == {"Trip/t": "held"}
        assert status.version == "A"
        assert status.error is not None
        assert "turn 1 was started by code version 'A'" in status.error
        assert "this process runs 'B'" in status.error
        assert "the journal recorded run step 'reserve' (step id 1)" in status.error
        assert "the code now does run step 'quote' (step id 1)" in status.error
        assert [s.actor for s in await rt.list_actors(state="held")] == ["Trip/t"]
    assert executions == {"reserve x": 1}


async def test_a_held_actor_accepts_messages_and_its_waiters_wait(db: pathlib.Path) -> None:
    first = await start_on_a(db)
    async with running(db, [TripB], version="B") as rt:
        actor = rt.ref(TripB, "t")
        await reaches(actor, "held")
        second = await actor.send(TripB.book, "y")  # accepted, not refused
        with anyio.move_on_after(0.2) as waited:
            await rt.result(first)
        assert waited.cancelled_caught  # no ActorStuckError: it waits
        assert (await rt.invocation(second)).state == "queued"  # type: ignore[union-attr]
    assert executions == {"reserve x": 1}
    # Version A runs again: the held turn finishes there, then the queued message runs.
    async with running(db, [TripA], version="A") as rt:
        await rt.deliver(rt.ref(TripA, "t").ref, RELEASE)
        assert await rt.result(first) == "charged x"
        await reaches(rt.ref(TripA, "t"), "waiting-event")
        await rt.deliver(rt.ref(TripA, "t").ref, RELEASE)
        assert await rt.result(second) == "charged y"
    assert executions == {"reserve x": 1, "charge x": 1, "reserve y": 1, "charge y": 1}


async def test_a_pinned_turn_that_replays_cleanly_moves_on_under_the_new_code(
    db: pathlib.Path,
) -> None:
    invocation = await start_on_a(db)
    async with running(db, [TripBCompatible], version="B") as rt:
        actor = rt.ref(TripBCompatible, "t")
        await reaches(actor, "waiting-event")
        await rt.deliver(actor.ref, RELEASE)
        assert await rt.result(invocation) == "charged x"
    assert executions == {"reserve x": 1, "quote x": 1, "charge x": 1}


async def test_an_upgrade_turn_that_diverges_is_stuck(db: pathlib.Path) -> None:
    invocation = await start_on_a(db)
    async with running(db, [UpgradeTripB], version="B") as rt:
        status = await settles(rt.ref(UpgradeTripB, "t"))
        assert status.state == "stuck"
        with pytest.raises(ActorStuckError, match="non-deterministic replay"):
            await rt.result(invocation)


async def test_a_pinned_turn_diverging_under_its_own_version_is_stuck(db: pathlib.Path) -> None:
    """The same version diverging is a bug in that code, not a deploy: nothing to wait for."""
    await start_on_a(db)
    async with running(db, [TripB], version="A") as rt:
        status = await settles(rt.ref(TripB, "t"))
        assert status.state == "stuck"
        assert status.error is not None
        assert "non-deterministic replay" in status.error
