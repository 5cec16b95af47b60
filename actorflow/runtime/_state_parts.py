"""An actor's state stored by reference: a checkpoint writes only the parts that changed.

A state whose encoding is at most `INLINE_BYTES` is kept whole in the checkpoint, as it
always was. A larger one is cut into parts (`split`) whose concatenation is exactly its
MessagePack encoding:

- the top-level value (the state Struct: a map of fields, or an array if ``array_like``)
  is a run of entries (a field's key and value);
- an entry whose value is a map or array of at least `SPLIT_BYTES` (a conversation's list
  of messages, a dict of documents) is opened: its key and container header form a part
  of their own, and each of its elements is a unit;
- units are grouped into parts of at least `PART_MIN` bytes, a part ending after a unit
  whose CRC-32 has its low `BOUNDARY_BITS` bits zero (or once it reaches `PART_MAX`);
  a unit of at least `PART_MAX` bytes is a part of its own, so that a large element (a
  document a tool returned) is the same part wherever it sits, and, with large values
  on (``runtime/_big_values.py``), the same value as the step result it came from.
  Boundaries depend on the units' contents, not their indexes, so inserting or deleting
  an element changes the parts around it only, and appending elements changes only the
  last part (and the small part holding the container's header, whose count changed).

Parts are held by records of the actor's ``state/<Type>/<key>`` stream, written in the
same transaction as the turn's end; the checkpoint lists the positions of those records in
order (`ActorSnapshot.parts`), and the state is their concatenation. A part whose bytes
are unchanged is referred to where it is: stored by reference, not written again. A part
that extends one already stored (the last part of a list that grew) is held by the
records of the older one plus one record with only what was added (up to `CHAIN_MAX`
records, then it is written whole). So appending a message writes the message, the small
header part, and the checkpoint's list of positions.

Garbage: every `collect` (with the checkpoint's compaction, every ``snapshot_every``
turns) deletes the stream's records before the lowest position the checkpoint still
refers to. Records superseded between live ones cannot be deleted that way, so when the
bytes stored exceed the bytes referenced by more than both the referenced bytes and
`FRESH_SLACK`, the next checkpoint writes all its parts afresh, and a collection follows
it at once, deleting everything before them. So after a collection the stream holds at
most twice the bytes the previous checkpoint referred to, plus `FRESH_SLACK`, plus what
the turns since the previous collection wrote. With ``snapshot_every=0`` (delete
nothing) no part is ever deleted, nor written afresh.
"""

from __future__ import annotations

import zlib

import msgspec

from actorflow._errors import ActorflowError
from actorflow._events import STATE_CODEC, ActorSnapshot, StatePart, state_stream
from journal import NewRecord, Store, StreamAppend

#: A state encoded in at most this many bytes is kept whole in the checkpoint.
INLINE_BYTES = 16 * 1024
#: A top-level entry whose value is a map or array this big is split into its elements.
SPLIT_BYTES = 8 * 1024
#: A part ends only once it holds this many bytes (or at a forced boundary)...
PART_MIN = 4 * 1024
#: ... after a unit whose CRC-32 has this many low bits zero (1 in 4 units), ...
BOUNDARY_BITS = 2
#: ... or as soon as it holds this many.
PART_MAX = 64 * 1024
#: The most records one part may be held by (its first form, then what appends added).
CHAIN_MAX = 8
#: Dead bytes tolerated on the parts stream beyond the live ones before a fresh rewrite.
FRESH_SLACK = 256 * 1024

_MASK = (1 << BOUNDARY_BITS) - 1
#: How many leading bytes index parts for finding the one a new part extends.
_HEAD = 8
#: MessagePack nil: the checkpoint's ``state`` when the state is in parts.
NIL = b"\xc0"

_FIELDS = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])
_ITEMS = msgspec.msgpack.Decoder(list[msgspec.Raw])
_encode_key = msgspec.msgpack.Encoder().encode


def _container(data: bytes) -> tuple[bool, int, int] | None:
    """(is a map, header length, entry count) when ``data`` starts with a map or array."""
    if not data:
        return None
    first = data[0]
    if 0x80 <= first <= 0x9F:
        return first < 0x90, 1, first & 0x0F
    if first in (0xDC, 0xDE):
        return first == 0xDE, 3, int.from_bytes(data[1:3])
    if first in (0xDD, 0xDF):
        return first == 0xDF, 5, int.from_bytes(data[1:5])
    return None


def _entries(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    """A container's header and its entries as (key, value) bytes (the key empty in an
    array), or None for anything else (including a map whose keys are not all strings)."""
    shape = _container(data)
    if shape is None:
        return None
    is_map, header, count = shape
    try:
        if is_map:
            fields = _FIELDS.decode(data)
            entries = [(_encode_key(key), bytes(value)) for key, value in fields.items()]
        else:
            entries = [(b"", bytes(item)) for item in _ITEMS.decode(data)]
    except msgspec.DecodeError:
        return None
    if len(entries) != count:  # a map with repeated keys
        return None
    return data[:header], entries


def _units(data: bytes) -> list[tuple[bytes, bool]]:
    """``data`` as units, each with whether a part must start at it."""
    top = _entries(data)
    if top is None:
        return [(data, True)]
    pending, entries = top
    units: list[tuple[bytes, bool]] = []
    start = True
    for key, value in entries:
        inner = _entries(value) if len(value) >= SPLIT_BYTES else None
        if inner is None or not inner[1]:
            units.append((pending + key + value, start))
            pending, start = b"", False
            continue
        head, items = inner
        units.append((pending + key + head, True))
        pending = b""
        units.extend((item_key + item, index == 0) for index, (item_key, item) in enumerate(items))
        start = True
    if pending:  # a top-level container with no entries
        units.append((pending, True))
    return units


def split(data: bytes) -> list[bytes]:
    """``data`` (an encoded state) cut into parts whose concatenation is ``data``."""
    units = _units(data)
    parts: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for unit, start in units:
        if (start or len(unit) >= PART_MAX) and current:  # a big unit: a part of its own
            parts.append(b"".join(current))
            current, size = [], 0
        current.append(unit)
        size += len(unit)
        if size >= PART_MAX or (size >= PART_MIN and not zlib.crc32(unit) & _MASK):
            parts.append(b"".join(current))
            current, size = [], 0
    if current:
        parts.append(b"".join(current))
    if b"".join(parts) != data:  # never expected: keep the state whole rather than guess
        return [data]
    return parts


async def read_parts(store: Store, actor_id: str, refs: list[int]) -> bytes:
    """The encoded state that a checkpoint's ``parts`` refer to."""
    found, _, _ = await _read(store, actor_id, refs)
    return b"".join(found[position] for position in refs)


async def state_bytes(store: Store, actor_id: str, checkpoint: ActorSnapshot) -> bytes:
    """A checkpoint's encoded state, whether kept whole or in parts."""
    if checkpoint.parts:
        return await read_parts(store, actor_id, checkpoint.parts)
    return bytes(checkpoint.state)


async def _read(
    store: Store, actor_id: str, refs: list[int]
) -> tuple[dict[int, bytes], dict[int, int], int]:
    """The parts at ``refs``; the stored size of every record from the lowest on; the
    last position read."""
    wanted = set(refs)
    found: dict[int, bytes] = {}
    sizes: dict[int, int] = {}
    last = 0
    stream = state_stream(actor_id)
    async for batch in store.read_batches(stream, min(refs)):
        for record in batch:
            sizes[record.position] = len(record.data)
            last = record.position
            if record.position in wanted:
                found[record.position] = STATE_CODEC.decode(record).data
    missing = wanted - found.keys()
    if missing:
        raise ActorflowError(
            f"actor {actor_id}: its checkpoint refers to state parts at positions "
            f"{sorted(missing)[:5]} of {stream!r}, which hold nothing; the journal is damaged"
        )
    return found, sizes, last


class _Plan(msgspec.Struct):
    refs: list[int]
    known: dict[bytes, tuple[int, ...]]
    sizes: dict[int, int]
    last: int
    fresh: bool = False


def _grouped(
    parts: list[bytes], refs: list[int], found: dict[int, bytes]
) -> dict[bytes, tuple[int, ...]]:
    """Which positions of ``refs`` hold each part (as far as records and parts line up)."""
    known: dict[bytes, tuple[int, ...]] = {}
    index = 0
    for part in parts:
        length, taken = 0, index
        while taken < len(refs) and length < len(part):
            length += len(found[refs[taken]])
            taken += 1
        if length != len(part):
            break
        known[part] = tuple(refs[index:taken])
        index = taken
    return known


class StateParts:
    """What one actor's latest committed checkpoint refers to on its parts stream, and
    the bookkeeping that keeps that stream bounded."""

    def __init__(self, store: Store, actor_id: str, *, collecting: bool = True) -> None:
        self.store = store
        #: Whether `collect` runs (with compaction): if not, nothing is written afresh.
        self.collecting = collecting
        #: A checkpoint wrote every part afresh: collect now, before the next checkpoint.
        self.due = False
        self.actor_id = actor_id
        self.stream = state_stream(actor_id)
        self.refs: list[int] = []  # the committed checkpoint's records, in order
        #: Its parts' bytes -> the positions holding them (a part grown by appends is held
        #: by the records of its earlier form and one with what was added).
        self._known: dict[bytes, tuple[int, ...]] = {}
        self.sizes: dict[int, int] = {}  # stored size of each record kept, by position
        self._last: int | None = None  # the stream's last position, once known
        self._first = 1  # no record before this position is stored
        self._pending: _Plan | None = None

    @property
    def live(self) -> int:
        """Bytes stored in the records the committed checkpoint refers to."""
        return sum(self.sizes.get(position, 0) for position in set(self.refs))

    @property
    def stored(self) -> int:
        """Bytes stored in the records known to be on the stream."""
        return sum(self.sizes.values())

    @property
    def holding(self) -> int:
        """The stream's last position if it may hold records not yet deleted, else 0."""
        return self._last if self._last and self._first <= self._last else 0

    async def restore(self, checkpoint: ActorSnapshot) -> bytes:
        """The encoded state of the checkpoint being restored (reading its parts, if it
        is in parts); from here on, this tracks the parts it refers to."""
        if checkpoint.parts:
            return await self.load(checkpoint.parts)
        if checkpoint.parts_end:  # parts of an earlier checkpoint are left to delete
            self._last = checkpoint.parts_end
        return bytes(checkpoint.state)

    async def load(self, refs: list[int]) -> bytes:
        """Read the parts of the checkpoint being restored; return the encoded state."""
        found, sizes, last = await _read(self.store, self.actor_id, refs)
        self.refs, self.sizes, self._last = list(refs), sizes, last
        data = b"".join(found[position] for position in refs)
        self._known = _grouped(split(data), refs, found)
        return data

    async def prepare(self, data: bytes) -> tuple[list[int], StreamAppend | None]:
        """The records the checkpoint of ``data`` (the encoded state) refers to, and the
        append that writes the new ones (None if none are new); `committed` once it is.

        A part already stored is referred to where it is. A part that extends one already
        stored (the last part of a list that grew) is referred to as the records of that
        one plus a record of what was added, up to `CHAIN_MAX` records; any other new
        part is written whole.
        """
        self._pending = None
        if len(data) <= INLINE_BYTES:
            self._pending = _Plan([], {}, {}, self._last or 0)
            return [], None
        parts = split(data)
        big = max(map(len, parts)) > self.store.max_record_bytes // 2
        if big and not getattr(self.store, "value_threshold", 0):  # else parts are values
            self._pending = _Plan([], {}, {}, self._last or 0)
            return [], None  # too big to be a record: kept whole in the checkpoint
        if self._last is None:
            self._last = await self.store.last_position(self.stream)
        start = self._last
        live = self.live
        fresh = self.collecting and self.stored - live > max(live, FRESH_SLACK)
        known: dict[bytes, tuple[int, ...]] = {} if fresh else dict(self._known)
        heads: dict[bytes, list[bytes]] = {}
        for part in known:
            heads.setdefault(part[:_HEAD], []).append(part)
        refs: list[int] = []
        records: list[NewRecord] = []
        sizes: dict[int, int] = {}
        position = start
        for part in parts:
            held = known.get(part)
            if held is None:
                base = max(
                    (old for old in heads.get(part[:_HEAD], ()) if part.startswith(old)),
                    key=len,
                    default=b"",
                )
                if base and len(known[base]) >= CHAIN_MAX:
                    base = b""
                position += 1
                record = STATE_CODEC.encode(StatePart(part[len(base) :]))
                records.append(record)
                sizes[position] = len(record.data)
                held = known[part] = (known[base] if base else ()) + (position,)
            refs.extend(held)
        used = set(parts)
        known = {part: held for part, held in known.items() if part in used}
        self._pending = _Plan(refs, known, sizes, position, fresh)
        if not records:
            return refs, None
        return refs, StreamAppend(self.stream, tuple(records), start)

    def committed(self) -> None:
        """The checkpoint that `prepare` planned is in the journal."""
        plan, self._pending = self._pending, None
        if plan is None:
            return
        self.refs, self._known = plan.refs, plan.known
        self.sizes.update(plan.sizes)
        if self._last is not None or plan.sizes:
            self._last = plan.last
        self.due = self.due or plan.fresh

    async def collect(self) -> None:
        """Delete the stream's records before the lowest position still referred to (all
        of them when the state is kept whole)."""
        self.due = False
        if not self._last:
            return
        through = min(self.refs, default=self._last + 1) - 1
        if through < self._first:
            return
        await self.store.save_snapshot(self.stream, self._last, b"")
        await self.store.truncate(self.stream, through)
        self._first = through + 1
        self.sizes = {at: size for at, size in self.sizes.items() if at > through}
