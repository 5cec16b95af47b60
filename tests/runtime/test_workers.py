"""Workers sharing a PostgreSQL journal, in one test process: two runtimes, each on its
own `PostgresStore` (its own connections, as two processes would have) and its own worker
id. What crosses processes for real (SIGKILL, SIGSTOP, rolling deploys) is tested in
tests/cluster/; here: leases, hand-offs, fencing and placement, step by step."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import pytest

import actorflow
from actorflow import ClusterOptions, Runtime
from actorflow.cluster import WorkerInfo, eligible, ranked
from journal import PostgresStore
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


def stepper(worker: str) -> type[Stepper]:
    return type(f"Stepper_{worker}", (Stepper,), {"WORKER": worker}, name="Stepper")


@contextlib.asynccontextmanager
async def worker(dsn: str, name: str, **options: object) -> AsyncIterator[Runtime]:
    store = await PostgresStore.open(dsn, notify_prefixes=("inbox/", "outcomes/"))
    cluster = ClusterOptions(worker_id=name, **options)  # type: ignore[arg-type]
    try:
        async with Runtime(store, [stepper(name)], cluster=cluster, version="v1") as runtime:
            yield runtime
    finally:
        await store.close()


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
        never = anyio.Event()

        async def paused(*args: object) -> set[str]:  # its heartbeats no longer arrive
            await never.wait()
            return set()

        assert one.worker is not None
        one.worker.leases.renew = paused  # type: ignore[method-assign]
        async with worker(postgres_dsn, "w2", lease_ttl=0.6) as two:
            await hosts(two, "Stepper/c", "waiting-event")  # after the lease expired
            assert "Stepper/c" in one.hosted()  # w1 still believes it owns it
            await two.ref(Stepper, "c").deliver("go")  # both hear it; only w2 may write
            with anyio.fail_after(20):
                result = await two.result(invocation)
            await hosts(one, "Stepper/c", None)  # w1's append was refused: it let go
            assert result == ["w1", "w1", "w2", "w2"]
            never.set()
