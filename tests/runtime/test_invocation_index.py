"""An invocation is found without reading the actor's whole history: its outcome through
its index (the ``invocation/`` stream written with the turn's end), an unknown id with a
few small reads, whatever the number of outcomes; journals written before the index
existed still answer, scanning only their old outcomes."""

from __future__ import annotations

import contextlib
import pathlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from actorflow import NO_RETRY, Actor, ActorRef, HandlerFailed, Runtime, handler
from actorflow._events import INDEX_CODEC, invocation_stream, outcomes_stream
from journal import Record, SqliteStore, Store
from tests.runtime.support import eventually

pytestmark = pytest.mark.anyio

#: Invocations an actor runs before the lookups: far more than a lookup may read.
RUNS = 60
#: Outcome records a lookup may read: the one it wants, and the newest (to learn how many
#: were written before the index existed).
LOOKUP_READS = 2

broken: set[int] = set()


class Ledger(Actor, retry=NO_RETRY):
    @handler
    async def add(self, n: int) -> int:
        if n in broken:
            raise ValueError(f"{n} is broken")
        return n * 10


class CountingStore:
    """Delegates to ``inner``; counts the records read, by stream kind (``outcomes``...)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.records_read: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read_batches(
        self, stream: str, from_position: int = 1, *, limit: int | None = None
    ) -> AsyncIterator[list[Record]]:
        async for batch in self.inner.read_batches(stream, from_position, limit=limit):
            self.records_read[stream.partition("/")[0]] += len(batch)
            yield batch


async def run_all(runtime: Runtime, count: int, key: str = "l") -> list[str]:
    """Send ``count`` invocations to ``Ledger/key`` one after the other; their ids."""
    ids = []
    for n in range(count):
        invocation = await runtime.send(ActorRef("Ledger", key), "add", (n,))
        with contextlib.suppress(HandlerFailed):
            await runtime.result(invocation, timeout=5)
        ids.append(invocation)
    return ids


async def passivated(runtime: Runtime) -> None:
    async def gone() -> bool:
        return not runtime.hosted()

    await eventually(gone, "every actor to be passivated")


@pytest.fixture(autouse=True)
def _reset() -> None:
    broken.clear()


async def test_an_old_or_unknown_invocation_costs_a_few_reads_not_a_scan(
    db: pathlib.Path,
) -> None:
    store = CountingStore(await SqliteStore.open(db))
    try:
        async with Runtime(store, [Ledger], idle_timeout=0.05) as runtime:  # type: ignore[arg-type]
            ids = await run_all(runtime, RUNS)
            await passivated(runtime)

            store.records_read.clear()
            oldest = await runtime.invocation(ids[0])
            assert oldest is not None
            assert (oldest.state, oldest.result) == ("completed", 0)
            assert await runtime.result(ids[RUNS // 2]) == RUNS // 2 * 10
            assert store.records_read["outcomes"] <= 2 * LOOKUP_READS

            store.records_read.clear()
            assert await runtime.invocation("Ledger/l#" + "0" * 24) is None
            assert store.records_read["outcomes"] <= LOOKUP_READS
    finally:
        await store.close()


async def test_a_retried_invocation_reads_as_its_latest_outcome(db: pathlib.Path) -> None:
    broken.add(1)
    async with Runtime(await SqliteStore.open(db), [Ledger], idle_timeout=0.05) as runtime:
        try:
            first, failing, _ = await run_all(runtime, 3)
            failed = await runtime.invocation(failing)
            assert failed is not None
            assert (failed.state, failed.retryable) == ("failed", True)

            broken.clear()
            await runtime.retry(failing)
            assert await runtime.result(failing, timeout=5) == 10
            await passivated(runtime)

            again = await runtime.invocation(failing)
            assert again is not None
            assert (again.state, again.result) == ("completed", 10)
            assert [i.position for i in await indexes(runtime.store, failing)] == [2, 4]
            assert (await runtime.invocation(first)).result == 0  # type: ignore[union-attr]
        finally:
            await runtime.store.close()


async def indexes(store: Store, invocation: str) -> list[Any]:
    return [INDEX_CODEC.decode(r) async for r in store.read(invocation_stream(invocation))]


async def test_outcomes_journaled_before_the_index_existed_are_still_found(
    db: pathlib.Path,
) -> None:
    store = CountingStore(await SqliteStore.open(db))
    try:
        async with Runtime(store, [Ledger], idle_timeout=0.05) as runtime:  # type: ignore[arg-type]
            old = await run_all(runtime, 5)
            await passivated(runtime)
            for invocation in old:  # as an actorflow from before the index wrote them
                assert await store.delete_stream(invocation_stream(invocation))

            for invocation, n in zip(old, range(5), strict=True):
                found = await runtime.invocation(invocation)
                assert found is not None
                assert (found.state, found.result) == ("completed", n * 10)
            assert await runtime.invocation("Ledger/l#" + "0" * 24) is None

            new = await run_all(runtime, 3)  # indexed, and saying what is not
            await passivated(runtime)
            assert [i.unindexed for i in await indexes(store, new[-1])] == [5]
            store.records_read.clear()
            assert (await runtime.invocation(old[0])).result == 0  # type: ignore[union-attr]
            assert (await runtime.invocation(new[0])).result == 0  # type: ignore[union-attr]
            assert await runtime.invocation("Ledger/l#" + "1" * 24) is None
            # The old outcomes are scanned (twice), never the new ones.
            assert store.records_read["outcomes"] <= 2 * (5 + LOOKUP_READS) + 1
            assert await store.last_position(outcomes_stream("Ledger/l")) == 8
    finally:
        await store.close()
