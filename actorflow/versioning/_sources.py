"""Where a dry run's journals come from, and the private copy each actor is checked on.

A source is any `journal.Store`: a SQLite journal opened read-only (beside a running
server), or a `MemoryStore` loaded from exported journal files (`load_export`: the JSON
lines `actorflow journal export` and `actorflow export` write). From it, `copy_actor`
copies what activation reads of one actor (its checkpoint, the journal records after it,
its inbox and any other stream of the actor but its outcomes) into a fresh `MemoryStore`,
positions kept, when the actor has an unfinished turn. Nothing is ever written to the
source.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import msgspec

from actorflow._events import TurnCompleted, TurnFailed, TurnStarted, actor_stream, outcomes_stream
from actorflow.runtime._quarantine import ExportedRecord, actor_streams
from journal import MemoryStore, NewRecord, Record, Store

_STARTED = TurnStarted.__struct_config__.tag
_ENDED = {TurnCompleted.__struct_config__.tag, TurnFailed.__struct_config__.tag}


class ExportError(ValueError):
    """An exported journal file cannot be read back."""


async def actor_ids(store: Store) -> list[str]:
    """Every actor that has a journal in ``store``, in name order."""
    return [stream.removeprefix("actor/") for stream in await store.list_streams("actor/")]


async def _records(store: Store, stream: str, start: int = 1) -> list[Record]:
    found: list[Record] = []
    async for batch in store.read_batches(stream, start):
        found.extend(batch)
    return found


def unfinished(records: list[Record]) -> bool:
    """Whether the last turn these actor records hold has no end."""
    for record in reversed(records):
        if record.type in _ENDED:
            return False
        if record.type == _STARTED:
            return True
    return False


async def copy_actor(
    store: Store, actor_id: str, identity: str | None = None
) -> MemoryStore | None:
    """A `MemoryStore` holding what activating ``actor_id`` reads, if it has an unfinished
    turn (else None)."""
    stream = actor_stream(actor_id)
    snapshot = await store.load_snapshot(stream)
    after = snapshot.position if snapshot is not None else 0
    records = await _records(store, stream, after + 1)
    if not unfinished(records):
        return None
    copy = MemoryStore(max_record_bytes=store.max_record_bytes, identity=identity)
    held = (snapshot.position, snapshot.data) if snapshot is not None else None
    _restore(copy, stream, records, after + 1, held)
    skipped = {stream, outcomes_stream(actor_id)}
    for other, _ in actor_streams(actor_id):
        if other in skipped:
            continue
        other_snapshot = await store.load_snapshot(other)
        other_records = await _records(store, other)
        first = (
            other_records[0].position if other_records else (await store.last_position(other)) + 1
        )
        kept = (other_snapshot.position, other_snapshot.data) if other_snapshot else None
        _restore(copy, other, other_records, first, kept)
    return copy


def _restore(
    copy: MemoryStore,
    stream: str,
    records: list[Record],
    first: int,
    snapshot: tuple[int, bytes] | None,
) -> None:
    new = [NewRecord(record.type, record.data) for record in records]
    copy.restore_stream(stream, new, first=first, snapshot=snapshot)


_LINE = msgspec.json.Decoder(ExportedRecord)


def load_export(path: Path) -> MemoryStore:
    """A `MemoryStore` holding the streams of an exported journal file (JSON lines of
    `ExportedRecord`), positions and checkpoints as exported."""
    records: dict[str, list[ExportedRecord]] = defaultdict(list)
    snapshots: dict[str, ExportedRecord] = {}
    try:
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    exported = _LINE.decode(line)
                except msgspec.DecodeError as exc:
                    message = f"{path}, line {number}: not an exported record: {exc}"
                    raise ExportError(message) from None
                if exported.kind == "snapshot":
                    snapshots[exported.stream] = exported
                else:
                    records[exported.stream].append(exported)
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc.strerror or exc}") from None
    store = MemoryStore()
    for stream in sorted(set(records) | set(snapshots)):
        held = sorted(records.get(stream, []), key=lambda r: r.position)
        positions = [r.position for r in held]
        if held and positions != list(range(positions[0], positions[0] + len(positions))):
            raise ExportError(f"{path}: stream {stream!r} has gaps between positions {positions}")
        snapshot = snapshots.get(stream)
        first = held[0].position if held else (snapshot.position + 1 if snapshot else 1)
        kept = (snapshot.position, snapshot.data) if snapshot is not None else None
        try:
            store.restore_stream(
                stream, [NewRecord(r.type, r.data) for r in held], first=first, snapshot=kept
            )
        except ValueError as exc:
            raise ExportError(f"{path}: {exc}") from None
    return store


def export_files(paths: list[Path]) -> list[Path]:
    """The exported journal files ``paths`` name: files as given, and the ``*.jsonl``
    files in directories (in name order)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.glob("*.jsonl")))
        else:
            found.append(path)
    return found
