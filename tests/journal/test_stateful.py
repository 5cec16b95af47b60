"""Model-based tests: random operations on a store, compared with a plain Python model.

The model is deliberately dumb (lists and dicts, no shared code with the stores), so that it
states the rules independently: positions, conflicts, fencing, snapshots, truncation, and
global positions that only ever grow. Each machine drives its async store from the sync
rules through one blocking portal (one event loop thread) for its whole life.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from journal import (
    ConflictError,
    FencingError,
    InvalidStreamError,
    MemoryStore,
    NewRecord,
    PostgresStore,
    Record,
    Snapshot,
    SnapshotError,
    SqliteStore,
    Store,
    StreamAppend,
    StreamInfo,
)
from journal._file_lock import FileLock
from tests.journal.postgres import server

STREAMS = ["a", "b", "c/1", "c/2"]
TYPES = ["step", "turn"]

#: Every stream's info and snapshot, then list_streams() and list_streams("c/").
Bookkeeping = tuple[list[StreamInfo], list[Snapshot | None], list[str], list[str]]

streams = st.sampled_from(STREAMS)
expectations = st.sampled_from(["right", "wrong", "none"])
fencings = st.sampled_from(["current", "stale", "none"])


# -- the model --------------------------------------------------------------------------------


@dataclasses.dataclass
class ModelStream:
    last: int = 0
    first: int = 1
    epoch: int = 0
    snapshot: Snapshot | None = None
    records: dict[int, tuple[str, bytes]] = dataclasses.field(default_factory=dict)

    @property
    def snapshot_position(self) -> int:
        return self.snapshot.position if self.snapshot else 0


@dataclasses.dataclass
class Model:
    streams: dict[str, ModelStream] = dataclasses.field(
        default_factory=lambda: {name: ModelStream() for name in STREAMS}
    )
    #: Every retained record as (stream, position), in commit order.
    log: list[tuple[str, int]] = dataclasses.field(default_factory=list)

    def append(self, stream: str, records: list[tuple[str, bytes]]) -> tuple[int, int]:
        s = self.streams[stream]
        first = s.last + 1
        for kind, data in records:
            s.last += 1
            s.records[s.last] = (kind, data)
            self.log.append((stream, s.last))
        return first, s.last

    def truncate(self, stream: str, through: int) -> int:
        s = self.streams[stream]
        gone = [p for p in s.records if p <= through]
        for p in gone:
            del s.records[p]
        s.first = max(s.first, through + 1)
        self.log = [(name, p) for name, p in self.log if not (name == stream and p <= through)]
        return len(gone)

    def delete(self, stream: str) -> bool:
        s = self.streams[stream]
        existed = bool(s.last or s.epoch)
        self.streams[stream] = ModelStream()
        self.log = [(name, p) for name, p in self.log if name != stream]
        return existed

    def listed(self) -> list[str]:
        return sorted(name for name, s in self.streams.items() if s.last > 0)


# -- the machine ------------------------------------------------------------------------------


class JournalMachine(RuleBasedStateMachine):
    """Drives one store; subclasses say which, on which event loop."""

    backend_options: ClassVar[dict[str, Any]] = {}
    persistent: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.counter = 0
        #: Global position of every record seen so far; they must never change.
        self.globals: dict[tuple[str, int], int] = {}
        self.high_water = 0
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal(
            "asyncio", self.backend_options
        )
        self.portal = self._portal_cm.__enter__()
        try:
            self.store: Store = self.portal.call(self.open_store)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        self.identity = self.store.identity

    async def open_store(self) -> Store:
        raise NotImplementedError

    def teardown(self) -> None:
        try:
            self.portal.call(self.store.close)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.portal.call(partial(fn, *args, **kwargs))

    # -- choosing arguments ---------------------------------------------------------------

    def new_records(
        self, stream: str, data: st.DataObject, minimum: int = 1
    ) -> list[tuple[str, bytes]]:
        count = data.draw(st.integers(min_value=minimum, max_value=3), label="count")
        records = []
        for _ in range(count):
            self.counter += 1
            kind = data.draw(st.sampled_from(TYPES), label="type")
            extra = data.draw(st.binary(max_size=8), label="payload")
            records.append((kind, f"{stream}#{self.counter}:".encode() + extra))
        return records

    def expected_position(self, at: int, how: str, data: st.DataObject) -> int | None:
        if how == "none":
            return None
        if how == "right":
            return at
        wrong = [p for p in (at - 1, at + 1, at + 5) if p >= 0]
        return data.draw(st.sampled_from(wrong), label="wrong expected position")

    def epoch(self, stream: str, how: str, data: st.DataObject) -> int | None:
        current = self.model.streams[stream].epoch
        if how == "none":
            return None
        if how == "current":
            return current
        stale = [e for e in (current - 1, current + 1) if e >= 0]
        return data.draw(st.sampled_from(stale), label="stale epoch")

    def learn_globals(self, stream: str, last_position: int, last_global: int) -> None:
        assert last_global > self.high_water, "a global position was reused"
        self.high_water = last_global
        self.globals[(stream, last_position)] = last_global

    # -- writes ---------------------------------------------------------------------------

    def new_snapshot(self, data: st.DataObject) -> bytes | None:
        """State bytes for a part to snapshot with, or None (as often as not)."""
        if not data.draw(st.booleans(), label="with a snapshot"):
            return None
        self.counter += 1
        return b"state#%d:" % self.counter + data.draw(st.binary(max_size=8), label="state")

    def learn_append(
        self, stream: str, records: list[tuple[str, bytes]], snapshot: bytes | None, got: Any
    ) -> None:
        """Apply an accepted part to the model and check where the store put it."""
        first, last = self.model.append(stream, records)
        assert (got.stream, got.first_position, got.last_position) == (stream, first, last)
        if records:
            self.learn_globals(stream, last, got.last_global_position)
        if snapshot is not None:
            self.model.streams[stream].snapshot = Snapshot(stream, last, snapshot)

    @rule(stream=streams, expect=expectations, fence=fencings, data=st.data())
    def append(self, stream: str, expect: str, fence: str, data: st.DataObject) -> None:
        s = self.model.streams[stream]
        snapshot = self.new_snapshot(data)
        records = self.new_records(stream, data, minimum=0 if snapshot is not None else 1)
        expected = self.expected_position(s.last, expect, data)
        epoch = self.epoch(stream, fence, data)
        errors: set[type[Exception]] = set()
        if expected is not None and expected != s.last:
            errors.add(ConflictError)
        if epoch is not None and epoch != s.epoch:
            errors.add(FencingError)
        if snapshot is not None and s.last + len(records) == 0:
            errors.add(SnapshotError)
        new = [NewRecord(kind, payload) for kind, payload in records]

        def write() -> Any:
            if snapshot is None:  # the plain call, as most writers make it
                return self.call(
                    self.store.append, stream, new, expected_position=expected, epoch=epoch
                )
            part = StreamAppend(stream, tuple(new), expected, epoch, snapshot)
            return self.call(self.store.append_many, [part])[0]

        if errors:
            with pytest.raises(tuple(errors)) as refused:
                write()
            if isinstance(refused.value, ConflictError):
                assert (refused.value.expected, refused.value.actual) == (expected, s.last)
            if isinstance(refused.value, FencingError):
                assert (refused.value.epoch, refused.value.current) == (epoch, s.epoch)
            return
        self.learn_append(stream, records, snapshot, write())

    @rule(
        names=st.lists(streams, min_size=2, max_size=3, unique=True),
        spoil=st.sampled_from(["nothing", "expected", "epoch"]),
        data=st.data(),
    )
    def append_many(self, names: list[str], spoil: str, data: st.DataObject) -> None:
        spoiled = data.draw(st.sampled_from(names), label="spoiled part")
        parts = []
        records = {}
        snapshots = {}
        for name in names:
            s = self.model.streams[name]
            snapshots[name] = self.new_snapshot(data)
            records[name] = self.new_records(
                name, data, minimum=0 if snapshots[name] is not None and s.last else 1
            )
            wrong = name == spoiled
            expect = data.draw(st.sampled_from(["right", "none"]), label="expect")
            fence = data.draw(st.sampled_from(["current", "none"]), label="fence")
            if wrong and spoil == "expected":
                expect = "wrong"
            if wrong and spoil == "epoch":
                fence = "stale"
            expected = self.expected_position(s.last, expect, data)
            epoch = self.epoch(name, fence, data)
            new = tuple(NewRecord(kind, payload) for kind, payload in records[name])
            parts.append(StreamAppend(name, new, expected, epoch, snapshots[name]))

        if spoil != "nothing":
            before = self.call(self.fetch_log)
            error = ConflictError if spoil == "expected" else FencingError
            with pytest.raises(error) as refused:
                self.call(self.store.append_many, parts)
            assert refused.value.stream == spoiled
            assert self.call(self.fetch_log) == before, "a refused append_many wrote something"
            return
        results = self.call(self.store.append_many, parts)
        assert [r.stream for r in results] == names
        for name, appended in zip(names, results, strict=True):
            self.learn_append(name, records[name], snapshots[name], appended)

    @rule(stream=streams)
    def claim(self, stream: str) -> None:
        epoch = self.call(self.store.claim, stream)
        s = self.model.streams[stream]
        assert epoch > s.epoch
        s.epoch = epoch

    @rule(stream=streams, fence=fencings, data=st.data())
    def save_snapshot(self, stream: str, fence: str, data: st.DataObject) -> None:
        s = self.model.streams[stream]
        position = data.draw(
            st.integers(min_value=max(1, s.snapshot_position - 1), max_value=s.last + 1),
            label="snapshot position",
        )
        epoch = self.epoch(stream, fence, data)
        state = data.draw(st.binary(max_size=16), label="state")
        errors: set[type[Exception]] = set()
        if epoch is not None and epoch != s.epoch:
            errors.add(FencingError)
        if not 1 <= position <= s.last or position < s.snapshot_position:
            errors.add(SnapshotError)

        if errors:
            with pytest.raises(tuple(errors)):
                self.call(self.store.save_snapshot, stream, position, state, epoch=epoch)
            return
        self.call(self.store.save_snapshot, stream, position, state, epoch=epoch)
        s.snapshot = Snapshot(stream, position, state)

    @rule(stream=streams, fence=fencings, data=st.data())
    def truncate(self, stream: str, fence: str, data: st.DataObject) -> None:
        s = self.model.streams[stream]
        through = data.draw(st.integers(min_value=0, max_value=s.last + 1), label="through")
        epoch = self.epoch(stream, fence, data)
        errors: set[type[Exception]] = set()
        if epoch is not None and epoch != s.epoch:
            errors.add(FencingError)
        if through > s.snapshot_position:
            errors.add(SnapshotError)

        if errors:
            with pytest.raises(tuple(errors)):
                self.call(self.store.truncate, stream, through, epoch=epoch)
            return
        deleted = self.call(self.store.truncate, stream, through, epoch=epoch)
        assert deleted == self.model.truncate(stream, through)

    @rule(stream=streams, fence=fencings, data=st.data())
    def delete_stream(self, stream: str, fence: str, data: st.DataObject) -> None:
        s = self.model.streams[stream]
        epoch = self.epoch(stream, fence, data)

        if epoch is not None and epoch != s.epoch:
            with pytest.raises(FencingError) as refused:
                self.call(self.store.delete_stream, stream, epoch=epoch)
            assert (refused.value.epoch, refused.value.current) == (epoch, s.epoch)
            return
        existed = self.call(self.store.delete_stream, stream, epoch=epoch)
        assert existed == self.model.delete(stream)
        # the stream's positions start over; their global positions will be new ones
        self.globals = {key: g for key, g in self.globals.items() if key[0] != stream}

    @rule(stream=st.sampled_from(["", "x\x00y", "z" * 1025]))
    def append_to_an_invalid_stream(self, stream: str) -> None:
        with pytest.raises(InvalidStreamError):
            self.call(self.store.append, stream, [NewRecord("t", b"x")])

    @precondition(lambda self: self.persistent)
    @rule(durability=st.sampled_from(["full", "normal"]))
    def reopen(self, durability: str) -> None:
        self.call(self.store.close)
        self.store = self.call(self.reopen_store, durability)

    async def reopen_store(self, durability: str) -> Store:
        raise NotImplementedError

    # -- reads ----------------------------------------------------------------------------

    async def fetch_stream(self, stream: str, from_position: int) -> list[Record]:
        return [r async for r in self.store.read(stream, from_position)]

    async def fetch_log(self, from_global_position: int = 1) -> list[Record]:
        return [r async for r in self.store.read_all(from_global_position)]

    def check_globals(self, records: list[Record]) -> None:
        for r in records:
            known = self.globals.setdefault((r.stream, r.position), r.global_position)
            assert r.global_position == known, f"{r.stream}@{r.position} changed global position"
            assert r.global_position <= self.high_water

    @rule(stream=streams, data=st.data())
    def read(self, stream: str, data: st.DataObject) -> None:
        s = self.model.streams[stream]
        start = data.draw(st.integers(min_value=1, max_value=s.last + 2), label="from")

        got = self.call(self.fetch_stream, stream, start)

        want = [(p, *s.records[p]) for p in sorted(s.records) if p >= start]
        assert [(r.position, r.type, r.data) for r in got] == want
        assert all(r.stream == stream for r in got)
        self.check_globals(got)

    @rule(data=st.data())
    def read_all_from(self, data: st.DataObject) -> None:
        log = self.call(self.fetch_log)

        assert [(r.stream, r.position) for r in log] == self.model.log
        for r in log:
            assert (r.type, r.data) == self.model.streams[r.stream].records[r.position]
        globals_ = [r.global_position for r in log]
        assert globals_ == sorted(set(globals_))
        self.check_globals(log)
        start = data.draw(st.integers(min_value=1, max_value=self.high_water + 2), label="from")
        assert self.call(self.fetch_log, start) == [r for r in log if r.global_position >= start]

    @invariant()
    def identity_is_kept(self) -> None:
        assert self.store.identity == self.identity

    @invariant()
    def bookkeeping_matches(self) -> None:
        infos, snapshots, listed, prefixed = self.call(self.bookkeeping)

        for name, info, snapshot in zip(STREAMS, infos, snapshots, strict=True):
            s = self.model.streams[name]
            assert info == StreamInfo(name, s.last, s.first, s.epoch, s.snapshot_position)
            assert snapshot == s.snapshot
        assert listed == self.model.listed()
        assert prefixed == [name for name in self.model.listed() if name.startswith("c/")]

    async def bookkeeping(
        self,
    ) -> tuple[list[StreamInfo], list[Snapshot | None], list[str], list[str]]:
        infos = [await self.store.stream_info(name) for name in STREAMS]
        snapshots = [await self.store.load_snapshot(name) for name in STREAMS]
        return (
            infos,
            snapshots,
            await self.store.list_streams(),
            await self.store.list_streams("c/"),
        )


class MemoryMachine(JournalMachine):
    async def open_store(self) -> Store:
        return MemoryStore()


class SqliteMachine(JournalMachine):
    persistent = True

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="journal-model-"))
        try:
            super().__init__()
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise

    async def open_store(self) -> Store:
        return await SqliteStore.open(self.directory / "journal.db")

    async def reopen_store(self, durability: str) -> Store:
        path = self.directory / "journal.db"
        return await SqliteStore.open(path, durability=durability)  # type: ignore[arg-type]

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


class SqliteForgetfulMachine(SqliteMachine):
    """A writer that keeps one stream state in memory reads the others back from the file
    at every turn: positions, epochs, snapshots and truncation must survive that."""

    async def open_store(self) -> Store:
        return await SqliteStore.open(self.directory / "journal.db", cached_streams=1)

    async def reopen_store(self, durability: str) -> Store:
        path = self.directory / "journal.db"
        return await SqliteStore.open(path, durability=durability, cached_streams=1)  # type: ignore[arg-type]


class SqliteTwoWritersMachine(SqliteMachine):
    """Two stores write one file, as when the lock does not work (a file system whose
    locks do nothing: the second opens without it): each rule runs on whichever holds the
    turn, and the journal must still be the one the model describes, every rule checked
    against the file."""

    async def open_store(self) -> Store:
        first = await SqliteStore.open(self.directory / "journal.db")
        self.other: Store = await self.second_writer("full")
        return first

    async def second_writer(self, durability: str) -> Store:
        path = self.directory / "journal.db"
        with mock.patch.object(FileLock, "acquire", return_value=None):
            return await SqliteStore.open(path, durability=durability)  # type: ignore[arg-type]

    async def reopen_store(self, durability: str) -> Store:
        return await self.second_writer(durability)

    @rule()
    def switch_writers(self) -> None:
        self.store, self.other = self.other, self.store

    def teardown(self) -> None:
        try:
            self.call(self.other.close)
        finally:
            super().teardown()


class SqliteUvloopMachine(SqliteMachine):
    backend_options: ClassVar[dict[str, Any]] = {"use_uvloop": True}


class PostgresMachine(JournalMachine):
    """On the session's real PostgreSQL server, a fresh database per example."""

    persistent = True

    def __init__(self) -> None:
        self.dsn = server().database()
        try:
            super().__init__()
        except BaseException:
            server().drop(self.dsn)
            raise

    async def open_store(self) -> Store:
        return await PostgresStore.open(self.dsn)

    async def reopen_store(self, durability: str) -> Store:
        return await PostgresStore.open(self.dsn)  # every commit is durable on PostgreSQL

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            server().drop(self.dsn)


class PostgresTwoWritersMachine(PostgresMachine):
    """Two stores (two writers, as two processes would be) on one database, each rule on
    whichever holds the turn: the database keeps them to the one journal of the model."""

    async def open_store(self) -> Store:
        first = await PostgresStore.open(self.dsn)
        self.other: Store = await PostgresStore.open(self.dsn)
        return first

    @rule()
    def switch_writers(self) -> None:
        self.store, self.other = self.other, self.store

    def teardown(self) -> None:
        try:
            self.call(self.other.close)
        finally:
            super().teardown()


MODEL_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestMemoryStoreAgainstModel = MemoryMachine.TestCase
TestMemoryStoreAgainstModel.settings = MODEL_SETTINGS
TestSqliteStoreAgainstModel = SqliteMachine.TestCase
TestSqliteStoreAgainstModel.settings = MODEL_SETTINGS
TestForgetfulSqliteStoreAgainstModel = SqliteForgetfulMachine.TestCase
TestForgetfulSqliteStoreAgainstModel.settings = settings(MODEL_SETTINGS, max_examples=40)
TestTwoSqliteWritersAgainstModel = SqliteTwoWritersMachine.TestCase
TestTwoSqliteWritersAgainstModel.settings = settings(MODEL_SETTINGS, max_examples=40)
TestSqliteStoreOnUvloopAgainstModel = SqliteUvloopMachine.TestCase
TestSqliteStoreOnUvloopAgainstModel.settings = settings(MODEL_SETTINGS, max_examples=25)
# Each PostgreSQL example creates and drops a database: fewer examples keep them to seconds.
TestPostgresStoreAgainstModel = PostgresMachine.TestCase
TestPostgresStoreAgainstModel.settings = settings(MODEL_SETTINGS, max_examples=20)
TestTwoPostgresWritersAgainstModel = PostgresTwoWritersMachine.TestCase
TestTwoPostgresWritersAgainstModel.settings = settings(MODEL_SETTINGS, max_examples=15)
