"""The SQLite journal's file format: schema, version checks, pragmas, error translation.

Layout (schema version 3):

- ``streams``: one row per stream name, with its owner epoch, latest snapshot position and
  first stored position (moved forward by truncation). A stream's last position is the
  highest stored position, or ``first_position - 1`` once everything was truncated.
- ``records``: the rowid *is* the global position; ``(stream_id, position)`` is unique.
  A rowid table with a secondary unique index measured about five times faster to fill
  from interleaved streams than a ``WITHOUT ROWID`` table keyed by (stream, position).
- ``snapshots``: the latest snapshot per stream.
- ``meta``: the global high-water mark, so that global positions never repeat even when
  truncation deletes the newest rows.
- ``identity``: one row, the journal's identity (version 2 added it).
- ``stored_values``, ``record_refs``, ``snapshot_refs`` and the ``refs`` columns of
  ``records`` and ``snapshots``: values stored once (version 3 added them; see
  `journal._sqlite_values`).

A new file gets version 1's tables and then every migration, so new and upgraded files go
through the same steps.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import urllib.parse
from collections.abc import Callable
from typing import Literal

from journal._errors import (
    SchemaVersionError,
    StorageError,
    StorageFullError,
    StoreConfigurationError,
)
from journal._sqlite_values import ADD_VALUES
from journal._store import is_identity, new_identity

SCHEMA_VERSION = 3
#: ``PRAGMA application_id`` of actorflow journal files ("afj1").
APPLICATION_ID = 0x616A6631

#: Version 1's tables, as version 1 created them.
_SCHEMA_V1 = (
    """CREATE TABLE streams (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        first_position INTEGER NOT NULL DEFAULT 1,
        epoch INTEGER NOT NULL DEFAULT 0,
        snapshot_position INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE records (
        global_position INTEGER PRIMARY KEY,
        stream_id INTEGER NOT NULL,
        position INTEGER NOT NULL,
        type TEXT NOT NULL,
        data BLOB NOT NULL,
        checksum INTEGER NOT NULL
    )""",
    "CREATE UNIQUE INDEX records_by_stream ON records (stream_id, position)",
    """CREATE TABLE snapshots (
        stream_id INTEGER PRIMARY KEY,
        position INTEGER NOT NULL,
        data BLOB NOT NULL,
        checksum INTEGER NOT NULL
    )""",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO meta (key, value) VALUES ('global_high_water', 0)",
)


def _add_identity(conn: sqlite3.Connection) -> None:
    """Version 1 to 2: give the journal its identity (a new, random one)."""
    conn.execute("CREATE TABLE identity (value TEXT NOT NULL)")
    conn.execute("INSERT INTO identity (value) VALUES (?)", (new_identity(),))


def _add_values(conn: sqlite3.Connection) -> None:
    """Version 2 to 3: the tables of values stored once (existing records refer to none)."""
    for statement in ADD_VALUES:
        conn.execute(statement)


#: ``_MIGRATIONS[n - 1]`` takes a file from version n to n + 1.
_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_add_identity, _add_values)
assert len(_MIGRATIONS) == SCHEMA_VERSION - 1

_SYNCHRONOUS = {"full": 2, "normal": 1}

INSERT_RECORD = (
    "INSERT INTO records (global_position, stream_id, position, type, data, checksum) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)

#: The global high-water mark: the highest global position ever given out.
HIGH_WATER = (
    "SELECT max(coalesce((SELECT max(global_position) FROM records), 0),"
    " (SELECT value FROM meta WHERE key = 'global_high_water'))"
)


#: Deleting a stream whole, each statement by an index (the records by
#: ``records_by_stream``), all with the stream's id as the one parameter.
DELETE_STREAM = (
    "DELETE FROM records WHERE stream_id = ?",
    "DELETE FROM snapshots WHERE stream_id = ?",
    "DELETE FROM streams WHERE id = ?",
)

#: Values per row of `INSERT_RECORD`.
ROW_VALUES = 6
#: Rows per multi-row INSERT; batches are cut into statements of power-of-two sizes up to
#: this, so a few cached statements serve every batch size.
INSERT_CHUNK = 256


@functools.lru_cache(maxsize=16)
def insert_records(rows: int) -> str:
    """An INSERT of ``rows`` records in one statement.

    One statement runs in one `sqlite3_step`, during which Python's GIL is released once;
    ``executemany`` takes and releases it around every row, which starves the writer
    thread while the event loop is busy (the pipelined writer overlaps the two).
    """
    return INSERT_RECORD + ", (?, ?, ?, ?, ?, ?)" * (rows - 1)


def chunk_sizes(total: int) -> list[int]:
    """Statement sizes covering ``total`` rows: full chunks, then powers of two."""
    sizes = [INSERT_CHUNK] * (total // INSERT_CHUNK)
    rest = total % INSERT_CHUNK
    bit = INSERT_CHUNK >> 1
    while rest:
        if rest >= bit:
            sizes.append(bit)
            rest -= bit
        bit >>= 1
    return sizes


def prepare(conn: sqlite3.Connection, path: str, durability: Literal["full", "normal"]) -> str:
    """Check the file is ours (creating or upgrading its schema) and apply the pragmas;
    return the journal's identity.

    Every pragma the guarantees rest on is read back: a setting SQLite silently ignored
    (a file system without shared memory for WAL, say) must stop us, not weaken us.
    """
    conn.execute("PRAGMA busy_timeout = 10000")
    if _version(conn, path) < SCHEMA_VERSION:
        _create_or_upgrade(conn, path)
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreConfigurationError(
            f"{path}: SQLite refused WAL mode (journal_mode is {mode!r}); the journal needs "
            f"WAL for concurrent reads and group commit. Put the file on a local file system."
        )
    wanted = _SYNCHRONOUS[durability]
    conn.execute(f"PRAGMA synchronous = {wanted}")
    # macOS only syncs to the platter with F_FULLFSYNC; elsewhere these are no-ops.
    conn.execute(f"PRAGMA fullfsync = {int(durability == 'full')}")
    conn.execute(f"PRAGMA checkpoint_fullfsync = {int(durability == 'full')}")
    got = conn.execute("PRAGMA synchronous").fetchone()[0]
    if got != wanted:
        raise StoreConfigurationError(
            f"{path}: SQLite did not apply synchronous={wanted} (it reports {got}); "
            f"refusing to run with weaker durability than {durability!r} promises."
        )
    return _identity(conn, path)


def read_only_uri(path: str) -> str:
    """The URI that opens the journal at ``path`` for reading only (``mode=ro``: SQLite
    never writes the file itself, and still shares the WAL index with the writer)."""
    if not os.path.isfile(path):
        raise StorageError(
            f"{path}: no journal file there to read; check the path (actorflow serve "
            f"--journal names the file it writes)"
        )
    return "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"


def check_readable(conn: sqlite3.Connection, path: str) -> str:
    """For a read-only open: check the file is a journal of this schema, changing nothing;
    return its identity."""
    version = _version(conn, path)
    if version == 0:
        raise SchemaVersionError(
            f"{path} holds no journal (it is empty); a read-only open creates nothing. "
            f"Check the path (actorflow serve --journal names the file it writes)."
        )
    if version < SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path} was written by an older journal schema (version {version}); a "
            f"read-only open does not upgrade it. Open it once for writing (start "
            f"actorflow serve on it) to upgrade it, then read it."
        )
    return _identity(conn, path)


def _version(conn: sqlite3.Connection, path: str) -> int:
    """The file's schema version, 0 for an empty file; refuse a file that is not ours."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    if app_id == 0 and version == 0 and tables == 0:
        return 0
    if app_id != APPLICATION_ID:
        raise SchemaVersionError(
            f"{path} is a SQLite file but not an actorflow journal (application_id "
            f"{app_id:#x}); refusing to touch it. Point the store at a new or journal file."
        )
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path} was written by a newer journal schema (version {version}; this code "
            f"knows up to {SCHEMA_VERSION}); it was not modified. Upgrade actorflow to open it."
        )
    if version < 1:
        raise SchemaVersionError(f"{path}: journal schema version {version} is not valid")
    return version


def _create_or_upgrade(conn: sqlite3.Connection, path: str) -> None:
    """Bring an empty or older file to `SCHEMA_VERSION`, in one transaction.

    The version is read again once the write lock is held: another process may have
    upgraded the file since the first look. A failure leaves the file as it was.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _version(conn, path)
        if version == 0:
            for statement in _SCHEMA_V1:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            version = 1
        for migrate in _MIGRATIONS[version - 1 :]:
            migrate(conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _identity(conn: sqlite3.Connection, path: str) -> str:
    rows = conn.execute("SELECT value FROM identity").fetchall()
    if len(rows) != 1 or not is_identity(rows[0][0]):
        raise SchemaVersionError(
            f"{path}: the journal's identity is missing or malformed ({len(rows)} rows in "
            f"its identity table); the file is damaged. Restore it from a backup."
        )
    identity: str = rows[0][0]
    return identity


def translate(exc: sqlite3.Error, path: str, doing: str) -> Exception:
    """Turn a driver error into the journal's error family, keeping SQLite's words."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_NOTADB:
        return SchemaVersionError(
            f"{path} is not a SQLite database (SQLite says: {exc}); refusing to touch it. "
            f"Point the store at a new file or an actorflow journal."
        )
    if code == sqlite3.SQLITE_FULL:
        return StorageFullError(
            f"{path}: the disk or the journal's size limit is full while {doing}: {exc}. "
            f"The write was rolled back and nothing acknowledged was lost; free space "
            f"(or raise max_bytes) and retry."
        )
    return StorageError(f"{path}: SQLite failed while {doing}: {exc}")
