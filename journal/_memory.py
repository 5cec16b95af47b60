"""`MemoryStore`: the journal held in memory, for tests and for embedding without a disk."""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

import anyio.lowlevel

from journal._errors import (
    CorruptValueError,
    InvalidStreamError,
    MissingValueError,
    SnapshotError,
    StoreNotEmptyError,
)
from journal._records import (
    Appended,
    NewRecord,
    Problem,
    Record,
    Salvaged,
    SalvagedSnapshot,
    Snapshot,
    StreamAppend,
    StreamInfo,
    VerifyReport,
    check_prefix,
    check_stream_name,
    distinct,
    value_intact,
)
from journal._store import (
    DEFAULT_MAX_RECORD_BYTES,
    StoreBase,
    check_digest,
    check_digests,
    check_identity,
    check_limit,
    check_position,
    is_identity,
    new_identity,
)
from journal._streams import Changes, StreamState, wanted_values

_READ_BATCH = 512


class MemoryStore(StoreBase):
    """A `Store` in process memory with the same semantics as the durable stores.

    Nothing survives the process; everything else (positions, conflicts, fencing,
    snapshots, truncation, size limits, closing) behaves as in `SqliteStore`.
    """

    def __init__(
        self, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, identity: str | None = None
    ) -> None:
        """A new, empty journal; ``identity`` gives it a chosen identity (for tests), else
        it gets a random one."""
        if identity is None:
            identity = new_identity()
        elif not is_identity(identity):
            raise ValueError(
                f"identity must be 32 lowercase hex characters, got {identity!r}; leave it "
                f"out for a random one"
            )
        #: The journal's identity (see `Store.identity`).
        self.identity = identity
        self.max_record_bytes = max_record_bytes
        self._states: dict[str, StreamState] = {}
        self._streams: dict[str, list[Record]] = {}
        self._log: list[Record] = []  # every stored record, in global order
        self._snapshots: dict[str, Snapshot] = {}
        self._next_global = 1
        #: Stored values by digest, and how many stored records and snapshots refer to
        #: each (a record or snapshot counts once per distinct digest it refers to).
        self._values: dict[str, bytes] = {}
        self._referrers: dict[str, int] = {}

    def _changes(self) -> Changes:
        return Changes(self._states, _absent, self._next_global)

    async def append_many(self, appends: Sequence[StreamAppend]) -> list[Appended]:
        """Append to several streams atomically: every part is written, or none."""
        self._check_appends(appends)
        await anyio.lowlevel.checkpoint()
        self._check_open()
        changes = self._changes()
        changes.check_appends(appends)
        self._store_values(*wanted_values(appends))
        results = []
        for part in appends:
            state, first, first_global = changes.append(part)
            stored = self._streams.setdefault(part.stream, [])
            for offset, new in enumerate(part.records):
                record = Record(
                    part.stream, first + offset, first_global + offset, new.type, new.data, new.refs
                )
                stored.append(record)
                self._log.append(record)
                self._refer(record.refs, 1)
            if part.snapshot is not None:
                snapshot = Snapshot(part.stream, state.last, part.snapshot, part.snapshot_refs)
                self._replace_snapshot(snapshot)
            results.append(Appended(part.stream, first, state.last, changes.next_global - 1))
        self._next_global = changes.next_global
        changes.commit()
        return results

    def _store_values(self, given: dict[str, bytes], wanted: list[str]) -> None:
        """Refuse (writing nothing) unless every wanted digest is stored; then store the
        given values not stored yet."""
        missing = [digest for digest in wanted if digest not in self._values]
        if missing:
            raise MissingValueError(missing, "append refused")
        for digest, data in given.items():
            self._values.setdefault(digest, data)

    def _refer(self, refs: tuple[str, ...], delta: int) -> None:
        referrers = self._referrers
        for digest in distinct(refs) if refs else ():
            count = referrers.get(digest, 0) + delta
            if count:
                referrers[digest] = count
            else:
                del referrers[digest]

    def _replace_snapshot(self, snapshot: Snapshot | None, stream: str = "") -> None:
        old = self._snapshots.pop(snapshot.stream if snapshot else stream, None)
        if old is not None:
            self._refer(old.refs, -1)
        if snapshot is not None:
            self._snapshots[snapshot.stream] = snapshot
            self._refer(snapshot.refs, 1)

    def restore_stream(
        self,
        stream: str,
        records: Sequence[NewRecord],
        *,
        first: int = 1,
        snapshot: tuple[int, bytes] | None = None,
    ) -> None:
        """Load ``stream`` as another store holds it, for a copy to work on (a dry run):
        ``records`` take positions ``first``, ``first + 1``, ... (the positions before
        ``first`` count as truncated), and ``snapshot`` (position, data) is its latest
        snapshot. Only into a stream this store never held; no owner epoch is set."""
        check_stream_name(stream)
        check_position(stream, "first", first, 1)
        self._check_open()
        if stream in self._states:
            raise InvalidStreamError(f"stream {stream!r} exists; restore only new streams")
        last = first + len(records) - 1
        taken = snapshot[0] if snapshot is not None else 0
        if taken > last or (taken and taken < first - 1):
            raise SnapshotError(
                f"stream {stream!r}: a snapshot at {taken} must cover the truncated positions "
                f"(before {first}) and no more than the last record ({last})"
            )
        stored = self._streams[stream] = []
        for offset, new in enumerate(records):
            record = Record(stream, first + offset, self._next_global, new.type, bytes(new.data))
            self._next_global += 1
            stored.append(record)
            self._log.append(record)
        self._states[stream] = StreamState(stream, last=last, first=first, snapshot=taken)
        if snapshot is not None:
            self._snapshots[stream] = Snapshot(stream, taken, bytes(snapshot[1]))

    async def create_stream(self, stream: str, *, first_position: int = 1, epoch: int = 0) -> None:
        """Create ``stream`` with no records, its next record at ``first_position``, under
        ``epoch`` (see `Store.create_stream`)."""
        check_position(stream, "first_position", first_position, 1)
        check_position(stream, "epoch", epoch, 0)
        self._check_open()
        changes = self._changes()
        changes.create(stream, first_position, epoch)
        changes.commit()

    async def adopt_identity(self, identity: str) -> None:
        """Take ``identity`` as the journal's identity: only while it holds no stream."""
        check_identity(identity)
        self._check_open()
        held = sorted(s.name for s in self._states.values() if s.last or s.epoch)
        if held:
            raise StoreNotEmptyError("the memory journal", len(held), held[:3])
        self.identity = identity

    async def read_batches(
        self, stream: str, from_position: int = 1, *, limit: int | None = None
    ) -> AsyncIterator[list[Record]]:
        """Iterate over ``stream``'s records in order, a list at a time (at most ``limit``
        records in all, if given)."""
        check_position(stream, "from_position", from_position, 1)
        check_limit(stream, limit)
        left = _READ_BATCH if limit is None else limit
        while left > 0:
            self._check_open()
            stored = self._streams.get(stream, [])
            index = bisect.bisect_left(stored, from_position, key=lambda r: r.position)
            batch = stored[index : index + min(_READ_BATCH, left)]
            if not batch:
                return
            yield batch
            if limit is not None:
                left -= len(batch)
            from_position = batch[-1].position + 1
            await anyio.lowlevel.checkpoint()

    async def salvage(self, stream: str, from_position: int = 1) -> AsyncIterator[Salvaged]:
        """Iterate over ``stream``'s records in order (nothing in memory is ever damaged)."""
        async for batch in self.read_batches(stream, from_position):
            for r in batch:
                yield Salvaged(r.stream, r.position, r.global_position, r.type, r.data)

    async def salvage_snapshot(self, stream: str) -> SalvagedSnapshot | None:
        """The latest snapshot of ``stream`` (nothing in memory is ever damaged)."""
        snapshot = await self.load_snapshot(stream)
        if snapshot is None:
            return None
        return SalvagedSnapshot(stream, snapshot.position, snapshot.data)

    async def read_all(self, from_global_position: int = 1) -> AsyncIterator[Record]:
        """Iterate over every stored record in global order."""
        check_position("<global>", "from_global_position", from_global_position, 1)
        while True:
            self._check_open()
            index = bisect.bisect_left(
                self._log, from_global_position, key=lambda r: r.global_position
            )
            batch = self._log[index : index + _READ_BATCH]
            if not batch:
                return
            for record in batch:
                yield record
            from_global_position = batch[-1].global_position + 1
            await anyio.lowlevel.checkpoint()

    async def last_position(self, stream: str) -> int:
        """The stream's last position (0 for a stream never written)."""
        return (await self.stream_info(stream)).last_position

    async def stream_info(self, stream: str) -> StreamInfo:
        """Positions, owner epoch and snapshot position of ``stream``."""
        check_stream_name(stream)
        self._check_open()
        state = self._states.get(stream) or StreamState(stream)
        return StreamInfo(stream, state.last, state.first, state.epoch, state.snapshot)

    async def stream_infos(self, streams: Sequence[str]) -> list[StreamInfo]:
        """`stream_info` of each of ``streams``, in their order."""
        return [await self.stream_info(stream) for stream in streams]

    async def list_streams(self, prefix: str = "") -> list[str]:
        """Names of the streams holding (or having held) records, starting with ``prefix``."""
        check_prefix(prefix)
        self._check_open()
        return sorted(s.name for s in self._states.values() if s.last and s.name.startswith(prefix))

    async def list_stream_infos(
        self, prefix: str = "", *, after: str = "", limit: int = 1000
    ) -> list[StreamInfo]:
        """The streams named after ``after`` that start with ``prefix`` (and hold, or held,
        records), with their infos, in name order: at most ``limit``."""
        check_prefix(prefix)
        check_prefix(after)
        check_limit("<streams>", limit)
        self._check_open()
        names = sorted(
            s.name
            for s in self._states.values()
            if s.last and s.name > after and s.name.startswith(prefix)
        )
        return [await self.stream_info(name) for name in names[:limit]]

    async def claim(self, stream: str) -> int:
        """Become the owner of ``stream``: return a new epoch, higher than every earlier one
        (since the stream was last deleted)."""
        check_stream_name(stream)
        self._check_open()
        changes = self._changes()
        state = changes.claim(stream)
        changes.commit()
        return state.epoch

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
        """Save ``data`` as the state of ``stream`` through ``position`` (inclusive),
        referring to the values ``refs`` (given in ``values`` or stored)."""
        check_position(stream, "position", position, 1)
        given = self._check_snapshot_values(stream, refs, values)
        self._check_open()
        changes = self._changes()
        changes.snapshot(stream, position, epoch)
        try:
            self._store_values(given, [ref for ref in refs if ref not in given])
        except MissingValueError:
            changes.rollback()
            raise
        self._replace_snapshot(Snapshot(stream, position, bytes(data), refs))
        changes.commit()

    async def read_value(self, digest: str) -> bytes:
        """The stored value ``digest``, its hash checked."""
        check_digest(digest)
        self._check_open()
        data = self._values.get(digest)
        if data is None:
            raise MissingValueError([digest], "read_value")
        if not value_intact(digest, data):
            raise CorruptValueError(digest)
        return data

    async def has_values(self, digests: Iterable[str]) -> set[str]:
        """Those of ``digests`` that are stored."""
        listed = check_digests(digests)
        self._check_open()
        return {digest for digest in listed if digest in self._values}

    async def collect_values(self) -> int:
        """Delete every value that no stored record or snapshot refers to."""
        self._check_open()
        garbage = [digest for digest in self._values if digest not in self._referrers]
        for digest in garbage:
            del self._values[digest]
        return len(garbage)

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        """The latest snapshot of ``stream``, or None."""
        check_stream_name(stream)
        self._check_open()
        return self._snapshots.get(stream)

    async def truncate(self, stream: str, through: int, *, epoch: int | None = None) -> int:
        """Delete the stream's records up to ``through``, which a snapshot must cover."""
        check_position(stream, "through", through, 0)
        self._check_open()
        changes = self._changes()
        state, _ = changes.truncate(stream, through, epoch)
        stored = self._streams.get(stream, [])
        kept = [r for r in stored if r.position >= state.first]
        deleted = len(stored) - len(kept)
        if deleted:
            self._streams[stream] = kept
            self._drop_from_log(stored[:deleted])
            for record in stored[:deleted]:
                self._refer(record.refs, -1)
        changes.commit()
        return deleted

    async def delete_stream(self, stream: str, *, epoch: int | None = None) -> bool:
        """Remove ``stream`` whole (records, snapshot, epoch); return whether it existed."""
        check_stream_name(stream)
        self._check_open()
        changes = self._changes()
        _, _, existed = changes.delete(stream, epoch)
        changes.commit()
        del self._states[stream]
        self._replace_snapshot(None, stream)
        gone = self._streams.pop(stream, [])
        self._drop_from_log(gone)
        for record in gone:
            self._refer(record.refs, -1)
        return existed

    def _drop_from_log(self, records: list[Record]) -> None:
        """Remove ``records`` from the global log: one by one when they are few (the usual
        deletion of a small stream), else in one pass over the log."""
        log, key = self._log, _global_position
        if len(records) > 32:
            gone = {r.global_position for r in records}
            self._log = [r for r in log if r.global_position not in gone]
            return
        for record in records:
            del log[bisect.bisect_left(log, record.global_position, key=key)]

    async def verify(self) -> VerifyReport:
        """Check that every stream's stored positions are gapless; report every problem."""
        self._check_open()
        problems: list[Problem] = []
        for name, state in sorted(self._states.items()):
            positions = [r.position for r in self._streams.get(name, [])]
            expected = list(range(state.first, state.last + 1))
            if positions != expected:
                problems.append(Problem(name, state.first, "gap", f"positions {positions[:5]}..."))
        problems += self._value_problems()
        count = len(self._values)
        return VerifyReport(len(self._states), len(self._log), tuple(problems), count)

    def _value_problems(self) -> list[Problem]:
        """Every value whose bytes do not match its digest, and every dangling ref."""
        problems = [
            Problem("", 0, "value", f"value {digest}: stored bytes do not match their SHA-256")
            for digest, data in sorted(self._values.items())
            if not value_intact(digest, data)
        ]
        referring = [(r.stream, r.position, r.refs) for r in self._log if r.refs]
        referring += [(s.stream, s.position, s.refs) for s in self._snapshots.values()]
        for stream, position, refs in referring:
            for digest in distinct(refs):
                if digest not in self._values:
                    detail = f"refers to value {digest}, which is not stored"
                    problems.append(Problem(stream, position, "dangling ref", detail))
        return problems

    async def close(self) -> None:
        """Close the store; later calls raise `StoreClosedError`."""
        self._closed = True


def _global_position(record: Record) -> int:
    return record.global_position


def _absent(stream: str) -> StreamState | None:
    """A memory store holds every state it has; there is nothing to load."""
    return None
