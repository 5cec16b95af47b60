"""`copy_journal`: every stream of one store into another, empty one, then checked.

The copy runs in four passes, each in bounded memory (a page of streams, a batch of
records or one snapshot at a time):

1. the destination takes the source's identity (refused unless it holds no stream);
2. every stream is created as the source holds it: first position and owner epoch
   (`Store.create_stream`);
3. every record is appended in the source's global order, at its own position
   (``expected_position`` is checked on every part, so a record can only land where it
   sat in the source), through the destination's ordinary append path, which computes
   its checksum;
4. every snapshot is saved at its position.

The values records and snapshots refer to go with the first append or snapshot that
refers to them (read from the source, once each); values no record or snapshot refers to
are garbage, and are not copied.

Then both stores are read back and compared: the stream list with every stream's info,
every record (position, type, data), every snapshot, the global order, and the
destination's own `Store.verify`. Any difference raises `CopyError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import msgspec

from journal._errors import ConflictError, JournalError
from journal._records import (
    NewRecord,
    Record,
    Snapshot,
    StreamAppend,
    StreamInfo,
    VerifyReport,
)
from journal._store import Store

#: Records appended per transaction at most, and their payload bytes at most (a larger
#: record goes alone).
BATCH_RECORDS = 512
BATCH_BYTES = 4 * 1024 * 1024
#: Streams listed (and created, in one group commit) per page.
STREAM_PAGE = 500
#: Snapshots saved at once (one group commit), and their bytes at most (a larger
#: snapshot goes alone).
SNAPSHOT_BATCH = 64
SNAPSHOT_BYTES = 16 * 1024 * 1024

#: ``progress(stage, count)`` after each step of the copy: ``stage`` is ``"streams"``,
#: ``"records"``, ``"snapshots"`` or ``"verified"``, ``count`` how many are done so far.
Progress = Callable[[str, int], None]


class CopyError(JournalError):
    """The copy could not be made, or the copy differs from its source (said how)."""


class CopyReport(msgspec.Struct, frozen=True):
    """What `copy_journal` copied and checked."""

    #: The journal identity, the source's, which the destination now has too.
    identity: str
    #: Streams copied: those the source lists (holding records, or positions truncated).
    streams: int
    records: int
    #: Payload bytes of the records copied.
    record_bytes: int
    snapshots: int
    snapshot_bytes: int
    #: The destination's own `Store.verify` after the copy (its ``ok`` is True).
    verify: VerifyReport
    #: Values copied (those records and snapshots refer to), and their bytes.
    values: int = 0
    value_bytes: int = 0


async def copy_journal(
    source: Store, destination: Store, *, progress: Progress | None = None
) -> CopyReport:
    """Copy every stream of ``source`` into ``destination``, which must hold no stream,
    then read both back and compare them; raise `CopyError` on any difference.

    Kept: the journal's identity; each stream's name, positions (truncated ones
    included), records (type and data), snapshot (position and data) and owner epoch;
    the global order of the records. Not kept: global position numbers (the destination
    numbers the records from its own next global position, without the gaps that
    truncated and deleted records left in the source), and streams that hold neither
    records nor truncated positions (claimed, never written: `Store.list_streams` does
    not list them, and their epoch starts over at 0 in the copy).

    Nothing may write to either store meanwhile; a change to the source during the copy
    fails the comparison. A failed copy leaves the destination partly written: empty it
    (a new file or database) before trying again.
    """
    tell = progress or _quiet
    await _check_empty(destination)
    await destination.adopt_identity(source.identity)
    streams = await _create_streams(source, destination, tell)
    values = _Values(source)
    records, record_bytes = await _copy_records(source, destination, tell, values)
    snapshots, snapshot_bytes = await _copy_snapshots(source, destination, tell, values)
    await compare(source, destination, tell)
    report = await destination.verify()
    if not report.ok:
        shown = "; ".join(f"{p.stream!r} at {p.position}: {p.detail}" for p in report.problems[:5])
        raise CopyError(f"the copy fails its own verify ({len(report.problems)} problems): {shown}")
    return CopyReport(
        source.identity,
        streams,
        records,
        record_bytes,
        snapshots,
        snapshot_bytes,
        report,
        len(values.copied),
        values.bytes,
    )


class _Values:
    """The values copied so far: each read from the source once, for the first append or
    snapshot that refers to it."""

    def __init__(self, source: Store) -> None:
        self.source = source
        self.copied: set[str] = set()
        self.bytes = 0

    async def needed(self, refs: tuple[str, ...]) -> dict[str, bytes]:
        """The values of ``refs`` not copied yet, read from the source (marked copied)."""
        out: dict[str, bytes] = {}
        for digest in refs:
            if digest not in self.copied and digest not in out:
                out[digest] = await self.source.read_value(digest)
                self.bytes += len(out[digest])
        self.copied.update(out)
        return out


def _quiet(stage: str, count: int) -> None:
    pass


async def _check_empty(destination: Store) -> None:
    """Refuse a destination that lists streams, naming them; `Store.adopt_identity` then
    refuses one holding any stream at all (an owner epoch only, say)."""
    held = await destination.list_stream_infos(limit=4)
    if held:
        names = ", ".join(repr(info.stream) for info in held[:3])
        more = " and more" if len(held) > 3 else ""
        raise CopyError(
            f"the destination is not empty: it holds streams ({names}{more}); a journal is "
            f"copied only into an empty one. Nothing was changed."
        )


async def _stream_pages(store: Store) -> AsyncIterator[list[StreamInfo]]:
    after = ""
    while True:
        page = await store.list_stream_infos(after=after, limit=STREAM_PAGE)
        if page:
            yield page
        if len(page) < STREAM_PAGE:
            return
        after = page[-1].stream


async def _create_streams(source: Store, destination: Store, tell: Progress) -> int:
    count = 0
    async for page in _stream_pages(source):
        await asyncio.gather(
            *(
                destination.create_stream(
                    info.stream, first_position=info.first_position, epoch=info.epoch
                )
                for info in page
            )
        )
        count += len(page)
        tell("streams", count)
    return count


async def _copy_records(
    source: Store, destination: Store, tell: Progress, values: _Values
) -> tuple[int, int]:
    """Append every record in the source's global order, in bounded batches; each batch
    is one `Store.append_many`, a part per run of consecutive records of one stream."""
    parts: list[StreamAppend] = []
    run: list[Record] = []
    run_values: dict[str, bytes] = {}
    held = batched = count = total_bytes = 0

    def end_run() -> None:
        if run:
            first = run[0]
            news = tuple(NewRecord(r.type, r.data, r.refs) for r in run)
            at = first.position - 1
            parts.append(
                StreamAppend(first.stream, news, expected_position=at, values=dict(run_values))
            )
            run.clear()
            run_values.clear()

    async def flush() -> None:
        nonlocal held, batched
        end_run()
        if parts:
            try:
                await destination.append_many(parts)
            except ConflictError as exc:
                raise CopyError(
                    f"a record does not fit where the source holds it ({exc}); was the "
                    f"source written during the copy?"
                ) from exc
            parts.clear()
            held = batched = 0

    async for record in source.read_all():
        if run and (record.stream != run[-1].stream or record.position != run[-1].position + 1):
            end_run()
        if batched and (held + len(record.data) > BATCH_BYTES or batched >= BATCH_RECORDS):
            await flush()
            tell("records", count)
        if record.refs:
            new = await values.needed(record.refs)
            run_values.update(new)
            held += sum(len(value) for value in new.values())
        run.append(record)
        held += len(record.data)
        batched += 1
        count += 1
        total_bytes += len(record.data)
    await flush()
    tell("records", count)
    return count, total_bytes


async def _copy_snapshots(
    source: Store, destination: Store, tell: Progress, values: _Values
) -> tuple[int, int]:
    """Save every snapshot at its position, a few at a time (one group commit)."""
    count = total_bytes = 0
    batch: list[tuple[Snapshot, dict[str, bytes]]] = []

    async def flush() -> None:
        await asyncio.gather(
            *(
                destination.save_snapshot(s.stream, s.position, s.data, refs=s.refs, values=v)
                for s, v in batch
            )
        )
        batch.clear()
        tell("snapshots", count)

    async for page in _stream_pages(source):
        for info in page:
            if not info.snapshot_position:
                continue
            snapshot = await source.load_snapshot(info.stream)
            if snapshot is None:
                raise CopyError(
                    f"stream {info.stream!r}: the source lists a snapshot at "
                    f"{info.snapshot_position} but holds none; was it written during the copy?"
                )
            if batch and (
                len(batch) >= SNAPSHOT_BATCH
                or sum(len(s.data) for s, _ in batch) + len(snapshot.data) > SNAPSHOT_BYTES
            ):
                await flush()
            batch.append((snapshot, await values.needed(snapshot.refs) if snapshot.refs else {}))
            count += 1
            total_bytes += len(snapshot.data)
    if batch:
        await flush()
    return count, total_bytes


async def compare(source: Store, destination: Store, tell: Progress | None = None) -> int:
    """Read both stores back and raise `CopyError` at the first difference: identity,
    stream list and infos, records, snapshots, global order. Returns the streams compared.

    Global positions themselves are not compared (a copy numbers them anew); the order of
    the records in `Store.read_all` is.
    """
    tell = tell or _quiet
    if source.identity != destination.identity:
        raise CopyError(
            f"identities differ: source {source.identity}, destination {destination.identity}"
        )
    count = 0
    theirs = _stream_pages(destination)
    async for page in _stream_pages(source):
        other: list[StreamInfo] = await anext(theirs, [])
        if page != other:
            raise CopyError(f"stream lists differ: {_first_difference(page, other)}")
        for info in page:
            await _compare_stream(source, destination, info.stream)
        count += len(page)
        tell("verified", count)
    extra: list[StreamInfo] = await anext(theirs, [])
    if extra:
        raise CopyError(f"the destination holds streams the source does not: {extra[0].stream!r}")
    await _compare_global_order(source, destination)
    return count


def _first_difference(ours: list[StreamInfo], theirs: list[StreamInfo]) -> str:
    for mine, other in zip(ours, theirs, strict=False):
        if mine != other:
            return f"source {mine}, destination {other}"
    if len(ours) > len(theirs):
        return f"the destination lacks {ours[len(theirs)].stream!r}"
    return f"the destination holds {theirs[len(ours)].stream!r}, which the source does not"


async def _compare_stream(source: Store, destination: Store, stream: str) -> None:
    ours, theirs = source.read(stream), destination.read(stream)
    while True:
        mine, other = await anext(ours, None), await anext(theirs, None)
        if mine is None and other is None:
            break
        if mine is None or other is None or _content(mine) != _content(other):
            raise CopyError(
                f"stream {stream!r}: records differ: source {_describe(mine)}, "
                f"destination {_describe(other)}"
            )
    mine_snapshot, other_snapshot = (
        await source.load_snapshot(stream),
        await destination.load_snapshot(stream),
    )
    if mine_snapshot != other_snapshot:
        raise CopyError(
            f"stream {stream!r}: snapshots differ: source "
            f"{_describe_snapshot(mine_snapshot)}, destination {_describe_snapshot(other_snapshot)}"
        )


def _content(record: Record) -> tuple[str, int, str, bytes, tuple[str, ...]]:
    return record.stream, record.position, record.type, record.data, record.refs


def _describe(record: Record | None) -> str:
    if record is None:
        return "nothing"
    return f"position {record.position} ({record.type!r}, {len(record.data)} bytes)"


def _describe_snapshot(snapshot: Snapshot | None) -> str:
    if snapshot is None:
        return "none"
    return f"at {snapshot.position} ({len(snapshot.data)} bytes)"


async def _compare_global_order(source: Store, destination: Store) -> None:
    ours, theirs = source.read_all(), destination.read_all()
    index = 0
    while True:
        mine, other = await anext(ours, None), await anext(theirs, None)
        if mine is None and other is None:
            return
        index += 1
        if mine is None or other is None or _where(mine) != _where(other):
            raise CopyError(
                f"global order differs at record {index}: source "
                f"{_where(mine)}, destination {_where(other)}"
            )


def _where(record: Record | None) -> str:
    return "nothing" if record is None else f"{record.stream!r} position {record.position}"
