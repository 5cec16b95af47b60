"""Non-determinism stops one actor with a clear error and resumes with matching code;
ctx.patched lets new code branch without breaking old journals."""

from __future__ import annotations

import pathlib
from collections import Counter

import anyio
import pytest

from actorflow import Actor, ActorStuckError, ManualClock, NonDeterminismError, handler
from tests.runtime.support import entries, reaches, replays_cleanly, running, settles

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

executions: Counter[str] = Counter()
patch_answers: list[bool] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    executions.clear()
    patch_answers.clear()


def reserve(item: int) -> str:
    executions["reserve"] += 1
    return f"reserved {item}"


def hold(item: int) -> str:
    executions["hold"] += 1
    return f"held {item}"


class Original(Actor, name="Same"):
    @handler
    async def go(self) -> str:
        result = await self.ctx.run(reserve, 1)
        await self.ctx.sleep(3600)
        return result


class RenamedStep(Actor, name="Same"):
    @handler
    async def go(self) -> str:
        result = await self.ctx.run(hold, 1)
        await self.ctx.sleep(3600)
        return result


class OtherInputs(Actor, name="Same"):
    @handler
    async def go(self) -> str:
        result = await self.ctx.run(reserve, 2)
        await self.ctx.sleep(3600)
        return result


class Bystander(Actor):
    @handler
    async def ping(self) -> str:
        return "pong"


async def start_original(db: pathlib.Path) -> str:
    """Run Original's turn up to its timer, then stop the process."""
    async with running(db, [Original, Bystander], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Original, "k")
        invocation = await actor.send(Original.go)
        await reaches(actor, "waiting-timer")
    return invocation


async def test_changed_code_marks_the_actor_stuck_with_a_clear_error(db: pathlib.Path) -> None:
    await start_original(db)
    async with running(db, [RenamedStep, Bystander], clock=ManualClock(T0)) as rt:
        status = await settles(rt.ref(RenamedStep, "k"))
        assert rt.hosted()["Same/k"] == "stuck"
    assert status.state == "stuck"
    assert status.error is not None
    assert "actor Same/k" in status.error
    assert "journal position 2" in status.error
    assert "the journal recorded run step 'reserve' (step id 1)" in status.error
    assert "the code now does run step 'hold' (step id 1)" in status.error
    assert executions == {"reserve": 1}


async def test_a_step_with_other_inputs_is_non_determinism(db: pathlib.Path) -> None:
    await start_original(db)
    async with running(db, [OtherInputs, Bystander], clock=ManualClock(T0)) as rt:
        status = await settles(rt.ref(OtherInputs, "k"))
    assert status.state == "stuck"
    assert status.error is not None
    assert "journal position 2" in status.error
    assert "the same step with different inputs" in status.error
    assert executions == {"reserve": 1}


async def test_other_actors_keep_working_while_one_is_stuck(db: pathlib.Path) -> None:
    await start_original(db)
    async with running(db, [RenamedStep, Bystander], clock=ManualClock(T0)) as rt:
        await settles(rt.ref(RenamedStep, "k"))
        assert await rt.ref(Bystander, "b").call(Bystander.ping) == "pong"
        assert (await rt.ref(RenamedStep, "k").status()).state == "stuck"


async def test_a_result_of_a_stuck_actor_raises_actor_stuck_error(db: pathlib.Path) -> None:
    invocation = await start_original(db)
    async with running(db, [RenamedStep, Bystander], clock=ManualClock(T0)) as rt:
        await settles(rt.ref(RenamedStep, "k"))
        with pytest.raises(ActorStuckError, match="non-deterministic replay"):
            await rt.result(invocation)


async def test_a_result_awaited_before_the_actor_gets_stuck_raises_actor_stuck_error(
    db: pathlib.Path,
) -> None:
    invocation = await start_original(db)
    async with running(db, [RenamedStep, Bystander], clock=ManualClock(T0)) as rt:
        # Recovery is replaying the actor right now; the waiter must be told it got stuck.
        with anyio.fail_after(5), pytest.raises(ActorStuckError):
            await rt.result(invocation)


async def test_restarting_with_matching_code_resumes_a_stuck_actor(db: pathlib.Path) -> None:
    invocation = await start_original(db)
    async with running(db, [RenamedStep, Bystander], clock=ManualClock(T0)) as rt:
        assert (await settles(rt.ref(RenamedStep, "k"))).state == "stuck"

    clock = ManualClock(T0 + 1800)
    async with running(db, [Original, Bystander], clock=clock) as rt:
        actor = rt.ref(Original, "k")
        await reaches(actor, "waiting-timer")
        clock.advance(1800)
        assert await rt.result(invocation) == "reserved 1"
        assert (await actor.status()).error is None
    assert executions == {"reserve": 1}


def test_non_determinism_error_names_the_actor_position_and_both_sides() -> None:
    error = NonDeterminismError("Same/k", 7, "run step 'a' (step id 3)", "sleep step 'b'")
    assert (error.actor, error.position) == ("Same/k", 7)
    assert "actor Same/k" in str(error)
    assert "journal position 7" in str(error)
    assert "recorded run step 'a' (step id 3)" in str(error)
    assert "now does sleep step 'b'" in str(error)


# -- ctx.patched -----------------------------------------------------------------------------


class BeforePatch(Actor, name="Versioned"):
    @handler
    async def go(self) -> str:
        await self.ctx.run(reserve, 1)
        await self.ctx.sleep(60)
        return "old path"

    @handler
    async def ping(self) -> str:
        return "pong"


class AfterPatch(Actor, name="Versioned"):
    @handler
    async def go(self) -> str:
        await self.ctx.run(reserve, 1)
        new = await self.ctx.patched("skip-hold")
        patch_answers.append(new)
        await self.ctx.sleep(60)
        return "new path" if new else "old path"

    @handler
    async def ping(self) -> str:
        return "pong"


async def test_a_patch_replays_an_old_journal_with_false(db: pathlib.Path) -> None:
    async with running(db, [BeforePatch], clock=ManualClock(T0)) as rt:
        before = rt.ref(BeforePatch, "k")
        invocation = await before.send(BeforePatch.go)
        await reaches(before, "waiting-timer")

    async with running(db, [AfterPatch], clock=ManualClock(T0 + 60)) as rt:
        after = rt.ref(AfterPatch, "k")
        assert await rt.result(invocation) == "old path"
        assert [e for e in await entries(rt, after, "step") if e.data["kind"] == "patch"] == []
    assert patch_answers == [False]


async def test_a_patch_reached_live_is_true_and_journaled(db: pathlib.Path) -> None:
    clock = ManualClock(T0)
    async with running(db, [AfterPatch], clock=clock) as rt:
        actor = rt.ref(AfterPatch, "k")
        invocation = await actor.send(AfterPatch.go)
        await reaches(actor, "waiting-timer")
        clock.advance(60)
        assert await rt.result(invocation) == "new path"
        [marker] = [e for e in await entries(rt, actor, "step") if e.data["kind"] == "patch"]
    assert (marker.data["name"], marker.data["value"]) == ("skip-hold", True)
    assert patch_answers == [True]


async def test_old_and_new_turns_both_replay_as_they_ran(db: pathlib.Path) -> None:
    async with running(db, [BeforePatch], clock=ManualClock(T0)) as rt:
        before = rt.ref(BeforePatch, "k")
        old = await before.send(BeforePatch.go)
        await reaches(before, "waiting-timer")

    clock = ManualClock(T0 + 60)
    async with running(db, [AfterPatch], clock=clock) as rt:
        after = rt.ref(AfterPatch, "k")
        assert await rt.result(old) == "old path"  # the old turn replays with False
        new = await after.send(AfterPatch.go)
        await reaches(after, "waiting-timer")  # the new turn journaled its marker

    clock = ManualClock(T0 + 60)
    async with running(db, [AfterPatch], clock=clock) as rt:
        after = rt.ref(AfterPatch, "k")
        await reaches(after, "waiting-timer")  # replayed: the marker says True
        clock.advance(60)
        assert await rt.result(new) == "new path"
        await replays_cleanly(after, AfterPatch.ping)
    assert patch_answers == [False, True, True]
    assert executions == {"reserve": 2}


# -- ctx.deprecate_patch -----------------------------------------------------------------------


class Deprecated(Actor, name="Versioned"):
    """`AfterPatch` once its old path is deleted: only the new one remains."""

    @handler
    async def go(self) -> str:
        await self.ctx.run(reserve, 1)
        await self.ctx.deprecate_patch("skip-hold")
        await self.ctx.sleep(60)
        return "new path"

    @handler
    async def ping(self) -> str:
        return "pong"


async def test_a_deprecated_patch_replays_turns_that_took_the_new_path(db: pathlib.Path) -> None:
    async with running(db, [AfterPatch], clock=ManualClock(T0)) as rt:
        actor = rt.ref(AfterPatch, "k")
        invocation = await actor.send(AfterPatch.go)
        await reaches(actor, "waiting-timer")  # the marker is journaled

    async with running(db, [Deprecated], clock=ManualClock(T0 + 60)) as rt:
        assert await rt.result(invocation) == "new path"
        await replays_cleanly(rt.ref(Deprecated, "k"), Deprecated.ping)
    assert executions == {"reserve": 1}


async def test_a_deprecated_patch_still_journals_its_marker_for_a_rollback(
    db: pathlib.Path,
) -> None:
    async with running(db, [Deprecated], clock=ManualClock(T0)) as rt:
        actor = rt.ref(Deprecated, "k")
        invocation = await actor.send(Deprecated.go)
        await reaches(actor, "waiting-timer")

    # rolled back to the code with both paths: the turn in flight keeps to the new one
    async with running(db, [AfterPatch], clock=ManualClock(T0 + 60)) as rt:
        assert await rt.result(invocation) == "new path"
    assert patch_answers == [True]
    assert executions == {"reserve": 1}


async def test_a_turn_from_before_the_patch_stops_at_a_deprecated_patch(db: pathlib.Path) -> None:
    async with running(db, [BeforePatch], clock=ManualClock(T0)) as rt:
        before = rt.ref(BeforePatch, "k")
        await before.send(BeforePatch.go)
        await reaches(before, "waiting-timer")

    async with running(db, [Deprecated], clock=ManualClock(T0 + 60)) as rt:
        status = await settles(rt.ref(Deprecated, "k"))
    assert status.state == "stuck"
    assert status.error is not None
    assert "a turn started before patch 'skip-hold' (on its old path)" in status.error
    assert "keep ctx.patched('skip-hold') deployed until every turn" in status.error
    assert "journal position 3" in status.error  # the old path's timer, after the step
    assert executions == {"reserve": 1}


# -- a finished conversation under changed code ------------------------------------------------


def charge(item: int) -> str:
    executions["charge"] += 1
    return f"charged {item}"


class Chat(Actor, name="Chat"):
    """The deployed version: each message reserves, then holds."""

    @handler
    async def say(self, n: int) -> str:
        await self.ctx.run(reserve, n)
        await self.ctx.run(hold, n)
        return "v1"


class ChatStepAdded(Actor, name="Chat"):
    @handler
    async def say(self, n: int) -> str:
        await self.ctx.run(reserve, n)
        await self.ctx.run(charge, n)  # new, without a patch
        await self.ctx.run(hold, n)
        return "v2"


class ChatStepRenamed(Actor, name="Chat"):
    @handler
    async def say(self, n: int) -> str:
        await self.ctx.run(reserve, n)
        await self.ctx.run(charge, n)  # was hold
        return "v2"


class ChatReordered(Actor, name="Chat"):
    @handler
    async def say(self, n: int) -> str:
        await self.ctx.run(hold, n)
        await self.ctx.run(reserve, n)
        return "v2"


@pytest.mark.parametrize("changed", [ChatStepAdded, ChatStepRenamed, ChatReordered])
async def test_a_change_to_a_finished_conversation_s_handler_does_not_affect_the_next_turn(
    db: pathlib.Path, changed: type[Actor]
) -> None:
    async with running(db, [Chat], clock=ManualClock(T0), snapshot_every=0) as rt:
        chat = rt.ref(Chat, "c")
        for n in range(3):
            assert await chat.call(Chat.say, n) == "v1"
    assert executions == {"reserve": 3, "hold": 3}

    # deployed without a patch: the finished turns are never replayed, so nothing diverges
    async with running(db, [changed], clock=ManualClock(T0), snapshot_every=0) as rt:
        invocation = await rt.send(rt.ref(changed, "c").ref, "say", (3,))
        assert await rt.result(invocation, timeout=10) == "v2"
        status = await rt.status(rt.ref(changed, "c").ref)
    assert status.state == "idle"
    assert status.turns == 4
    assert executions["reserve"] + executions["hold"] + executions["charge"] == 6 + (
        3 if changed is ChatStepAdded else 2
    )
