"""One batch of the SQLite writer: `Transaction` (tentative stream states and buffered
rows on the writer connection) and `apply_appends`, the hot path of writing."""

from __future__ import annotations

import sqlite3
import zlib
from typing import TYPE_CHECKING, Any

from journal._records import (
    POSITION_MIX,
    Appended,
    StreamAppend,
    compute_head_crc,
    distinct,
    snapshot_checksum,
)
from journal._sqlite_schema import ROW_VALUES, chunk_sizes, insert_records
from journal._sqlite_values import (
    INSERT_RECORD_REF,
    INSERT_RECORD_WITH_REFS,
    check_values,
    encode_refs,
    replace_snapshot_refs,
    store_values,
)
from journal._streams import Changes, StreamState, wanted_values

if TYPE_CHECKING:
    from journal._sqlite import SqliteStore


class Transaction:
    """One batch's view of the writer connection: tentative states plus buffered rows."""

    def __init__(self, store: SqliteStore, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.store = store
        self.changes = Changes(store._states, store._load_state, store._next_global)
        #: Buffered rows to insert, flattened: `ROW_VALUES` values per record.
        self.params: list[Any] = []
        #: Buffered records that refer to values (with their refs column), and their refs.
        self.ref_records: list[tuple[Any, ...]] = []
        self.ref_rows: list[tuple[int, str]] = []
        self.global_moved = False
        #: States of the streams deleted in this batch (see `SqliteStore._forget_deleted`).
        self.deleted: list[StreamState] = []

    def stream_id(self, state: StreamState) -> int:
        if state.id is None:
            self.changes.touch(state)
            cursor = self.conn.execute("INSERT INTO streams (name) VALUES (?)", (state.name,))
            state.id = cursor.lastrowid
        assert state.id is not None
        return state.id

    def flush_rows(self) -> None:
        """Insert the buffered rows, a few multi-row statements per batch."""
        params, start = self.params, 0
        for size in chunk_sizes(len(params) // ROW_VALUES):
            end = start + size * ROW_VALUES
            self.conn.execute(insert_records(size), params[start:end])
            start = end
        params.clear()
        if self.ref_records:
            self.conn.executemany(INSERT_RECORD_WITH_REFS, self.ref_records)
            self.conn.executemany(INSERT_RECORD_REF, self.ref_rows)
            self.ref_records.clear()
            self.ref_rows.clear()

    def update_stream(self, state: StreamState) -> None:
        self.flush_rows()
        self.conn.execute(
            "UPDATE streams SET first_position = ?, epoch = ?, snapshot_position = ? WHERE id = ?",
            (state.first, state.epoch, state.snapshot, self.stream_id(state)),
        )

    def replace_snapshot(self, state: StreamState, data: bytes, refs: tuple[str, ...] = ()) -> None:
        """Make ``data`` the stream's snapshot at ``state.snapshot``, referring to
        ``refs``: one row replaced, and its refs."""
        sid, position = self.stream_id(state), state.snapshot
        self.conn.execute("UPDATE streams SET snapshot_position = ? WHERE id = ?", (position, sid))
        self.conn.execute(
            "INSERT OR REPLACE INTO snapshots (stream_id, position, data, checksum, refs) "
            "VALUES (?, ?, ?, ?, ?)",
            (sid, position, data, snapshot_checksum(state.name, position, data), encode_refs(refs)),
        )
        replace_snapshot_refs(self.conn, sid, refs)


def apply_appends(parts: tuple[StreamAppend, ...], txn: Transaction) -> list[Appended]:
    """Check and stage a (multi-stream) append within the batch's transaction.

    The hot loop of writing: the record checksum is computed inline. An append that gives
    or refers to values is checked against the stored values first (reading only), and
    its new values stored once every check passed: a refused append writes nothing.
    """
    changes = txn.changes
    given, wanted = wanted_values(parts)
    new_values = check_values(txn.conn, given, wanted) if given or wanted else None
    single = len(parts) == 1
    if not single:
        changes.check_appends(parts)
    if new_values is not None:
        if not single:
            store_values(txn.conn, given, new_values)
        else:  # the single part is checked by `changes.append`: check it first here
            state = changes.state(parts[0].stream)
            changes._check(state, parts[0], state.last)
            store_values(txn.conn, given, new_values)
    params = txn.params
    crc32 = zlib.crc32
    results = []
    for part in parts:
        state, position, global_position = changes.append(part, check=single)
        sid = state.id if state.id is not None else txn.stream_id(state)
        stream, seeds = part.stream, state.seeds
        for new in part.records:
            kind, data = new.type, new.data
            seed = seeds.get(kind)
            if seed is None:
                seed = seeds[kind] = compute_head_crc(stream, kind)
            crc = crc32(data, seed) ^ ((position * POSITION_MIX) & 0xFFFFFFFF)
            if new.refs:
                row = (global_position, sid, position, kind, data, crc, encode_refs(new.refs))
                txn.ref_records.append(row)
                txn.ref_rows += [(global_position, digest) for digest in distinct(new.refs)]
            else:
                params += (global_position, sid, position, kind, data, crc)
            position += 1
            global_position += 1
        if part.snapshot is not None:
            txn.replace_snapshot(state, part.snapshot, part.snapshot_refs)
        results.append(
            Appended(stream, position - len(part.records), state.last, global_position - 1)
        )
    return results
