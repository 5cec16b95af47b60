"""The journal failing under a turn is never a step outcome: handler code cannot see it or
act on it; the turn stops, the actor says why (``retrying``), and a fresh activation
replays it from what the journal holds. A step result too large to journal is a step
failure the handler does see: typed, journaled once, the same on replay."""

from __future__ import annotations

import pathlib
from collections import Counter
from typing import Any

import anyio
import pytest

from actorflow import NO_RETRY, Actor, ManualClock, Runtime, StepResultTooLarge, handler
from journal import SqliteStore, Store
from tests.runtime.faults import FaultyStore, carrying, first_time
from tests.runtime.support import eventually, hold, reaches, replay_held, run_to_hold, running

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0

#: Executions of the paid step, by idempotency key; what the handler's except branch did.
paid: Counter[str] = Counter()
reactions: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    paid.clear()
    reactions.clear()


def pay(amount: int, idempotency_key: str) -> str:
    paid[idempotency_key] += 1
    return f"paid {amount}"


def big(size: int) -> bytes:
    return b"x" * size


class Payer(Actor, retry=NO_RETRY):
    @handler
    async def checkout(self, amount: int) -> str:
        try:
            receipt = await self.ctx.run(pay, amount)
        except Exception as exc:  # what a handler might do with a failed step
            reactions.append(f"{type(exc).__name__}: {exc}")
            await self.ctx.run(pay, -amount, name="apology_credit")
            return "compensated by hand"
        return receipt

    @handler
    async def fetch(self, size: int) -> str:
        try:
            data = await self.ctx.run(big, size)
        except StepResultTooLarge as exc:
            reactions.append(str(exc))
            outcome = f"too large: {exc.size} > {exc.limit}"
        else:
            outcome = f"got {len(data)}"
        await hold(self.ctx)
        return outcome


def _pay_step(appends: Any) -> bool:
    return carrying("run", name="pay")(appends)


@pytest.mark.parametrize("mode", ["refuse", "lose_ack"])
async def test_a_failed_step_write_never_reaches_the_handler(db: pathlib.Path, mode: Any) -> None:
    faulty: list[FaultyStore] = []

    def wrap(store: Store) -> FaultyStore:
        faulty.append(FaultyStore(store, first_time(_pay_step, mode)))
        return faulty[-1]

    async with running(db, [Payer], clock=ManualClock(T0), wrap=wrap) as rt:
        assert await rt.ref(Payer, "k").call(Payer.checkout, 30) == "paid 30"
        status = await rt.ref(Payer, "k").status()
    assert [fault.mode for fault in faulty[0].faults] == [mode]
    assert reactions == []  # the except branch never ran
    assert "apology_credit" not in str(await _names(db))
    # The step was in flight when its write failed: it ran again under the same key
    # (refused), or its journaled result was handed back (acknowledgement lost).
    assert list(paid.values()) == ([2] if mode == "refuse" else [1])
    assert status.state == "idle"
    assert status.error is None


async def _names(db: pathlib.Path) -> list[str]:
    async with running(db, [Payer], clock=ManualClock(T0)) as rt:
        return [e.data.get("name", "") for e in await rt.journal(rt.ref(Payer, "k").ref)]


async def test_an_actor_whose_journal_fails_says_retrying_and_why(db: pathlib.Path) -> None:
    failing = [True]

    def rule(appends: Any, index: int) -> Any:
        return "refuse" if failing[0] and _pay_step(appends) else None

    async with running(
        db, [Payer], clock=ManualClock(T0), wrap=lambda s: FaultyStore(s, rule)
    ) as rt:
        payer = rt.ref(Payer, "k")
        invocation = await payer.send(Payer.checkout, 5)

        async def retrying() -> bool:
            return (await payer.status()).state == "retrying"

        await eventually(retrying, "the actor to say it is retrying")
        status = await payer.status()
        assert status.error is not None
        assert "injected failure" in status.error
        assert reactions == []
        failing[0] = False  # the disk has room again
        assert await rt.result(invocation) == "paid 5"


async def test_a_full_disk_under_a_turn_is_retried_not_shown_to_the_handler(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "small.db"
    store = await SqliteStore.open(path, max_bytes=256 * 1024)
    try:
        async with Runtime(store, [Payer], clock=ManualClock(T0)) as rt:
            payer = rt.ref(Payer, "k")
            invocation = await payer.send(Payer.fetch, 400_000)

            async def retrying() -> bool:
                status = await payer.status()
                return status.state == "retrying" and "full" in (status.error or "")

            await eventually(retrying, "the full disk to stop the turn")
            assert reactions == []
            assert (await rt.invocation(invocation)).state == "running"  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_a_closed_store_under_a_turn_stops_it_without_the_handler_seeing_it(
    db: pathlib.Path,
) -> None:
    store = await SqliteStore.open(db)
    gate = anyio.Event()

    async def slow_pay(amount: int) -> str:
        await gate.wait()
        return f"paid {amount}"

    class Slow(Actor, retry=NO_RETRY):
        @handler
        async def go(self) -> str:
            try:
                return await self.ctx.run(slow_pay, 1)
            except Exception as exc:
                reactions.append(repr(exc))
                return "reacted"

    async with Runtime(store, [Slow], clock=ManualClock(T0)) as rt:
        await rt.ref(Slow, "k").send(Slow.go)
        await reaches(rt.ref(Slow, "k"), "running")
        await store.close()
        gate.set()

        async def stopped() -> bool:
            return rt.hosted().get("Slow/k") in ("retrying", None)

        await eventually(stopped, "the turn to stop")
    assert reactions == []


async def test_a_step_result_over_the_record_limit_is_a_typed_step_failure(
    db: pathlib.Path,
) -> None:
    store = await SqliteStore.open(db, max_record_bytes=64 * 1024)
    try:
        # Large values off (on, the result is a value: tests/runtime/test_big_values.py).
        async with Runtime(store, [Payer], clock=ManualClock(T0), value_threshold=0) as rt:
            payer = rt.ref(Payer, "k")
            invocation = await run_to_hold(payer, Payer.fetch, 100_000)
            failures = [e for e in await rt.journal(payer.ref) if e.type == "step_failed"]
    finally:
        await store.close()
    [failed] = failures
    assert failed.data["error"]["type"] == "actorflow._errors.StepResultTooLarge"
    assert reactions
    assert "record limit of 65,536 bytes" in reactions[0]
    assert "max_record_bytes" in reactions[0]
    # Replay hands back the same error without calling the step again.
    store = await SqliteStore.open(db, max_record_bytes=64 * 1024)
    try:
        async with Runtime(store, [Payer], clock=ManualClock(T0)) as rt:
            await rt.deliver(payer.ref, "release")
            outcome = await rt.result(invocation)
    finally:
        await store.close()
    assert outcome.startswith("too large: ")
    assert len(reactions) == 2
    assert reactions[0] == reactions[1]


async def test_a_ten_megabyte_step_result_is_journaled_by_default(db: pathlib.Path) -> None:
    async with running(db, [Payer], clock=ManualClock(T0)) as rt:
        payer = rt.ref(Payer, "k")
        invocation = await run_to_hold(payer, Payer.fetch, 10_000_000)
    assert await replay_held(db, [Payer], payer, invocation, clock=ManualClock(T0)) == (
        "got 10000000"
    )
    assert reactions == []
