"""Workers sharing a PostgreSQL journal, in one test process: two runtimes, each on its
own `PostgresStore` (its own connections, as two processes would have) and its own worker
id. What crosses processes for real (SIGKILL, SIGSTOP, rolling deploys) is tested in
tests/cluster/; here: leases, hand-offs, fencing and placement, step by step."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
import pytest

import actorflow
from actorflow import ClusterOptions, Runtime
from actorflow.cluster import WorkerInfo, eligible, ranked
from journal import PostgresStore, StreamAppend
from tests.runtime.faults import FaultyStore, Mode
from tests.runtime.support import eventually

pytestmark = pytest.mark.anyio


class Stepper(actorflow.Actor):
    """Runs ``n`` durable steps, each returning the name of the worker that ran it;
    waits for the event ``go`` halfway when asked. Each worker runs its own subclass
    (same type name and build id), which knows the worker's name."""

    WORKER = ""

    @actorflow.handler
    async def run(self, n: int, pause: bool = False) -> list[str]:
        done = []
        for step in range(n):
            if pause and step == n // 2:
                await self.ctx.wait_for("go")
            done.append(await self.ctx.run(self.who, name="work"))
        return done

    def who(self) -> str:
        return self.WORKER


def stepper(worker: str, versioning: str = "upgrade") -> type[Stepper]:
    return type(
        f"Stepper_{worker}", (Stepper,), {"WORKER": worker}, name="Stepper", versioning=versioning
    )


@contextlib.asynccontextmanager
async def worker(
    dsn: str,
    name: str,
    version: str = "v1",
    versioning: str = "upgrade",
    *,
    wrap: Callable[[PostgresStore], Any] | None = None,
    **options: object,
) -> AsyncIterator[Runtime]:
    """A worker on its own store (``wrap``: what the runtime gets in its place)."""
    store = await PostgresStore.open(dsn, notify_prefixes=("inbox/", "outcomes/"))
    cluster = ClusterOptions(worker_id=name, **options)  # type: ignore[arg-type]
    actors = [stepper(name, versioning)]
    shared = store if wrap is None else wrap(store)
    try:
        async with Runtime(shared, actors, cluster=cluster, version=version) as runtime:
            yield runtime
    finally:
        await store.close()


def pause_heartbeats(runtime: Runtime) -> anyio.Event:
    """Keep ``runtime``'s heartbeats from arriving, as if its process were paused, until
    the event returned is set."""
    never = anyio.Event()

    async def paused(*args: object) -> set[str]:
        await never.wait()
        return set()

    assert runtime.worker is not None
    runtime.worker.leases.renew = paused  # type: ignore[method-assign]
    return never


async def hosts(runtime: Runtime, actor: str, state: str | None) -> None:
    """Wait until ``runtime`` hosts ``actor`` in ``state`` (None: no longer hosts it)."""

    async def check() -> bool:
        return runtime.hosted().get(actor) == state

    await eventually(check, f"{actor} to be {state} on {runtime.worker and runtime.worker.id}")


async def test_a_message_sent_to_one_worker_is_run_by_one_and_its_result_read_by_another(
    postgres_dsn: str,
) -> None:
    async with worker(postgres_dsn, "w1") as one, worker(postgres_dsn, "w2") as two:
        ref = one.ref(Stepper, "a")
        invocation = await ref.send(Stepper.run, 3)
        with anyio.fail_after(20):
            result = await two.result(invocation)
        assert len(set(result)) == 1  # every step on one worker
        hosting = [r for r in (one, two) if "Stepper/a" in r.hosted()]
        assert len(hosting) == 1
        assert {r.worker.id for r in hosting} == set(result)  # type: ignore[union-attr]


async def test_a_stopping_worker_hands_its_turn_over_at_a_step_boundary(
    postgres_dsn: str,
) -> None:
    async with worker(postgres_dsn, "w1") as one:
        invocation = await one.ref(Stepper, "b").send(Stepper.run, 4, True)
        await hosts(one, "Stepper/b", "waiting-event")
        async with worker(postgres_dsn, "w2") as two:
            report = await one.shutdown(5)
            assert report.checkpointed == 1
            await two.ref(Stepper, "b").deliver("go")
            with anyio.fail_after(20):
                result = await two.result(invocation)
            assert result == ["w1", "w1", "w2", "w2"]


def test_placement_prefers_a_pinned_turns_version_then_the_newest() -> None:
    old = WorkerInfo("w-old", 10, 0, {"T": "v1"}, started_at=1.0)
    new = WorkerInfo("w-new", 10, 0, {"T": "v2"}, started_at=2.0)
    also_new = WorkerInfo("w-new2", 10, 0, {"T": "v2"}, started_at=3.0)
    fleet = [old, new, also_new]
    assert eligible("T", fleet, pinned=True, in_flight="v1") == ["w-old"]
    assert eligible("T", fleet, pinned=False, in_flight="v1") == ["w-new", "w-new2"]
    assert eligible("T", fleet, pinned=True, in_flight=None) == ["w-new", "w-new2"]
    assert eligible("T", [new, also_new], pinned=True, in_flight="v1") == ["w-new", "w-new2"]
    assert eligible("Other", fleet, pinned=False, in_flight=None) == []


def test_rendezvous_ranking_spreads_actors_evenly() -> None:
    workers = ["w1", "w2", "w3"]
    firsts = [ranked(f"T/{n}", workers)[0] for n in range(3000)]
    counts = {w: firsts.count(w) for w in workers}
    assert all(800 < c < 1200 for c in counts.values()), counts
    assert ranked("T/1", workers) == ranked("T/1", list(reversed(workers)))


async def test_a_worker_whose_heartbeats_stopped_is_fenced_and_gives_its_actor_up(
    postgres_dsn: str,
) -> None:
    async with worker(postgres_dsn, "w1", lease_ttl=0.6) as one:
        invocation = await one.ref(Stepper, "c").send(Stepper.run, 4, True)
        await hosts(one, "Stepper/c", "waiting-event")
        never = pause_heartbeats(one)
        assert one.worker is not None
        async with worker(postgres_dsn, "w2", lease_ttl=0.6) as two:
            await hosts(two, "Stepper/c", "waiting-event")  # after the lease expired
            assert "Stepper/c" in one.hosted()  # w1 still believes it owns it
            await two.ref(Stepper, "c").deliver("go")  # both hear it; only w2 may write
            with anyio.fail_after(20):
                result = await two.result(invocation)
            await hosts(one, "Stepper/c", None)  # w1's append was refused: it let go
            assert result == ["w1", "w1", "w2", "w2"]
            assert one.worker.lost == 1
            never.set()


async def test_a_worker_whose_lease_was_taken_while_its_actor_retried_gives_the_actor_up(
    postgres_dsn: str,
) -> None:
    """An actor whose journal failed is activated again after a pause; in a fleet only while
    its worker still holds its lease. A worker whose heartbeats stopped (paused past the
    TTL) and whose actor was retrying must not claim the actor back from the worker that
    took it over: that worker finishes the run."""
    failing = {"armed": False}

    def refuse_once(appends: Sequence[StreamAppend], index: int) -> Mode | None:
        if failing["armed"] and any(p.stream == "actor/Stepper/d" for p in appends):
            failing["armed"] = False
            return "refuse"  # a transient failure: the actor says `retrying`
        return None

    faults: list[FaultyStore] = []

    def faulty(store: PostgresStore) -> FaultyStore:
        faults.append(FaultyStore(store, refuse_once))
        return faults[0]

    async with worker(postgres_dsn, "w1", wrap=faulty, lease_ttl=0.6) as one:
        invocation = await one.ref(Stepper, "d").send(Stepper.run, 4, True)
        await hosts(one, "Stepper/d", "waiting-event")
        never = pause_heartbeats(one)
        async with worker(postgres_dsn, "w2", lease_ttl=0.6) as two:
            await hosts(two, "Stepper/d", "waiting-event")  # after the lease expired
            activations = one.metrics.activations
            failing["armed"] = True
            await two.ref(Stepper, "d").deliver("go")  # w1's next step fails to land
            with anyio.fail_after(20):
                result = await two.result(invocation)
            assert result == ["w1", "w1", "w2", "w2"]

            async def given_up() -> bool:
                return one.worker is not None and one.worker.lost == 1

            await eventually(given_up, "w1 to give the actor up")
            assert [fault.streams for fault in faults[0].faults] == [("actor/Stepper/d",)]
            assert "Stepper/d" not in one.hosted()
            assert one.metrics.activations == activations  # never activated again
            never.set()


async def test_a_retry_whose_lease_cannot_be_looked_at_waits_another_pause(
    postgres_dsn: str,
) -> None:
    """Taking the lease again before a retry fails (the database is unreachable): the actor
    stays `retrying` and is tried again after a longer pause, then finishes its run here."""
    failing = {"append": False, "lease": False}

    def refuse_once(appends: Sequence[StreamAppend], index: int) -> Mode | None:
        if failing["append"] and any(p.stream == "actor/Stepper/e" for p in appends):
            failing["append"] = False
            return "refuse"
        return None

    async with worker(
        postgres_dsn, "w1", wrap=lambda store: FaultyStore(store, refuse_once)
    ) as one:
        assert one.worker is not None
        leases = one.worker.leases
        acquire_many = leases.acquire_many
        refused: list[list[str]] = []

        async def unreachable_once(names: Sequence[str], *args: Any) -> dict[str, int]:
            if failing["lease"]:
                failing["lease"] = False
                refused.append(list(names))
                raise OSError("the database is unreachable")
            return await acquire_many(names, *args)

        leases.acquire_many = unreachable_once  # type: ignore[method-assign]
        invocation = await one.ref(Stepper, "e").send(Stepper.run, 4, True)
        await hosts(one, "Stepper/e", "waiting-event")
        activations = one.metrics.activations
        failing["append"] = failing["lease"] = True
        await one.ref(Stepper, "e").deliver("go")
        with anyio.fail_after(20):
            assert await one.result(invocation) == ["w1"] * 4
        assert refused == [["actor/Stepper/e"]]
        assert one.metrics.activations == activations + 1  # once, after the second pause
        assert one.worker.lost == 0


async def test_new_turns_go_to_a_worker_of_the_newest_version(postgres_dsn: str) -> None:
    async with worker(postgres_dsn, "old", "v1") as old:
        assert await old.ref(Stepper, "d").call(Stepper.run, 1) == ["old"]
        assert old.hosted().get("Stepper/d") == "idle"  # in memory, under its lease
        async with worker(postgres_dsn, "new", "v2"):
            assert old.worker is not None
            await old.worker._heartbeat_once()  # (it would see "new" within a third of a TTL)
            assert await old.ref(Stepper, "d").call(Stepper.run, 2) == ["new", "new"]


async def test_a_pinned_turn_moves_only_to_a_worker_of_its_version(postgres_dsn: str) -> None:
    pinned = {"versioning": "pinned"}
    async with worker(postgres_dsn, "old-a", "v1", **pinned) as old_a:
        invocation = await old_a.ref(Stepper, "e").send(Stepper.run, 4, True)
        await hosts(old_a, "Stepper/e", "waiting-event")  # a turn of v1 in flight
        async with (
            worker(postgres_dsn, "new", "v2", **pinned) as new,
            worker(postgres_dsn, "old-b", "v1", **pinned) as old_b,
        ):
            for runtime in (new, old_a, old_b):  # (each would within a third of a TTL)
                await runtime.worker._heartbeat_once()  # type: ignore[union-attr]
            await old_a.shutdown(5)  # its v1 turn goes to old-b, not to the newer "new"
            await hosts(old_b, "Stepper/e", "waiting-event")
            assert "Stepper/e" not in new.hosted()
            await new.ref(Stepper, "e").deliver("go")
            with anyio.fail_after(20):
                assert await new.result(invocation) == ["old-a", "old-a", "old-b", "old-b"]
            # the actor's next turn is a new one: on the newest version
            assert await old_b.ref(Stepper, "e").call(Stepper.run, 1) == ["new"]


def test_an_old_worker_that_restarts_does_not_make_its_version_newest() -> None:
    first_old = WorkerInfo("old-1", 10, 0, {"T": "v1"}, started_at=1.0)
    new = WorkerInfo("new-1", 10, 0, {"T": "v2"}, started_at=2.0)
    restarted_old = WorkerInfo("old-2", 10, 0, {"T": "v1"}, started_at=3.0)
    assert eligible("T", [first_old, new, restarted_old], pinned=False, in_flight=None) == ["new-1"]


async def test_a_full_worker_keeps_a_backlog_and_passivates_idle_actors_for_it(
    postgres_dsn: str,
) -> None:
    async with worker(postgres_dsn, "small", capacity=2) as small:
        invocations = [await small.ref(Stepper, f"f{n}").send(Stepper.run, 2) for n in range(10)]
        with anyio.fail_after(30):
            results = [await small.result(i) for i in invocations]
        assert results == [["small", "small"]] * 10
        assert small.in_memory() <= 2


async def test_a_worker_that_cannot_heartbeat_for_a_ttl_drops_its_actors_by_itself(
    postgres_dsn: str,
) -> None:
    async with worker(postgres_dsn, "cut-off", lease_ttl=0.6) as alone:
        await alone.ref(Stepper, "g").send(Stepper.run, 4, True)
        await hosts(alone, "Stepper/g", "waiting-event")
        assert alone.worker is not None

        async def unreachable(*args: object) -> set[str]:
            raise OSError("the database is unreachable")

        alone.worker.leases.renew = unreachable  # type: ignore[method-assign]
        await hosts(alone, "Stepper/g", None)  # no other worker needed to take it
        # (at least once: its claims still work, so it may take the actor on again, and
        # drop it again, before this looks)
        assert alone.worker.lost >= 1


async def test_idle_actors_on_an_old_version_are_passivated_at_a_heartbeat(
    postgres_dsn: str,
) -> None:
    async with worker(postgres_dsn, "old", "v1") as old:
        assert await old.ref(Stepper, "h").call(Stepper.run, 1) == ["old"]
        assert old.hosted().get("Stepper/h") == "idle"
        async with worker(postgres_dsn, "new", "v2"):
            assert old.worker is not None
            await old.worker._heartbeat_once()
            await old.worker._after_heartbeat()
            await hosts(old, "Stepper/h", None)
