"""Stream bookkeeping shared by every store: positions, epochs, snapshots, and the rules.

Each store keeps a `StreamState` per stream and runs every write through `Changes`: the
rules (expected positions, fencing, snapshot and truncation bounds) are checked there
before anything changes, so a refused write changes nothing, and every change is recorded
in an undo log, so a write the backend failed to commit is rolled back in memory too.
Holding the rules in one place is what makes the stores behave alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Container, Iterable, Sequence

from journal._errors import (
    ConflictError,
    FencingError,
    InvalidStreamError,
    RecordTooLargeError,
    SnapshotError,
)
from journal._records import (
    StreamAppend,
    check_counter,
    check_new_record,
    check_refs,
    check_stream_name,
    check_values,
)


@dataclasses.dataclass(slots=True)
class StreamState:
    """What a store knows about one stream besides its records."""

    name: str
    id: int | None = None  # the backend's key for the stream, once it has one
    last: int = 0  # last position ever appended (0 for none)
    first: int = 1  # first position still stored (last + 1 when all were truncated)
    epoch: int = 0  # current owner epoch (0 until first claimed)
    snapshot: int = 0  # position covered by the latest snapshot (0 for none)
    #: Checksum seeds by record type (`journal._records.head_crc`), for stores that
    #: checksum records: one dict lookup per record on the hot path.
    seeds: dict[str, int] = dataclasses.field(default_factory=dict)


def check_request(
    appends: Iterable[StreamAppend], limit: int, known_streams: Container[str] = ()
) -> None:
    """Refuse a malformed or oversized append before it is queued: it fails alone, and
    nothing is written.

    ``known_streams`` holds names that already passed `check_stream_name` (a store's
    stream states), so the hot path skips checking them again.
    """
    for part in appends:
        if not isinstance(part, StreamAppend):
            raise InvalidStreamError(f"append_many takes StreamAppend parts, got {part!r}")
        stream = part.stream
        if type(stream) is not str or stream not in known_streams:
            check_stream_name(stream)
        if part.expected_position is not None:
            check_counter(stream, "expected_position", part.expected_position)
        if part.epoch is not None:
            check_counter(stream, "epoch", part.epoch)
        if part.snapshot is not None and not isinstance(part.snapshot, bytes):
            raise InvalidStreamError(
                f"stream {stream!r}: a snapshot must be bytes or None, got "
                f"{type(part.snapshot).__name__}"
            )
        for record in part.records:
            check_new_record(stream, record)
            if len(record.data) > limit:
                raise RecordTooLargeError(stream, len(record.data), limit)
        if part.values:
            check_values(stream, part.values)
        if part.snapshot_refs:
            check_refs(stream, part.snapshot_refs, "snapshot")
            if part.snapshot is None:
                raise InvalidStreamError(
                    f"stream {stream!r}: snapshot_refs given without a snapshot; they are "
                    f"the refs of the snapshot the part saves"
                )


def wanted_values(appends: Iterable[StreamAppend]) -> tuple[dict[str, bytes], list[str]]:
    """The values an append gives (all parts merged) and the digests its records and
    snapshots refer to that it does not give (each once, in order): those must already
    be stored."""
    given: dict[str, bytes] = {}
    for part in appends:
        if part.values:
            given.update(part.values)
    wanted: dict[str, None] = {}
    for part in appends:
        for record in part.records:
            for ref in record.refs:
                if ref not in given:
                    wanted[ref] = None
        for ref in part.snapshot_refs:
            if ref not in given:
                wanted[ref] = None
    return given, list(wanted)


class Changes:
    """One transaction's changes to the stream states, undone by `rollback`.

    States are changed in place (no copies on the hot path); every change first saves the
    state's fields in an undo log, so a transaction the backend failed to commit leaves the
    states as they were. Rules are checked before anything changes, so a refused request
    needs no undo.
    """

    def __init__(
        self,
        states: dict[str, StreamState],
        load: Callable[[str], StreamState | None],
        next_global: int,
    ) -> None:
        self._states = states
        self._load = load
        self._undo: list[tuple[StreamState, int | None, int, int, int, int]] = []
        self.next_global = next_global
        #: Streams this transaction found new (no state in the cache nor the backend).
        self.created: list[str] = []

    def state(self, stream: str) -> StreamState:
        """The current state of ``stream`` (a fresh one if the stream is new)."""
        state = self._states.get(stream)
        if state is None:
            state = self._load(stream)
            if state is None:
                state = StreamState(stream)
                self.created.append(stream)
            self._states[stream] = state
        return state

    def touch(self, state: StreamState) -> StreamState:
        """Save ``state``'s fields for `rollback` before changing it; return it."""
        self._undo.append((state, state.id, state.last, state.first, state.epoch, state.snapshot))
        return state

    def rollback(self) -> None:
        """Restore every state changed in this transaction."""
        for state, sid, last, first, epoch, snapshot in reversed(self._undo):
            state.id, state.last, state.first, state.epoch = sid, last, first, epoch
            state.snapshot = snapshot
        self._undo.clear()

    def commit(self) -> None:
        """Keep the changes (call once the backend has committed)."""
        self._undo.clear()

    def _fence(self, state: StreamState, epoch: int | None) -> None:
        if epoch is not None and epoch != state.epoch:
            raise FencingError(state.name, epoch, state.epoch)

    def check_appends(self, appends: Sequence[StreamAppend]) -> None:
        """Check a multi-stream append against tentative states without changing them."""
        if len(appends) == 1:  # the common case needs no tracking of earlier parts
            part = appends[0]
            state = self.state(part.stream)
            self._check(state, part, state.last)
            return
        moved: dict[str, int] = {}
        for part in appends:
            state = self.state(part.stream)
            at = moved.get(part.stream, state.last)
            self._check(state, part, at)
            moved[part.stream] = at + len(part.records)

    def _check(self, state: StreamState, part: StreamAppend, at: int) -> None:
        if part.expected_position is not None and part.expected_position != at:
            raise ConflictError(part.stream, part.expected_position, at)
        if part.epoch is not None and part.epoch != state.epoch:
            raise FencingError(state.name, part.epoch, state.epoch)
        if part.snapshot is not None and not (at or part.records):
            raise SnapshotError(
                f"stream {part.stream!r}: cannot snapshot a stream that holds no records; a "
                f"snapshot with no records covers the stream's last position, which is 0. "
                f"Append the records that the snapshot covers in the same part."
            )

    def append(self, part: StreamAppend, *, check: bool = False) -> tuple[StreamState, int, int]:
        """Apply one append (and its snapshot, if any); return the state, first position and
        first global position.

        ``check`` checks it first (a single-stream append, the hot path, is checked here
        rather than by `check_appends`, saving a second state lookup).
        """
        state = self.state(part.stream)
        if check:
            self._check(state, part, state.last)
        self.touch(state)
        first, first_global, count = state.last + 1, self.next_global, len(part.records)
        state.last += count
        self.next_global += count
        if part.snapshot is not None:
            state.snapshot = state.last
        return state, first, first_global

    def claim(self, stream: str) -> StreamState:
        """Give ``stream`` a new owner epoch, higher than every earlier one."""
        state = self.touch(self.state(stream))
        state.epoch += 1
        return state

    def snapshot(self, stream: str, position: int, epoch: int | None) -> StreamState:
        """Check and record a snapshot covering ``stream`` up to ``position``."""
        state = self.state(stream)
        self._fence(state, epoch)
        if not 1 <= position <= state.last:
            raise SnapshotError(
                f"stream {stream!r}: cannot snapshot at position {position}; the stream holds "
                f"positions 1 to {state.last}. A snapshot covers records that exist."
            )
        if position < state.snapshot:
            raise SnapshotError(
                f"stream {stream!r}: cannot snapshot at position {position}, a newer snapshot "
                f"at position {state.snapshot} exists; snapshots only move forward."
            )
        self.touch(state).snapshot = position
        return state

    def create(self, stream: str, first: int, epoch: int) -> StreamState:
        """Check and apply creating ``stream`` at ``first`` under ``epoch`` (see
        `Store.create_stream`): only a stream that holds nothing."""
        state = self.state(stream)
        if state.last or state.epoch:
            raise InvalidStreamError(
                f"stream {stream!r} exists (last position {state.last}, epoch {state.epoch}); "
                f"create_stream only creates a stream that holds nothing"
            )
        self.touch(state)
        state.last, state.first, state.epoch, state.snapshot = first - 1, first, epoch, 0
        return state

    def delete(self, stream: str, epoch: int | None) -> tuple[StreamState, int | None, bool]:
        """Check and apply deleting ``stream``: its state reads as never written again.

        Returns the state, the backend key it had (None if it had none), and whether the
        stream held anything (records, positions or an owner epoch).
        """
        state = self.state(stream)
        self._fence(state, epoch)
        old_id, existed = state.id, bool(state.last or state.epoch)
        self.touch(state)
        state.id, state.last, state.first, state.epoch, state.snapshot = None, 0, 1, 0, 0
        return state, old_id, existed

    def truncate(self, stream: str, through: int, epoch: int | None) -> tuple[StreamState, int]:
        """Check a truncation through ``through``; return the state and the old first position."""
        state = self.state(stream)
        self._fence(state, epoch)
        if through > state.snapshot:
            raise SnapshotError(
                f"stream {stream!r}: cannot delete records through position {through}, the "
                f"latest snapshot covers only through position {state.snapshot}; save a "
                f"snapshot first so that no state is lost."
            )
        old_first = state.first
        self.touch(state).first = max(state.first, through + 1)
        return state, old_first
