"""Queries on a fleet of workers sharing a PostgreSQL journal (two runtimes in one test
process, as in test_workers.py): the worker hosting an actor answers from its running turn;
another names that worker while the turn runs, and reads the checkpoint once it has ended."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import msgspec
import pytest

from actorflow import Actor, ClusterOptions, HostedElsewhere, Runtime, handler, query
from journal import PostgresStore
from tests.runtime.support import eventually

pytestmark = pytest.mark.anyio


class Tally(msgspec.Struct):
    done: list[int] = msgspec.field(default_factory=list)


def work(n: int) -> int:
    return n * 10


class Counter(Actor, state=Tally):
    @handler
    async def run(self, n: int) -> int:
        for i in range(n):
            self.state.done.append(await self.ctx.run(work, i, name="work"))
        await self.ctx.wait_for("go")
        return len(self.state.done)

    @query
    def done(self) -> list[int]:
        return self.state.done


@contextlib.asynccontextmanager
async def worker(dsn: str, name: str) -> AsyncIterator[Runtime]:
    store = await PostgresStore.open(dsn, notify_prefixes=("inbox/", "outcomes/"))
    try:
        cluster = ClusterOptions(worker_id=name)
        async with Runtime(store, [Counter], cluster=cluster, version="v1") as runtime:
            yield runtime
    finally:
        await store.close()


async def test_only_the_hosting_worker_sees_a_running_turn_others_name_it(
    postgres_dsn: str,
) -> None:
    async with worker(postgres_dsn, "w1") as one, worker(postgres_dsn, "w2") as two:
        ref = one.ref(Counter, "c").ref
        first = await one.send(ref, "run", (1,))  # a finished turn: a checkpoint to read
        await one.deliver(ref, "go")
        with anyio.fail_after(20):
            assert await one.result(first) == 1
        invocation = await one.send(ref, "run", (2,))

        async def hosted_waiting() -> bool:
            return any(r.hosted().get(ref.id) == "waiting-event" for r in (one, two))

        await eventually(hosted_waiting, "Counter/c to wait on a worker")
        host, other = (one, two) if ref.id in one.hosted() else (two, one)
        assert host.worker is not None
        answer = await host.query(ref, "done")
        assert (answer.result, answer.as_of) == ([0, 0, 10], "step")
        with pytest.raises(HostedElsewhere, match=f"worker '{host.worker.id}' hosts it") as refused:
            await other.query(ref, "done")
        assert refused.value.owner == host.worker.id
        await other.deliver(ref, "go")
        with anyio.fail_after(20):
            assert await other.result(invocation) == 3
        answer = await other.query(ref, "done")  # the turn has ended: its checkpoint
        assert (answer.result, answer.as_of) == ([0, 0, 10], "checkpoint")
        assert ref.id not in other.hosted()
