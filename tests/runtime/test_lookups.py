"""`Lookups`: many workers' looks at leases (and activations' at streams), answered by
one query per round, against a real PostgreSQL journal. The wrapper around
`Leases.holders` below only counts and holds back calls; every answer comes from the
database."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest

import actorflow
from actorflow.runtime._lookups import Lookups
from journal import PostgresStore, StorageError, Store, StreamInfo
from tests.runtime.support import running

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
        lookups = Lookups(holders, group.start_soon)

        async def look(i: int) -> None:
            answers[i] = await lookups.get(f"actor/T/{i}")

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
        lookups = Lookups(holders, group.start_soon)

        async def look(into: list[Any]) -> None:
            into.append(await lookups.get("actor/T/late"))

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
        lookups = Lookups(holders, group.start_soon)

        async def look(i: int) -> None:
            try:
                await lookups.get(f"actor/T/{i}")
            except StorageError as exc:
                errors.append(exc)

        for i in range(20):
            group.start_soon(look, i)

    assert len(errors) == 20
    holders.fail = None
    async with anyio.create_task_group() as group:  # and the next look asks again
        lookups = Lookups(holders, group.start_soon)
        assert await lookups.get("actor/T/0") is None


async def test_looks_waiting_when_the_workers_tasks_are_cancelled_do_not_hang(
    store: PostgresStore,
) -> None:
    holders = Counted(store)
    holders.gate = anyio.Event()  # the query never comes back
    outcomes: list[str] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as looking:

            async def look(lookups: Lookups) -> None:
                try:
                    await lookups.get("actor/T/1")
                except RuntimeError as exc:
                    outcomes.append(str(exc))

            async with anyio.create_task_group() as asking:
                looking.start_soon(look, Lookups(holders, asking.start_soon))
                await holders.started.wait()
                asking.cancel_scope.cancel()  # the asking task is cancelled mid-query
    assert outcomes == ["the lookup was cancelled: the runtime is stopping"]


class Echo(actorflow.Actor):
    @actorflow.handler
    async def echo(self, text: str) -> str:
        return text


class CountingInfos:
    """Delegates to ``inner``; counts `stream_infos` calls and the names they asked."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls = 0
        self.names: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def stream_infos(self, streams: Sequence[str]) -> list[StreamInfo]:
        self.calls += 1
        self.names.extend(streams)
        return await self.inner.stream_infos(streams)


async def test_actors_taken_on_together_read_where_their_streams_stand_in_a_few_queries(
    tmp_path: pathlib.Path,
) -> None:
    """200 new actors, each sent a message at once: each reads its stream's and its
    outcomes' infos as it is activated, and those reads are answered together."""
    counting: list[CountingInfos] = []

    def wrap(store: Store) -> CountingInfos:
        counting.append(CountingInfos(store))
        return counting[0]

    async with running(tmp_path / "journal.db", [Echo], wrap=wrap) as runtime:
        replies: dict[int, str] = {}

        async def ask(i: int) -> None:
            replies[i] = await runtime.ref(Echo, f"e{i}").call(Echo.echo, f"hello {i}")

        async with anyio.create_task_group() as group:
            for i in range(200):
                group.start_soon(ask, i)

    assert replies == {i: f"hello {i}" for i in range(200)}
    infos = counting[0]
    assert sorted(infos.names) == sorted(
        name for i in range(200) for name in (f"actor/Echo/e{i}", f"outcomes/Echo/e{i}")
    )
    assert infos.calls < 50  # not 200: activations waited for each other's query
