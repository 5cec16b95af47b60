"""Large values stored once: the runtime's records refer to big payloads by digest.

`ValueStore` wraps the journal store a `Runtime` writes to. On the way in, every field
of an actor's records that holds a payload (a step's result, a turn's arguments and
result, a message's arguments, an event's payload, a state part, the same fields inside
a checkpoint and inside a retry's seed) and whose bytes are longer than the threshold is
stored as a journal *value* (content-addressed by its SHA-256, once per store) and the
field holds a reference instead: MessagePack extension `REF_CODE` with the 32 bytes of
the digest. The record lists the digests it refers to (`journal.NewRecord.refs`), and a
field is read as a reference only when its digest is among them, so a payload that
happens to look like a reference is never mistaken for one.

On the way out (`read`, `read_batches`, `read_all`, `load_snapshot`, `salvage`...), the
references are replaced by the values' bytes: everything above this module (replay,
status, the journal view, export, queries) sees the records exactly as they were before
large values existed, and an exported journal holds its values inline.

Before an append, the digests already stored are asked for (`has_values`) and their
bytes are not sent again; if a collection deleted one in between, the append fails with
`journal.MissingValueError`, writing nothing, and is sent again with every value's bytes.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from actorflow._events import (
    ActorSnapshot,
    EventDelivered,
    InvocationEnded,
    MessageAccepted,
    PendingEvent,
    SeedRecord,
    StatePart,
    StepCompleted,
    TurnCompleted,
    TurnContinued,
    TurnStarted,
)
from journal import (
    Appended,
    CorruptionError,
    MissingValueError,
    NewRecord,
    Record,
    Salvaged,
    SalvagedSnapshot,
    Snapshot,
    StreamAppend,
)
from journal._store import StoreConveniences

#: Default threshold: a payload encoded in more bytes than this is stored as a value.
DEFAULT_VALUE_THRESHOLD = 8 * 1024
#: The largest payload a runtime storing values accepts (SQLite's default blob limit is
#: 1,000,000,000 bytes).
MAX_VALUE_BYTES = 512 * 1024 * 1024
#: The MessagePack extension type of a reference (its data: the digest's 32 bytes).
REF_CODE = 0x56
_REF_HEAD = bytes((0xC7, 32, REF_CODE))
_REF_LEN = len(_REF_HEAD) + 32
#: Bytes of values the read cache keeps, and the largest value it keeps.
CACHE_BYTES = 64 * 1024 * 1024
CACHE_VALUE_MAX = 16 * 1024 * 1024

_encoder = msgspec.msgpack.Encoder()
#: Record type tag -> the Struct it decodes as, for the types that hold payloads.
_TYPES: dict[str, type[msgspec.Struct]] = {
    "turn": TurnStarted,
    "step": StepCompleted,
    "turn_done": TurnCompleted,
    "turn_continued": TurnContinued,
    "message": MessageAccepted,
    "event": EventDelivered,
    "ended": InvocationEnded,
    "part": StatePart,
}
_DECODERS = {tag: msgspec.msgpack.Decoder(kind) for tag, kind in _TYPES.items()}
_SNAPSHOT = msgspec.msgpack.Decoder(ActorSnapshot)
#: Streams whose records (and, for actor streams, snapshots) may hold references.
_PREFIXES = ("actor/", "inbox/", "outcomes/", "state/")

Swap = Callable[[bytes], bytes]


def ref_bytes(digest: str) -> bytes:
    """A reference to the value ``digest``, as a field holds it."""
    return _REF_HEAD + bytes.fromhex(digest)


def ref_digest(data: bytes) -> str | None:
    """The digest ``data`` refers to, if it has the form of a reference."""
    if len(data) == _REF_LEN and data.startswith(_REF_HEAD):
        return data[len(_REF_HEAD) :].hex()
    return None


def _raw(value: msgspec.Raw, swap: Swap) -> msgspec.Raw:
    data = bytes(value)
    new = swap(data)
    return value if new is data else msgspec.Raw(new)


def _seed(seed: tuple[SeedRecord, ...], swap: Swap) -> tuple[SeedRecord, ...]:
    return tuple(SeedRecord(s.type, _payload(s.type, s.data, swap) or s.data) for s in seed)


def _event(event: EventDelivered, swap: Swap) -> EventDelivered:
    return msgspec.structs.replace(event, payload=_raw(event.payload, swap))


def _mapped(entry: Any, swap: Swap) -> Any:
    """``entry`` with each of its payload fields passed through ``swap``."""
    replace = msgspec.structs.replace
    if isinstance(entry, TurnStarted | TurnContinued | MessageAccepted):
        entry = replace(entry, args=_raw(entry.args, swap))
        if isinstance(entry, MessageAccepted) and entry.seed:
            entry = replace(entry, seed=_seed(entry.seed, swap))
        return entry
    if isinstance(entry, StepCompleted):
        return replace(entry, value=_raw(entry.value, swap))
    if isinstance(entry, TurnCompleted):
        return replace(entry, result=_raw(entry.result, swap))
    if isinstance(entry, EventDelivered):
        return _event(entry, swap)
    if isinstance(entry, StatePart):
        return replace(entry, data=swap(entry.data))
    if isinstance(entry, InvocationEnded):
        reply = replace(entry.reply, result=swap(entry.reply.result))
        return replace(entry, reply=reply, seed=_seed(entry.seed, swap))
    if isinstance(entry, ActorSnapshot):
        return replace(
            entry,
            state=_raw(entry.state, swap),
            pending=[PendingEvent(p.position, _event(p.event, swap)) for p in entry.pending],
            results={k: replace(r, result=swap(r.result)) for k, r in entry.results.items()},
            continuation=entry.continuation
            and replace(entry.continuation, args=_raw(entry.continuation.args, swap)),
        )
    return entry


def _payload(kind: str, data: bytes, swap: Swap) -> bytes | None:
    """A record payload (of type tag ``kind``, or a checkpoint if ``kind`` is empty) with
    its payload fields swapped, or None if it holds none or does not decode."""
    decoder: Any = _DECODERS.get(kind) if kind else _SNAPSHOT
    if decoder is None:
        return None
    try:
        entry = decoder.decode(data)
    except msgspec.DecodeError:
        return None  # not ours to judge: left as it is
    return _encoder.encode(_mapped(entry, swap))


class _Shrink:
    """Swaps payloads longer than the threshold for references, collecting the values."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.values: dict[str, bytes] = {}
        self.lookalikes: set[str] = set()

    def __call__(self, data: bytes) -> bytes:
        if len(data) <= self.threshold:
            digest = ref_digest(data)
            if digest is not None:
                self.lookalikes.add(digest)
            return data
        digest = hashlib.sha256(data).hexdigest()
        self.values[digest] = data
        return ref_bytes(digest)

    def shrink(self, kind: str, data: bytes) -> tuple[bytes, dict[str, bytes]] | None:
        """``data`` with its large payloads as references, and their values; None if it
        has none (or a payload of its own looks like a reference to one of them)."""
        self.values, self.lookalikes = {}, set()
        new = _payload(kind, data, self)
        if new is None or not self.values or self.lookalikes & self.values.keys():
            return None
        return new, self.values


class _Grow:
    """Swaps references (to digests in ``wanted``, if given) for the values' bytes."""

    def __init__(self, values: Mapping[str, bytes], wanted: Iterable[str] | None) -> None:
        self.values = values
        self.wanted = None if wanted is None else set(wanted)
        self.found: set[str] = set()

    def __call__(self, data: bytes) -> bytes:
        digest = ref_digest(data)
        if digest is None or (self.wanted is not None and digest not in self.wanted):
            return data
        self.found.add(digest)
        return self.values.get(digest, data)


class ValueStore(StoreConveniences):
    """A journal store that keeps the runtime's large payloads as values (see the module).

    Every method of the store it wraps is available; those that write or read records
    and snapshots go through the translation.
    """

    def __init__(self, store: Any, threshold: int = DEFAULT_VALUE_THRESHOLD) -> None:
        if not isinstance(threshold, int) or threshold < 1:
            raise ValueError(f"value_threshold must be an integer >= 1, got {threshold!r}")
        self.inner = store
        self.value_threshold = threshold
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._cached = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def identity(self) -> str:
        return str(self.inner.identity)

    @property
    def max_record_bytes(self) -> int:
        return int(self.inner.max_record_bytes)

    # -- writing -------------------------------------------------------------------------

    def _shrunk(self, append: StreamAppend) -> StreamAppend:
        if not append.stream.startswith(_PREFIXES):
            return append
        shrink = _Shrink(self.value_threshold)
        values: dict[str, bytes] = {}  # merged with the append's own values if any shrank
        records: list[NewRecord] = []
        changed = False
        for record in append.records:
            done = len(record.data) > self.value_threshold and shrink.shrink(
                record.type, record.data
            )
            if not done:
                records.append(record)
                continue
            data, found = done
            values.update(found)
            refs = tuple(dict.fromkeys((*record.refs, *found)))
            records.append(NewRecord(record.type, data, refs))
            changed = True
        snapshot, snapshot_refs = append.snapshot, append.snapshot_refs
        if snapshot is not None and len(snapshot) > self.value_threshold:
            done = append.stream.startswith("actor/") and shrink.shrink("", snapshot)
            if done:
                snapshot, found = done
                values.update(found)
                snapshot_refs = tuple(dict.fromkeys((*snapshot_refs, *found)))
                changed = True
        if not changed:
            return append
        return msgspec.structs.replace(
            append,
            records=tuple(records),
            snapshot=snapshot,
            snapshot_refs=snapshot_refs,
            values={**append.values, **values},
        )

    def append_many(self, appends: Sequence[StreamAppend]) -> Awaitable[list[Appended]]:
        threshold = self.value_threshold
        for append in appends:
            if append.values or (
                append.stream.startswith(_PREFIXES)
                and (
                    (append.snapshot is not None and len(append.snapshot) > threshold)
                    or any(len(record.data) > threshold for record in append.records)
                )
            ):
                break
        else:  # (the hot path: nothing to store as a value, the inner store's awaitable)
            return self.inner.append_many(appends)  # type: ignore[no-any-return]
        full = [self._shrunk(append) for append in appends]
        given = {digest for append in full for digest in append.values}
        if not given:
            return self.inner.append_many(full)  # type: ignore[no-any-return]
        return self._append_with_values(full, given)

    async def _append_with_values(
        self, full: list[StreamAppend], given: set[str]
    ) -> list[Appended]:
        """Send only the values the journal does not hold yet (all of them again should
        one be collected meanwhile)."""
        known = await self.inner.has_values(given)
        lean = [
            msgspec.structs.replace(
                append, values={d: v for d, v in append.values.items() if d not in known}
            )
            if known & append.values.keys()
            else append
            for append in full
        ]
        try:
            return list(await self.inner.append_many(lean))
        except MissingValueError:  # collected since has_values: send every value's bytes
            return list(await self.inner.append_many(full))

    async def save_snapshot(
        self,
        stream: str,
        position: int,
        data: bytes,
        *,
        epoch: int | None = None,
        refs: tuple[str, ...] = (),
        values: Mapping[str, bytes] | None = None,
    ) -> None:
        given = dict(values or {})
        if stream.startswith("actor/") and len(data) > self.value_threshold:
            done = _Shrink(self.value_threshold).shrink("", data)
            if done:
                data, found = done
                given.update(found)
                refs = tuple(dict.fromkeys((*refs, *found)))
        await self.inner.save_snapshot(
            stream, position, data, epoch=epoch, refs=refs, values=given or None
        )

    # -- reading -------------------------------------------------------------------------

    async def read_value(self, digest: str) -> bytes:
        """The value ``digest`` (from the cache if it is there)."""
        data = self._cache.get(digest)
        if data is not None:
            self._cache.move_to_end(digest)
            return data
        data = bytes(await self.inner.read_value(digest))
        if len(data) <= CACHE_VALUE_MAX:
            self._cache[digest] = data
            self._cached += len(data)
            while self._cached > CACHE_BYTES:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old)
        return data

    async def _grown(self, kind: str, data: bytes, refs: Iterable[str] | None) -> bytes:
        """``data`` with its references (to ``refs``; to any stored value if None) replaced
        by the values' bytes."""
        probe = _Grow({}, refs)
        if _payload(kind, data, probe) is None or not probe.found:
            return data
        values: dict[str, bytes] = {}
        for digest in sorted(probe.found):
            if refs is None:
                try:
                    values[digest] = await self.read_value(digest)
                except MissingValueError:
                    continue  # salvaging: a lookalike, or lost; left as it is
            else:
                values[digest] = await self.read_value(digest)
        return _payload(kind, data, _Grow(values, refs)) or data

    async def _record(self, record: Record) -> Record:
        if not record.refs or not record.stream.startswith(_PREFIXES):
            return record
        data = await self._grown(record.type, record.data, record.refs)
        return msgspec.structs.replace(record, data=data, refs=())

    async def read_batches(
        self, stream: str, from_position: int = 1, *, limit: int | None = None
    ) -> AsyncIterator[list[Record]]:
        async for batch in self.inner.read_batches(stream, from_position, limit=limit):
            if any(record.refs for record in batch):
                batch = [await self._record(record) for record in batch]
            yield batch

    async def read_all(self, from_global_position: int = 1) -> AsyncIterator[Record]:
        async for record in self.inner.read_all(from_global_position):
            yield await self._record(record)

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        snapshot: Snapshot | None = await self.inner.load_snapshot(stream)
        if snapshot is None or not snapshot.refs or not stream.startswith("actor/"):
            return snapshot
        data = await self._grown("", snapshot.data, snapshot.refs)
        return msgspec.structs.replace(snapshot, data=data, refs=())

    async def salvage(self, stream: str, from_position: int = 1) -> AsyncIterator[Salvaged]:
        async for record in self.inner.salvage(stream, from_position):
            if stream.startswith(_PREFIXES) and record.damage is None:
                try:
                    data = await self._grown(record.type, record.data, None)
                except CorruptionError as exc:  # a value it refers to is damaged
                    record = msgspec.structs.replace(record, damage=str(exc))
                else:
                    record = msgspec.structs.replace(record, data=data)
            yield record

    async def salvage_snapshot(self, stream: str) -> SalvagedSnapshot | None:
        snapshot: SalvagedSnapshot | None = await self.inner.salvage_snapshot(stream)
        if snapshot is None or snapshot.damage is not None or not stream.startswith("actor/"):
            return snapshot
        try:
            data = await self._grown("", snapshot.data, None)
        except CorruptionError as exc:  # a value it refers to is damaged
            return msgspec.structs.replace(snapshot, damage=str(exc))
        return msgspec.structs.replace(snapshot, data=data)

    # -- the rest, as the store does it --------------------------------------------------

    async def last_position(self, stream: str) -> int:
        return int(await self.inner.last_position(stream))

    async def has_values(self, digests: Iterable[str]) -> set[str]:
        return set(await self.inner.has_values(digests))

    async def collect_values(self) -> int:
        return int(await self.inner.collect_values())

    async def close(self) -> None:
        await self.inner.close()


def values_store(store: Any, threshold: int | None) -> tuple[Any, int]:
    """The store a runtime writes to (``store`` wrapped in a `ValueStore` unless
    ``threshold`` is 0 or None) and the most bytes a payload may take (the record limit,
    or `MAX_VALUE_BYTES` when values are on)."""
    limit = int(store.max_record_bytes)
    if threshold is not None and (not isinstance(threshold, int) or threshold < 0):
        raise ValueError(f"value_threshold must be a byte count >= 0 (0: off), got {threshold!r}")
    if not threshold:
        return store, limit
    return ValueStore(store, threshold), max(limit, MAX_VALUE_BYTES)
