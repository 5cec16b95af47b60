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
from tests.runtime.support import eventually, running

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


async def ask_at_once(runtime: actorflow.Runtime, count: int) -> None:
    """Call ``count`` new `Echo` actors at once; each must answer its own message."""
    replies: dict[int, str] = {}

    async def ask(i: int) -> None:
        replies[i] = await runtime.ref(Echo, f"e{i}").call(Echo.echo, f"hello {i}")

    async with anyio.create_task_group() as group:
        for i in range(count):
            group.start_soon(ask, i)
    assert replies == {i: f"hello {i}" for i in range(count)}


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
        await ask_at_once(runtime, 200)
    infos = counting[0]
    assert sorted(infos.names) == sorted(
        name for i in range(200) for name in (f"actor/Echo/e{i}", f"outcomes/Echo/e{i}")
    )
    assert infos.calls < 50  # not 200: activations waited for each other's query


class CountingReads(CountingInfos):
    """`CountingInfos`, also noting which streams' snapshots and records were read."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.snapshots: list[str] = []
        self.read: list[str] = []

    async def load_snapshot(self, stream: str) -> Any:
        self.snapshots.append(stream)
        return await self.inner.load_snapshot(stream)

    async def read_batches(self, stream: str, *args: Any, **kwargs: Any) -> Any:
        self.read.append(stream)
        async for batch in self.inner.read_batches(stream, *args, **kwargs):
            yield batch


async def test_an_actor_is_taken_on_reading_only_what_its_stream_info_says_there_is(
    tmp_path: pathlib.Path,
) -> None:
    """A new actor has no checkpoint and no turns: neither is read. Passivated after its
    turn and taken on again, it loads its checkpoint, and reads no turn after it."""
    counting: list[CountingReads] = []

    def wrap(store: Store) -> CountingReads:
        counting.append(CountingReads(store))
        return counting[0]

    async with running(tmp_path / "journal.db", [Echo], wrap=wrap, idle_timeout=0.05) as rt:
        reads = counting[0]
        echo = rt.ref(Echo, "e")

        async def ended(turns: int) -> bool:
            return await reads.inner.last_position("outcomes/Echo/e") == turns

        await echo.send(Echo.echo, "one")
        await eventually(lambda: ended(1), "the first turn to end")
        assert reads.snapshots == []
        assert "actor/Echo/e" not in reads.read

        async def passivated() -> bool:
            return "Echo/e" not in rt.hosted()

        await eventually(passivated, "the actor to be passivated")
        await echo.send(Echo.echo, "two")
        await eventually(lambda: ended(2), "the second turn to end")
        assert reads.snapshots == ["actor/Echo/e"]
        assert "actor/Echo/e" not in reads.read


async def test_a_worker_takes_on_actors_whose_inbox_grew_without_looking_at_their_leases(
    postgres_dsn: str,
) -> None:
    """The only worker is every actor's first choice: a message for an actor nobody hosts
    makes it acquire the lease at once, with no look at who holds it first."""
    store = await PostgresStore.open(postgres_dsn, notify_prefixes=("inbox/", "outcomes/"))
    looked: list[Sequence[str]] = []
    holders = store.leases.holders

    async def counted(names: Sequence[str]) -> Any:
        looked.append(names)
        return await holders(names)

    store.leases.holders = counted  # type: ignore[method-assign]
    try:
        options = actorflow.ClusterOptions(worker_id="only")
        async with actorflow.Runtime(store, [Echo], cluster=options) as runtime:
            for i in range(20):
                reply = await runtime.ref(Echo, f"e{i}").call(Echo.echo, f"hi {i}")
                assert reply == f"hi {i}"
            assert runtime.worker is not None
            assert len(runtime.worker.held) == 20
    finally:
        await store.close()
    assert looked == []


async def test_actors_claimed_together_take_their_leases_in_a_few_statements(
    postgres_dsn: str,
) -> None:
    """200 actors nobody hosts, each sent a message at once: the worker takes every one's
    lease, and the claims made while one statement is under way wait for the next."""
    store = await PostgresStore.open(postgres_dsn, notify_prefixes=("inbox/", "outcomes/"))
    statements: list[list[str]] = []
    acquire_many = store.leases.acquire_many

    async def counted(names: Sequence[str], owner: str, ttl: float) -> dict[str, int]:
        statements.append(list(names))
        return await acquire_many(names, owner, ttl)

    store.leases.acquire_many = counted  # type: ignore[method-assign]
    try:
        options = actorflow.ClusterOptions(worker_id="only")
        async with actorflow.Runtime(store, [Echo], cluster=options) as runtime:
            await ask_at_once(runtime, 200)
            held = await store.leases.held_by("only")
    finally:
        await store.close()
    expected = sorted(f"actor/Echo/e{i}" for i in range(200))
    assert sorted(name for names in statements for name in names) == expected
    assert sorted(lease.name for lease in held if lease.name.startswith("actor/")) == expected
    assert len(statements) < 50  # not 200: claims waited for each other's statement
