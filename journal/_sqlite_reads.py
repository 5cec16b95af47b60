"""The SQLite journal's reads: pages of a stream or of the global log, checksums verified,
and the whole-file check behind `SqliteStore.verify`. Each runs on a reader connection's
thread, in one hop."""

from __future__ import annotations

import sqlite3
import zlib

from journal._errors import CorruptionError
from journal._records import (
    POSITION_MIX,
    Problem,
    Record,
    Salvaged,
    SalvagedSnapshot,
    StreamInfo,
    VerifyReport,
    checksum,
    head_crc,
    snapshot_checksum,
)
from journal._sqlite_values import decode_refs, value_problems

#: Records fetched per reader hop, at most.
READ_BATCH = 2048
#: Payload bytes fetched per reader hop, at most (but always one record): with records of up
#: to `DEFAULT_MAX_RECORD_BYTES` and more, a page of `READ_BATCH` could otherwise hold
#: gigabytes, where a reader expects a bounded amount of memory.
READ_BYTES = 64 * 1024 * 1024

#: One page: its records, the damage that ended it early (if any), and whether the page
#: was cut short by `READ_BATCH` or `READ_BYTES` (so that more may follow).
_Page = tuple[list[Record], CorruptionError | None, bool]

_STREAM_PAGE = (
    "SELECT position, global_position, type, data, checksum, refs FROM records "
    "WHERE stream_id = (SELECT id FROM streams WHERE name = ?) AND position >= ? "
    "ORDER BY position LIMIT ?"
)
_GLOBAL_PAGE = (
    "SELECT r.position, r.global_position, r.type, r.data, r.checksum, s.name, r.refs "
    "FROM records r JOIN streams s ON s.id = r.stream_id "
    f"WHERE r.global_position >= ? ORDER BY r.global_position LIMIT {READ_BATCH}"
)


def stream_page(
    stream: str, conn: sqlite3.Connection, *, start: int, limit: int = READ_BATCH
) -> _Page:
    """One page of a stream (at most ``limit`` records, and `READ_BATCH`), checksums
    verified (the hot loop of replay)."""
    out: list[Record] = []
    append = out.append
    crc32, mix = zlib.crc32, POSITION_MIX
    last_kind, head = "", 0  # consecutive records mostly share a type: reuse its seed
    room = READ_BYTES
    limit = min(limit, READ_BATCH)
    for position, global_position, kind, data, stored, refs in conn.execute(
        _STREAM_PAGE, (stream, start, limit)
    ):
        if kind != last_kind:
            last_kind, head = kind, head_crc(stream, kind)
        if crc32(data, head) ^ ((position * mix) & 0xFFFFFFFF) != stored:
            return out, CorruptionError(stream, position, "checksum mismatch"), False
        if refs is None:
            append(Record(stream, position, global_position, kind, data))
        else:
            append(Record(stream, position, global_position, kind, data, decode_refs(refs)))
        room -= len(data)
        if room < 0:
            return out, None, True
    return out, None, len(out) == limit


def global_page(conn: sqlite3.Connection, start: int) -> _Page:
    """One page of the global log, checksums verified."""
    out: list[Record] = []
    room = READ_BYTES
    for position, global_position, kind, data, stored, stream, refs in conn.execute(
        _GLOBAL_PAGE, (start,)
    ):
        if checksum(stream, position, kind, data) != stored:
            return out, CorruptionError(stream, position, "checksum mismatch"), False
        out.append(Record(stream, position, global_position, kind, data, decode_refs(refs)))
        room -= len(data)
        if room < 0:
            return out, None, True
    return out, None, len(out) == READ_BATCH


def salvage_page(stream: str, conn: sqlite3.Connection, *, start: int) -> list[Salvaged]:
    """One page of a stream as stored, each record's checksum checked and reported, not
    enforced (bounded like `stream_page`)."""
    out: list[Salvaged] = []
    room = READ_BYTES
    for position, global_position, kind, data, stored, _ in conn.execute(
        _STREAM_PAGE, (stream, start, READ_BATCH)
    ):
        intact = checksum(stream, position, kind, data) == stored
        damage = None if intact else "checksum mismatch"
        out.append(Salvaged(stream, position, global_position, kind, data, damage))
        room -= len(data)
        if room < 0:
            break
    return out


def salvage_snapshot(stream: str, conn: sqlite3.Connection) -> SalvagedSnapshot | None:
    """A stream's snapshot as stored, its checksum checked and reported, not enforced."""
    row: tuple[int, bytes, int] | None = conn.execute(
        "SELECT position, data, checksum FROM snapshots "
        "WHERE stream_id = (SELECT id FROM streams WHERE name = ?)",
        (stream,),
    ).fetchone()
    if row is None:
        return None
    position, data, stored = row
    intact = snapshot_checksum(stream, position, data) == stored
    return SalvagedSnapshot(stream, position, data, None if intact else "checksum mismatch")


_STREAM_INFOS = (
    "SELECT name, first_position, epoch, snapshot_position, "
    "(SELECT max(position) FROM records WHERE stream_id = streams.id) "
    "FROM streams WHERE name > ? AND name >= ? AND substr(name, 1, ?) = ? AND "
    "(first_position > 1 OR EXISTS (SELECT 1 FROM records WHERE stream_id = id)) "
    "ORDER BY name LIMIT ?"
)


def stream_info(conn: sqlite3.Connection, *, stream: str) -> StreamInfo:
    """Positions, owner epoch and snapshot position of ``stream``."""
    row = conn.execute(
        "SELECT first_position, epoch, snapshot_position, "
        "(SELECT max(position) FROM records WHERE stream_id = streams.id) "
        "FROM streams WHERE name = ?",
        (stream,),
    ).fetchone()
    if row is None:
        return StreamInfo(stream, 0, 1, 0, 0)
    first, epoch, snap, last = row
    return StreamInfo(stream, max(last or 0, first - 1), first, epoch, snap)


def stream_infos(
    conn: sqlite3.Connection, *, prefix: str, after: str, limit: int
) -> list[StreamInfo]:
    """A page of the streams that hold (or held) records, with their infos."""
    rows = conn.execute(_STREAM_INFOS, (after, prefix, len(prefix), prefix, limit))
    return [
        StreamInfo(name, max(last or 0, first - 1), first, epoch, snapshot)
        for name, first, epoch, snapshot, last in rows
    ]


def verify_all(conn: sqlite3.Connection) -> VerifyReport:
    problems: list[Problem] = []
    for (message,) in conn.execute("PRAGMA quick_check"):
        if message != "ok":
            problems.append(Problem("", 0, "sqlite", str(message)))
    streams = conn.execute("SELECT id, name, first_position FROM streams ORDER BY id").fetchall()
    records = 0
    for sid, name, first in streams:
        expected = first
        for position, kind, data, stored in conn.execute(
            "SELECT position, type, data, checksum FROM records WHERE stream_id = ? "
            "ORDER BY position",
            (sid,),
        ):
            records += 1
            if position != expected:
                problems.append(
                    Problem(
                        name, expected, "gap", f"expected position {expected}, found {position}"
                    )
                )
            if checksum(name, position, kind, data) != stored:
                problems.append(Problem(name, position, "checksum", "record checksum mismatch"))
            expected = position + 1
    for name, position, data, stored in conn.execute(
        "SELECT s.name, p.position, p.data, p.checksum FROM snapshots p "
        "JOIN streams s ON s.id = p.stream_id"
    ):
        if snapshot_checksum(name, position, data) != stored:
            problems.append(Problem(name, position, "snapshot", "snapshot checksum mismatch"))
    for table in ("records", "snapshots"):
        (orphans,) = conn.execute(
            f"SELECT count(*) FROM {table} WHERE stream_id NOT IN (SELECT id FROM streams)"
        ).fetchone()
        if orphans:
            problems.append(Problem("", 0, "orphan", f"{orphans} {table} belong to no stream"))
    problems += value_problems(conn)
    (values,) = conn.execute("SELECT count(*) FROM stored_values").fetchone()
    return VerifyReport(len(streams), records, tuple(problems), values)
