"""What `actorflow journal stats` counts: every stream of a journal read once, through the
generic `Store` interface (the same on SQLite and PostgreSQL), its records named by the
runtime's event types.

Bytes are payload bytes as stored (a record's encoded data; a snapshot's data; a value's
data), without the database's own overhead: the file or database is larger.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable
from typing import Any

import msgspec

from actorflow._events import (
    ActorEntry,
    ClaimMade,
    IdempotencyClaim,
    InboxEntry,
    InvocationEnded,
    InvocationIndexed,
    StatePart,
)
from journal import CorruptionError, Store

#: Streams listed per read.
STREAMS_PER_READ = 500


def _event_names() -> dict[str, str]:
    """Each record type tag the runtime writes, with the name of its event type."""
    kinds: list[Any] = [*typing.get_args(ActorEntry), *typing.get_args(InboxEntry)]
    kinds += [InvocationEnded, InvocationIndexed, IdempotencyClaim, ClaimMade, StatePart]
    return {kind.__struct_config__.tag: kind.__name__ for kind in kinds}


#: Record type tag -> the runtime's event type (`TurnStarted` for ``turn``, ...).
EVENT_NAMES = _event_names()


class Tally(msgspec.Struct):
    """A count and the bytes it holds."""

    count: int = 0
    bytes: int = 0

    def add(self, size: int, count: int = 1) -> None:
        self.count += count
        self.bytes += size


class TypeTally(msgspec.Struct):
    """The records of one type: on which kind of stream, its tag, its event type."""

    stream_kind: str
    type: str
    event: str
    count: int = 0
    bytes: int = 0


class ActorTally(msgspec.Struct):
    """What one actor takes in the journal: its streams, records and bytes (records,
    snapshot and the state parts; values it refers to are counted once, journal-wide)."""

    actor: str
    streams: int = 0
    records: int = 0
    bytes: int = 0


class Stats(msgspec.Struct):
    """The whole journal, counted."""

    streams: int = 0
    records: Tally = msgspec.field(default_factory=Tally)
    snapshots: Tally = msgspec.field(default_factory=Tally)
    #: Distinct stored values that records or snapshots refer to.
    values: Tally = msgspec.field(default_factory=Tally)
    #: Records and snapshots whose checksum fails (run `actorflow journal verify`).
    damaged: int = 0
    stream_kinds: dict[str, Tally] = msgspec.field(default_factory=dict)
    types: list[TypeTally] = msgspec.field(default_factory=list)
    largest_actors: list[ActorTally] = msgspec.field(default_factory=list)


def stream_kind(stream: str) -> str:
    """The kind of a stream: its name up to the first ``/`` (``actor``, ``inbox``, ...)."""
    return stream.partition("/")[0]


def actor_of(stream: str) -> str | None:
    """The actor (Type/key) a stream belongs to, if it is one of an actor's."""
    kind, _, rest = stream.partition("/")
    if kind in ("actor", "inbox", "outcomes", "state"):
        return rest or None
    if kind == "idempotency":
        type_name, _, rest = rest.partition("/")
        key = rest.partition("/")[0]
        return f"{type_name}/{key}" if type_name and key else None
    if kind in ("invocation", "streams"):  # per invocation: Type/key#id
        return rest.partition("#")[0] or None
    return None


@dataclasses.dataclass
class _Counting:
    stats: Stats
    types: dict[tuple[str, str], TypeTally] = dataclasses.field(default_factory=dict)
    actors: dict[str, ActorTally] = dataclasses.field(default_factory=dict)
    refs: set[str] = dataclasses.field(default_factory=set)

    def record(self, stream: str, kind: str, size: int) -> None:
        self.stats.records.add(size)
        self.stats.stream_kinds.setdefault(stream_kind(stream), Tally()).add(size)
        key = (stream_kind(stream), kind)
        if key not in self.types:
            self.types[key] = TypeTally(key[0], kind, EVENT_NAMES.get(kind, "?"))
        self.types[key].count += 1
        self.types[key].bytes += size
        actor = self.actor(stream)
        if actor is not None:
            actor.records += 1
            actor.bytes += size

    def actor(self, stream: str) -> ActorTally | None:
        name = actor_of(stream)
        if name is None:
            return None
        if name not in self.actors:
            self.actors[name] = ActorTally(name)
        return self.actors[name]


async def gather(store: Store, top: int) -> Stats:
    """Count every stream of ``store``; keep the ``top`` largest actors."""
    counting = _Counting(Stats())
    after = ""
    while True:
        page = await store.list_stream_infos(after=after, limit=STREAMS_PER_READ)
        for info in page:
            await _count_stream(store, info.stream, counting)
        if len(page) < STREAMS_PER_READ:
            break
        after = page[-1].stream
    stats = counting.stats
    await _count_values(store, counting.refs, stats.values)
    stats.types = sorted(counting.types.values(), key=lambda t: (-t.bytes, t.stream_kind, t.type))
    ranked = sorted(counting.actors.values(), key=lambda a: (-a.bytes, a.actor))
    stats.largest_actors = ranked[:top]
    return stats


async def _count_stream(store: Store, stream: str, counting: _Counting) -> None:
    stats = counting.stats
    stats.streams += 1
    actor = counting.actor(stream)
    if actor is not None:
        actor.streams += 1
    last = 0
    try:
        async for batch in store.read_batches(stream):
            for record in batch:
                counting.record(stream, record.type, len(record.data))
                counting.refs.update(record.refs)
                last = record.position
    except CorruptionError:  # the rest as stored, its damaged records counted
        async for salvaged in store.salvage(stream, last + 1):
            counting.record(stream, salvaged.type, len(salvaged.data))
            stats.damaged += salvaged.damage is not None
    snapshot = await store.salvage_snapshot(stream)
    if snapshot is not None:
        stats.snapshots.add(len(snapshot.data))
        if actor is not None:
            actor.bytes += len(snapshot.data)
        if snapshot.damage is not None:
            stats.damaged += 1
        else:
            loaded = await store.load_snapshot(stream)
            counting.refs.update(loaded.refs if loaded is not None else ())


async def _count_values(store: Store, digests: Iterable[str], tally: Tally) -> None:
    for digest in sorted(digests):
        try:
            tally.add(len(await store.read_value(digest)))
        except (CorruptionError, KeyError):  # damaged or missing: verify says which
            tally.add(0)
