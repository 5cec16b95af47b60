"""Model-based test of values stored once: random appends that give and refer to values,
snapshots that refer to them, truncation, deletion, collection and reopening, compared with
a plain model of which digests are stored and which must stay readable."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from journal import (
    MemoryStore,
    MissingValueError,
    NewRecord,
    PostgresStore,
    SqliteStore,
    Store,
    StreamAppend,
)
from tests.journal.postgres import server

STREAMS = ["a", "b"]
VALUES = [b"value %d " % n * (n + 1) for n in range(5)]
DIGESTS = [hashlib.sha256(v).hexdigest() for v in VALUES]
BY_DIGEST = dict(zip(DIGESTS, VALUES, strict=True))

streams = st.sampled_from(STREAMS)
ref_sets = st.lists(st.sampled_from(DIGESTS), max_size=3)


@dataclasses.dataclass
class ModelStream:
    records: dict[int, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    last: int = 0
    snapshot: tuple[int, tuple[str, ...]] | None = None


class ValuesMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = {name: ModelStream() for name in STREAMS}
        self.stored: set[str] = set()  # what the store holds, garbage included
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self.store: Store = self.portal.call(self.open_store)

    async def open_store(self) -> Store:
        return MemoryStore()

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.portal.call(partial(fn, *args, **kwargs))

    def teardown(self) -> None:
        try:
            self.portal.call(self.store.close)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def referred(self) -> set[str]:
        out: set[str] = set()
        for s in self.model.values():
            for refs in s.records.values():
                out.update(refs)
            if s.snapshot is not None:
                out.update(s.snapshot[1])
        return out

    @rule(stream=streams, refs=st.lists(ref_sets, min_size=1, max_size=3), data=st.data())
    def append(self, stream: str, refs: list[list[str]], data: st.DataObject) -> None:
        snapshot_refs = data.draw(st.none() | ref_sets, label="snapshot refs")
        wanted = {d for r in refs for d in r} | set(snapshot_refs or ())
        send = data.draw(st.sampled_from(["all", "all", "none", "some"]), label="send")
        sent = set(wanted) if send == "all" else set()
        if send == "some":
            sent = set(data.draw(st.lists(st.sampled_from(sorted(wanted or DIGESTS))), label="s"))
        if data.draw(st.booleans(), label="send one more"):
            sent.add(data.draw(st.sampled_from(DIGESTS), label="extra"))  # garbage at once
        values = {digest: BY_DIGEST[digest] for digest in sorted(sent)}
        records = tuple(NewRecord("t", b"r", tuple(r)) for r in refs)
        part = StreamAppend(
            stream,
            records,
            snapshot=None if snapshot_refs is None else b"state",
            values=values,
            snapshot_refs=tuple(snapshot_refs or ()),
        )
        missing = wanted - set(values) - self.stored
        if missing:
            with pytest.raises(MissingValueError) as refused:
                self.call(self.store.append_many, [part])
            assert set(refused.value.digests) == missing
            return
        self.call(self.store.append_many, [part])
        self.stored |= set(values)
        s = self.model[stream]
        for r in refs:
            s.last += 1
            s.records[s.last] = tuple(r)
        if snapshot_refs is not None:
            s.snapshot = (s.last, tuple(snapshot_refs))

    @rule(stream=streams, data=st.data())
    def snapshot_and_truncate(self, stream: str, data: st.DataObject) -> None:
        s = self.model[stream]
        if not s.last:
            return
        refs = tuple(data.draw(st.lists(st.sampled_from(sorted(self.stored or {""}))), label="r"))
        refs = tuple(r for r in refs if r)
        self.call(self.store.save_snapshot, stream, s.last, b"state", refs=refs)
        s.snapshot = (s.last, refs)
        through = data.draw(st.integers(min_value=0, max_value=s.last), label="through")
        self.call(self.store.truncate, stream, through)
        s.records = {p: r for p, r in s.records.items() if p > through}

    @rule(stream=streams)
    def delete_stream(self, stream: str) -> None:
        self.call(self.store.delete_stream, stream)
        self.model[stream] = ModelStream()

    @rule()
    def collect(self) -> None:
        garbage = self.stored - self.referred()
        assert self.call(self.store.collect_values) == len(garbage)
        self.stored -= garbage

    @invariant()
    def stored_values_and_refs_match(self) -> None:
        assert self.call(self.store.has_values, DIGESTS) == self.stored
        assert self.referred() <= self.stored
        for digest in self.referred():
            assert self.call(self.store.read_value, digest) == BY_DIGEST[digest]
        for name, s in self.model.items():
            read = self.call(self.records, name)
            assert read == s.records
            snapshot = self.call(self.store.load_snapshot, name)
            assert (None if snapshot is None else (snapshot.position, snapshot.refs)) == (
                s.snapshot
            )

    async def records(self, stream: str) -> dict[int, tuple[str, ...]]:
        return {r.position: r.refs async for r in self.store.read(stream)}


class SqliteValuesMachine(ValuesMachine):
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="journal-values-"))
        super().__init__()

    async def open_store(self) -> Store:
        return await SqliteStore.open(self.directory / "journal.db", durability="normal")

    @rule()
    def reopen(self) -> None:
        self.call(self.store.close)
        self.store = self.call(self.open_store)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


class PostgresValuesMachine(ValuesMachine):
    """On the session's real PostgreSQL server, a fresh database per example, with two
    stores on it (two writers, as two processes would be): each rule runs on whichever
    holds the turn, so values stored through one are referred to, read and collected
    through the other."""

    def __init__(self) -> None:
        self.dsn = server().database()
        try:
            super().__init__()
        except BaseException:
            server().drop(self.dsn)
            raise

    async def open_store(self) -> Store:
        first = await PostgresStore.open(self.dsn)
        self.other: Store = await PostgresStore.open(self.dsn)
        return first

    @rule()
    def switch_writers(self) -> None:
        self.store, self.other = self.other, self.store

    @rule()
    def reopen(self) -> None:
        self.call(self.store.close)
        self.store = self.call(PostgresStore.open, self.dsn)

    def teardown(self) -> None:
        try:
            try:
                self.call(self.other.close)
            finally:
                super().teardown()
        finally:
            server().drop(self.dsn)


VALUE_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestMemoryValuesAgainstModel = ValuesMachine.TestCase
TestMemoryValuesAgainstModel.settings = VALUE_SETTINGS
TestSqliteValuesAgainstModel = SqliteValuesMachine.TestCase
TestSqliteValuesAgainstModel.settings = VALUE_SETTINGS
# Each PostgreSQL example creates and drops a database: fewer examples keep them to seconds.
TestPostgresValuesAgainstModel = PostgresValuesMachine.TestCase
TestPostgresValuesAgainstModel.settings = settings(VALUE_SETTINGS, max_examples=12)
