"""The SQLite journal's values stored once (see "Values stored once" in docs/journal.md):
the tables, and the statements that store, read, count, collect and verify values.

Schema version 3 added them:

- ``stored_values``: one row per value, keyed by its digest (the SHA-256 of its bytes, in
  lowercase hex); the bytes are checked against the digest on every read.
- ``record_refs``: one row per (record, digest) a record refers to, keyed by the record's
  global position; ``snapshot_refs``: one row per (stream, digest) the stream's snapshot
  refers to. Both are indexed by digest, so that collecting garbage looks each value up
  by index. The refs as given (in order) are also kept in a ``refs`` column of
  ``records`` and ``snapshots`` (NULL for none), to read them back with the row.

Every row of the refs tables is written and deleted in the transaction that writes or
deletes what refers (an append, a snapshot replaced, a truncation, a stream deleted).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from journal._errors import CorruptValueError, MissingValueError
from journal._records import Problem, distinct, value_intact

#: Version 2 to 3: the tables of values stored once.
ADD_VALUES = (
    "ALTER TABLE records ADD COLUMN refs TEXT",
    "ALTER TABLE snapshots ADD COLUMN refs TEXT",
    "CREATE TABLE stored_values (digest TEXT PRIMARY KEY, data BLOB NOT NULL)",
    """CREATE TABLE record_refs (
        global_position INTEGER NOT NULL,
        digest TEXT NOT NULL,
        PRIMARY KEY (global_position, digest)
    ) WITHOUT ROWID""",
    "CREATE INDEX record_refs_by_digest ON record_refs (digest)",
    """CREATE TABLE snapshot_refs (
        stream_id INTEGER NOT NULL,
        digest TEXT NOT NULL,
        PRIMARY KEY (stream_id, digest)
    ) WITHOUT ROWID""",
    "CREATE INDEX snapshot_refs_by_digest ON snapshot_refs (digest)",
)

#: A record that refers to values: `INSERT_RECORD`'s columns and its refs.
INSERT_RECORD_WITH_REFS = (
    "INSERT INTO records (global_position, stream_id, position, type, data, checksum, refs) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
INSERT_RECORD_REF = "INSERT OR IGNORE INTO record_refs (global_position, digest) VALUES (?, ?)"

#: Run before `DELETE_STREAM` (with the stream's id): the refs of its records and snapshot.
DELETE_STREAM_REFS = (
    "DELETE FROM record_refs WHERE global_position IN "
    "(SELECT global_position FROM records WHERE stream_id = ?)",
    "DELETE FROM snapshot_refs WHERE stream_id = ?",
)
#: Run before deleting a stream's records before a position (stream id, position).
DELETE_TRUNCATED_REFS = (
    "DELETE FROM record_refs WHERE global_position IN "
    "(SELECT global_position FROM records WHERE stream_id = ? AND position < ?)"
)

#: Garbage: the values no record and no snapshot refers to.
_GARBAGE = (
    "stored_values WHERE NOT EXISTS (SELECT 1 FROM record_refs r WHERE r.digest = "
    "stored_values.digest) AND NOT EXISTS (SELECT 1 FROM snapshot_refs s WHERE s.digest = "
    "stored_values.digest)"
)

#: Digests per IN (...) list.
_CHUNK = 500
#: Bytes per write of a large value (see `store_values`).
_BLOB_CHUNK = 1024 * 1024


def encode_refs(refs: tuple[str, ...]) -> str | None:
    """The ``refs`` column of a row: the digests joined by commas, or NULL for none."""
    return ",".join(refs) if refs else None


def decode_refs(column: str | None) -> tuple[str, ...]:
    return tuple(column.split(",")) if column else ()


def stored_among(conn: sqlite3.Connection, digests: Sequence[str]) -> set[str]:
    """Those of ``digests`` stored in the file (by index, a chunk of them per query)."""
    found: set[str] = set()
    for start in range(0, len(digests), _CHUNK):
        chunk = digests[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        query = f"SELECT digest FROM stored_values WHERE digest IN ({marks})"
        found.update(digest for (digest,) in conn.execute(query, chunk))
    return found


def check_values(conn: sqlite3.Connection, given: dict[str, bytes], wanted: list[str]) -> list[str]:
    """Refuse (reading only) unless every wanted digest is stored; return the given
    digests not stored yet, for `store_values` once the rest of the request is checked."""
    stored = stored_among(conn, [*wanted, *given])
    missing = [digest for digest in wanted if digest not in stored]
    if missing:
        raise MissingValueError(missing, "append refused")
    return [digest for digest in given if digest not in stored]


def store_values(conn: sqlite3.Connection, given: dict[str, bytes], new: list[str]) -> None:
    """Insert the values ``new`` (digests of ``given`` that `check_values` found not
    stored). A large value is written through SQLite's incremental blob I/O, a chunk at a
    time, from the caller's bytes: binding it whole would make two copies (the bound
    parameter and the row SQLite builds from it)."""
    for digest in new:
        data = given[digest]
        if len(data) <= _BLOB_CHUNK:
            conn.execute("INSERT INTO stored_values (digest, data) VALUES (?, ?)", (digest, data))
            continue
        rowid = conn.execute(
            "INSERT INTO stored_values (digest, data) VALUES (?, zeroblob(?))",
            (digest, len(data)),
        ).lastrowid
        assert rowid is not None
        view = memoryview(data)
        with conn.blobopen("stored_values", "data", rowid) as blob:
            for start in range(0, len(data), _BLOB_CHUNK):
                blob.write(view[start : start + _BLOB_CHUNK])


def replace_snapshot_refs(conn: sqlite3.Connection, sid: int, refs: tuple[str, ...]) -> None:
    conn.execute("DELETE FROM snapshot_refs WHERE stream_id = ?", (sid,))
    if refs:
        conn.executemany(
            "INSERT INTO snapshot_refs (stream_id, digest) VALUES (?, ?)",
            [(sid, digest) for digest in distinct(refs)],
        )


def read_value(conn: sqlite3.Connection, digest: str) -> bytes:
    """A stored value, its hash checked (on the reader's thread: hashing releases the GIL).

    Read through incremental blob I/O straight into the one bytes object returned (a
    plain SELECT would assemble the value in SQLite's memory first, then copy it), within
    one read transaction, so the row found is the row read.
    """
    data = _fetch(conn, digest)
    if data is None:
        raise MissingValueError([digest], "read_value")
    if not value_intact(digest, data):
        raise CorruptValueError(digest)
    return data


def _fetch(conn: sqlite3.Connection, digest: str) -> bytes | None:
    owned = not conn.in_transaction
    if owned:
        conn.execute("BEGIN")
    try:
        row = conn.execute("SELECT rowid FROM stored_values WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            return None
        with conn.blobopen("stored_values", "data", row[0], readonly=True) as blob:
            return blob.read()
    finally:
        if owned:
            conn.execute("COMMIT")


def has_values(conn: sqlite3.Connection, digests: list[str]) -> set[str]:
    return stored_among(conn, digests)


def collect(conn: sqlite3.Connection) -> int:
    """Delete the garbage values (on the writer, inside its transaction)."""
    return int(conn.execute(f"DELETE FROM {_GARBAGE}").rowcount)


def value_problems(conn: sqlite3.Connection) -> Iterable[Problem]:
    """Every value whose bytes do not match its digest (one value in memory at a time), and
    every ref to a value not stored, naming the stream and position of what refers."""
    digests = [d for (d,) in conn.execute("SELECT digest FROM stored_values ORDER BY digest")]
    for digest in digests:
        data = _fetch(conn, digest)
        if data is not None and not value_intact(digest, data):
            yield Problem(
                "", 0, "value", f"value {digest}: stored bytes do not match their SHA-256"
            )
    dangling = conn.execute(
        "SELECT s.name, r.position, x.digest FROM record_refs x "
        "JOIN records r ON r.global_position = x.global_position "
        "JOIN streams s ON s.id = r.stream_id "
        "WHERE x.digest NOT IN (SELECT digest FROM stored_values) "
        "UNION ALL SELECT s.name, p.position, x.digest FROM snapshot_refs x "
        "JOIN snapshots p ON p.stream_id = x.stream_id JOIN streams s ON s.id = x.stream_id "
        "WHERE x.digest NOT IN (SELECT digest FROM stored_values) ORDER BY 1, 2"
    )
    for name, position, digest in dangling:
        yield Problem(name, position, "dangling ref", f"refers to value {digest}, not stored")
