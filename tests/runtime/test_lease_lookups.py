"""`LeaseLookups`: many workers' looks at leases, answered by one query per round, against
a real PostgreSQL journal's leases. The wrapper around `Leases.holders` below only counts
and holds back calls; every answer comes from the database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest

from actorflow.runtime._lease_lookups import LeaseLookups
from journal import PostgresStore, StorageError

pytestmark = pytest.mark.anyio


class Counted:
    """`Leases.holders`, counting its calls; ``gate``, when set, holds the next call's
    answer (read from the database) back until it is set."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.calls: list[list[str]] = []
        self.gate: anyio.Event | None = None
        self.started = anyio.Event()
        self.fail: Exception | None = None

    async def __call__(self, names: Sequence[str]) -> dict[str, Any]:
        self.calls.append(list(names))
        if self.fail is not None:
            raise self.fail
        found = await self.store.leases.holders(names)
        self.started.set()
        if self.gate is not None:
            gate, self.gate = self.gate, None
            await gate.wait()
        return found


@pytest.fixture
async def store(postgres_dsn: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(postgres_dsn)
    try:
        yield store
    finally:
        await store.close()


async def test_looks_made_together_are_answered_by_one_query_each_as_the_database_says(
    store: PostgresStore,
) -> None:
    for i in range(0, 300, 3):  # every third lease held by w2
        assert await store.leases.acquire(f"actor/T/{i}", "w2", 30) is not None
    holders = Counted(store)
    answers: dict[int, Any] = {}
    async with anyio.create_task_group() as group:
        lookups = LeaseLookups(holders, group.start_soon)

        async def look(i: int) -> None:
            answers[i] = await lookups.holder(f"actor/T/{i}")

        for i in range(300):
            group.start_soon(look, i)

    assert len(holders.calls) <= 2  # not 300: the looks waited for one query
    assert sorted(name for call in holders.calls for name in call) == sorted(
        f"actor/T/{i}" for i in range(300)
    )
    held = {i for i, lease in answers.items() if lease is not None}
    assert held == set(range(0, 300, 3))
    assert {answers[i].owner for i in held} == {"w2"}


async def test_a_look_made_while_a_query_is_under_way_waits_for_the_next_one(
    store: PostgresStore,
) -> None:
    """An answer is never older than the look: a lease taken after a query read the
    leases is seen by a look made after it was taken, not answered by that query."""
    holders = Counted(store)
    gate = holders.gate = anyio.Event()
    early: list[Any] = []
    later: list[Any] = []
    async with anyio.create_task_group() as group:
        lookups = LeaseLookups(holders, group.start_soon)

        async def look(into: list[Any]) -> None:
            into.append(await lookups.holder("actor/T/late"))

        group.start_soon(look, early)
        await holders.started.wait()  # the first query has read the lease: free
        assert await store.leases.acquire("actor/T/late", "w3", 30) is not None
        group.start_soon(look, later)
        await anyio.wait_all_tasks_blocked()
        gate.set()  # the first query answers now

    assert len(holders.calls) == 2
    assert early == [None]
    assert [lease.owner for lease in later] == ["w3"]


async def test_a_failed_query_fails_every_look_it_answers(store: PostgresStore) -> None:
    holders = Counted(store)
    holders.fail = StorageError("the database went away")
    errors: list[BaseException] = []
    async with anyio.create_task_group() as group:
        lookups = LeaseLookups(holders, group.start_soon)

        async def look(i: int) -> None:
            try:
                await lookups.holder(f"actor/T/{i}")
            except StorageError as exc:
                errors.append(exc)

        for i in range(20):
            group.start_soon(look, i)

    assert len(errors) == 20
    holders.fail = None
    async with anyio.create_task_group() as group:  # and the next look asks again
        lookups = LeaseLookups(holders, group.start_soon)
        assert await lookups.holder("actor/T/0") is None


async def test_looks_waiting_when_the_workers_tasks_are_cancelled_do_not_hang(
    store: PostgresStore,
) -> None:
    holders = Counted(store)
    holders.gate = anyio.Event()  # the query never comes back
    outcomes: list[str] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as looking:

            async def look(lookups: LeaseLookups) -> None:
                try:
                    await lookups.holder("actor/T/1")
                except RuntimeError as exc:
                    outcomes.append(str(exc))

            async with anyio.create_task_group() as asking:
                looking.start_soon(look, LeaseLookups(holders, asking.start_soon))
                await holders.started.wait()
                asking.cancel_scope.cancel()  # the asking task is cancelled mid-query
    assert outcomes == ["the lease lookup was cancelled: the worker is stopping"]
