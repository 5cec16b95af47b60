"""Resetting a stuck or held actor to its last turn boundary: the unfinished turn's
journal entries are exported, then discarded; its message runs again from the start
under the deployed code; the turns before it are untouched."""

from __future__ import annotations

import pathlib

import anyio
import msgspec
import pytest

from actorflow import Actor, ResetRefused, handler
from actorflow._events import actor_stream
from actorflow.runtime import _reset
from journal import SqliteStore
from tests.runtime.counted_steps import executions, quote, reserve
from tests.runtime.support import RELEASE, hold, reaches, run_to_hold, running, settles

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _reset_counts() -> None:
    executions.clear()


class Tally(msgspec.Struct):
    booked: list[str] = []


class Old(Actor, name="Cart", state=Tally):
    @handler
    async def book(self, item: str) -> str:
        await self.ctx.run(reserve, item)
        await hold(self.ctx)
        self.state.booked.append(item)
        return f"booked {item}"


class New(Actor, name="Cart", state=Tally):
    """Asks for a quote first: replaying Old's unfinished turn diverges at step 1."""

    @handler
    async def book(self, item: str) -> str:
        await self.ctx.run(quote, item)
        await self.ctx.run(reserve, item)
        self.state.booked.append(item)
        return f"booked {item} ({len(self.state.booked)} in all)"


class PinnedNew(New, name="Cart", state=Tally, versioning="pinned"):
    pass


async def stuck_on_turn(db: pathlib.Path, finished: int) -> str:
    """Old finishes ``finished`` turns, then starts one more and stops while it waits."""
    async with running(db, [Old], version="old") as rt:
        cart = rt.ref(Old, "c")
        for index in range(finished):
            done = await run_to_hold(cart, Old.book, f"done{index}")
            await rt.deliver(cart.ref, RELEASE)
            await rt.result(done)
        return await run_to_hold(cart, Old.book, "x")


@pytest.mark.parametrize("finished", [0, 2], ids=["first-turn", "after-two-turns"])
async def test_reset_discards_the_unfinished_turn_and_runs_its_message_again(
    db: pathlib.Path, finished: int
) -> None:
    invocation = await stuck_on_turn(db, finished)
    async with running(db, [New], version="new") as rt:
        cart = rt.ref(New, "c")
        assert (await settles(cart)).state == "stuck"
        reset = await rt.reset_to_last_turn(cart.ref, finished + 1)
        assert (reset.turn, reset.invocation, reset.handler) == (finished + 1, invocation, "book")
        assert reset.version == "old"
        assert [line.type for line in reset.discarded] == ["turn", "step"]
        assert reset.discarded[1].entry["name"] == "reserve"
        # The message ran again from the start under New, on the state of the last boundary.
        assert await rt.result(invocation) == f"booked x ({finished + 1} in all)"
        status = await cart.status()
        assert (status.state, status.turns, status.version) == ("idle", finished + 1, "new")
    assert executions["reserve x"] == 2  # its completed step ran again, as documented
    assert executions["quote x"] == 1
    # The reset is durable: a restart finds the actor as the reset left it.
    async with running(db, [New], version="new") as rt:
        cart = rt.ref(New, "c")
        assert await cart.call(New.book, "y") == f"booked y ({finished + 2} in all)"


async def test_a_stale_turn_number_discards_nothing(db: pathlib.Path) -> None:
    await stuck_on_turn(db, 1)
    async with running(db, [New], version="new") as rt:
        cart = rt.ref(New, "c")
        await settles(cart)
        with pytest.raises(ResetRefused, match="unfinished turn is turn 2, not 1"):
            await rt.reset_to_last_turn(cart.ref, 1)
        assert (await cart.status()).state == "stuck"
    async with await SqliteStore.open(db) as store:
        turn = await _reset.unfinished_turn(store, "Cart/c")
    assert turn is not None
    assert turn.turn == 2


async def test_an_actor_that_is_not_stuck_or_held_is_not_reset(db: pathlib.Path) -> None:
    await stuck_on_turn(db, 1)
    async with running(db, [Old], version="old") as rt:
        cart = rt.ref(Old, "c")
        await reaches(cart, "waiting-event")
        with pytest.raises(ResetRefused, match="only an actor stuck or held"):
            await rt.reset_to_last_turn(cart.ref, 2)


async def test_a_held_actor_is_reset_and_its_queued_messages_follow(db: pathlib.Path) -> None:
    first = await stuck_on_turn(db, 0)
    async with running(db, [PinnedNew], version="new") as rt:
        cart = rt.ref(PinnedNew, "c")
        await reaches(cart, "held")
        second = await cart.send(PinnedNew.book, "y")
        await rt.reset_to_last_turn(cart.ref, 1)
        assert await rt.result(first) == "booked x (1 in all)"
        assert await rt.result(second) == "booked y (2 in all)"


async def test_discard_is_refused_if_the_journal_moved_since_it_was_read(
    db: pathlib.Path,
) -> None:
    await stuck_on_turn(db, 1)
    async with await SqliteStore.open(db) as store:
        turn = await _reset.unfinished_turn(store, "Cart/c")
        assert turn is not None
        moved = msgspec.structs.replace(turn, last=turn.last - 1)
        with pytest.raises(ResetRefused, match="changed while it was being reset"):
            await _reset.discard(store, moved)
        assert await store.last_position(actor_stream("Cart/c")) == turn.last
        assert await _reset.unfinished_turn(store, "Cart/c") == turn


keys: list[tuple[str, str]] = []


def keyed(item: str, idempotency_key: str) -> str:
    keys.append((item, idempotency_key))
    return item


class KeyOld(Actor, name="Keys"):
    @handler
    async def go(self) -> None:
        await self.ctx.run(keyed, "old")
        await hold(self.ctx)


class KeyNew(Actor, name="Keys"):
    """The same step id with other inputs: its replay diverges, the reset runs it anew."""

    @handler
    async def go(self) -> None:
        await self.ctx.run(keyed, "new")


async def test_a_step_run_again_after_a_reset_keeps_its_idempotency_key(
    db: pathlib.Path,
) -> None:
    keys.clear()
    async with running(db, [KeyOld]) as rt:
        invocation = await run_to_hold(rt.ref(KeyOld, "k"), KeyOld.go)
    async with running(db, [KeyNew]) as rt:
        keys_actor = rt.ref(KeyNew, "k")
        assert (await settles(keys_actor)).state == "stuck"
        await rt.reset_to_last_turn(keys_actor.ref, 1)
        await rt.result(invocation)
    (old, old_key), (new, new_key) = keys
    assert (old, new) == ("old", "new")
    assert old_key == new_key


async def test_of_two_resets_at_once_one_discards_and_the_other_is_refused(
    db: pathlib.Path,
) -> None:
    invocation = await stuck_on_turn(db, 1)
    outcomes: list[str] = []
    async with running(db, [New], version="new") as rt:
        cart = rt.ref(New, "c")
        await settles(cart)

        async def reset() -> None:
            try:
                await rt.reset_to_last_turn(cart.ref, 2)
                outcomes.append("reset")
            except ResetRefused as exc:
                outcomes.append(str(exc))

        async with anyio.create_task_group() as group:
            group.start_soon(reset)
            group.start_soon(reset)
        assert await rt.result(invocation) == "booked x (2 in all)"
        assert (await cart.status()).error is None  # the fresh host kept its ownership
    assert sorted(outcomes) == ["actor Cart/c is being reset by another request", "reset"]
