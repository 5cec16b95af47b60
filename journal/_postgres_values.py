"""The PostgreSQL journal's values stored once (see "Values stored once" in docs/journal.md):
the tables, and the statements that store, lock, read, collect and verify values.

Schema version 3 added them:

- ``journal_values(digest, data)``: one row per value, keyed by its digest (the SHA-256 of
  its bytes, in lowercase hex), the bytes in one ``bytea``; checked against the digest on
  every read.
- ``journal_record_refs(stream_id, position, digest)``: one row per (record, digest) a
  record refers to; ``journal_snapshot_refs(stream_id, digest)``: one row per digest the
  stream's snapshot refers to. Both are indexed by digest, so that collecting looks each
  value up by index. The refs as given (in order) are also kept in a ``refs`` column of
  ``journal_records`` and ``journal_snapshots`` (NULL for none), read back with the row.

Every refs row is written and deleted in the transaction that writes or deletes what
refers (an append, a snapshot replaced, a truncation, a stream deleted).

Collecting beside appends of other processes is made safe by row locks on the values:

- A write transaction that refers to stored values, or gives values already stored,
  first locks their rows ``FOR KEY SHARE`` (`lock_stored`), and holds the locks until it
  commits; a value it inserts is its own uncommitted row, which no one else can see.
- `collect` locks the garbage it finds ``FOR UPDATE SKIP LOCKED``: a value some write
  transaction holds is skipped (it is being referred to, or will be garbage next time),
  and collecting never waits for a writer. Then it deletes, in a second statement that
  sees every transaction committed meanwhile, those still referred to by nothing.
- So a writer either locked a value before the collection (the collection skips it), or
  its lock waits for the collection's commit and then finds the row deleted: the value
  counts as not stored, and the append fails alone with `MissingValueError` (or, if it
  gave the bytes, stores them again).
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import AsyncIterator
from typing import Any

try:
    import asyncpg
except ImportError:  # pragma: no cover - the optional extra is missing
    asyncpg = None

from journal._errors import CorruptValueError, MissingValueError
from journal._records import Problem, is_sealed_value, value_digest, value_intact

CREATE_VALUES = (
    'CREATE TABLE journal_values (digest text COLLATE "C" PRIMARY KEY, data bytea NOT NULL)',
    # uncompressed, so that a slice of a large value is read without the rest of it
    "ALTER TABLE journal_values ALTER COLUMN data SET STORAGE EXTERNAL",
    """CREATE TABLE journal_record_refs (
        stream_id bigint NOT NULL,
        position bigint NOT NULL,
        digest text COLLATE "C" NOT NULL,
        PRIMARY KEY (stream_id, position, digest)
    )""",
    "CREATE INDEX journal_record_refs_by_digest ON journal_record_refs (digest)",
    """CREATE TABLE journal_snapshot_refs (
        stream_id bigint NOT NULL,
        digest text COLLATE "C" NOT NULL,
        PRIMARY KEY (stream_id, digest)
    )""",
    "CREATE INDEX journal_snapshot_refs_by_digest ON journal_snapshot_refs (digest)",
)

#: Version 2 to 3: the refs columns (NULL, so existing rows refer to nothing; no rewrite)
#: and the tables of values.
ADD_VALUES = (
    "ALTER TABLE journal_records ADD COLUMN refs text",
    "ALTER TABLE journal_snapshots ADD COLUMN refs text",
    *CREATE_VALUES,
)

#: Lock the stored ones of ``$1`` against collection until the transaction ends (in
#: digest order, so two writers take their locks in one order).
LOCK_STORED = (
    "SELECT digest FROM journal_values WHERE digest = ANY($1::text[]) ORDER BY digest FOR KEY SHARE"
)
INSERT_VALUES = (
    "INSERT INTO journal_values (digest, data) SELECT * FROM unnest($1::text[], $2::bytea[]) "
    "ON CONFLICT (digest) DO NOTHING RETURNING digest"
)
INSERT_RECORD_REFS = (
    "INSERT INTO journal_record_refs (stream_id, position, digest) "
    "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[]) ON CONFLICT DO NOTHING"
)
#: The refs rows of snapshots just written (`UPSERT_SNAPSHOTS` deleted the old ones).
INSERT_SNAPSHOT_REFS = (
    "INSERT INTO journal_snapshot_refs (stream_id, digest) "
    "SELECT * FROM unnest($1::bigint[], $2::text[]) ON CONFLICT DO NOTHING"
)
DELETE_TRUNCATED_REFS = "DELETE FROM journal_record_refs WHERE stream_id = $1 AND position < $2"
DELETE_STREAM_REFS = (
    "DELETE FROM journal_record_refs WHERE stream_id = $1",
    "DELETE FROM journal_snapshot_refs WHERE stream_id = $1",
)

_NOT_REFERRED = (
    "NOT EXISTS (SELECT 1 FROM journal_record_refs r WHERE r.digest = v.digest) "
    "AND NOT EXISTS (SELECT 1 FROM journal_snapshot_refs s WHERE s.digest = v.digest)"
)
#: A page of garbage, locked; values a writer holds are skipped, never waited for.
_LOCK_GARBAGE = (
    f"SELECT v.digest FROM journal_values v WHERE v.digest > $1 AND {_NOT_REFERRED} "
    f"ORDER BY v.digest LIMIT $2 FOR UPDATE SKIP LOCKED"
)
#: Of the locked garbage, delete what is still referred to by nothing (this statement
#: sees the refs of every transaction that committed before it began).
_DELETE_GARBAGE = (
    f"DELETE FROM journal_values v WHERE v.digest = ANY($1::text[]) AND {_NOT_REFERRED}"
)
#: Values collected per transaction, at most (bounds how long writers may wait).
COLLECT_PAGE = 1000

#: Values at least this large are sent by `copy_large`, not bound to a statement.
_LARGE = 1024 * 1024
#: Bytes per message of `copy_large`.
_COPY_CHUNK = 1024 * 1024
#: A binary COPY stream's signature, flags and header extension length; a row of two
#: fields; the end of the stream.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_END = struct.pack("!h", -1)
#: Values at least this large are read a slice of this size at a time (see `read_hashed`).
_SLICE = 1024 * 1024
#: A value's size, and its bytes if it is smaller than ``$2``.
_FETCH_SMALL = (
    "SELECT octet_length(data), CASE WHEN octet_length(data) < $2 THEN data END "
    "FROM journal_values WHERE digest = $1"
)
_FETCH_SLICE = "SELECT substring(data from $2 for $3) FROM journal_values WHERE digest = $1"
#: Bytes of small values checked by `verify` per query, about.
_VERIFY_PAGE = 16 * 1024 * 1024


def encode_refs(refs: tuple[str, ...]) -> str | None:
    """The ``refs`` column of a row: the digests joined by commas, or NULL for none."""
    return ",".join(refs) if refs else None


def decode_refs(column: str | None) -> tuple[str, ...]:
    return tuple(column.split(",")) if column else ()


async def lock_stored(conn: Any, digests: list[str]) -> set[str]:
    """Those of ``digests`` stored, locked against collection until the transaction ends."""
    return {digest for (digest,) in await conn.fetch(LOCK_STORED, digests)}


async def check_values(conn: Any, given: dict[str, bytes], wanted: list[str]) -> list[str]:
    """Refuse (writing nothing, locking what is stored) unless every wanted digest is
    stored; return the given digests not stored yet, for `store_values` once the rest of
    the request is checked."""
    stored = await lock_stored(conn, list(dict.fromkeys([*wanted, *given])))
    missing = [digest for digest in wanted if digest not in stored]
    if missing:
        raise MissingValueError(missing, "append refused")
    return [digest for digest in given if digest not in stored]


async def store_values(conn: Any, given: dict[str, bytes], new: list[str]) -> None:
    """Insert the values ``new`` (digests of ``given`` that `check_values` found not
    stored). One that another transaction inserted and committed meanwhile is locked as
    stored values are; one collected again in between is inserted again."""
    for _ in range(3):
        small = [digest for digest in new if len(given[digest]) < _LARGE]
        inserted: set[str] = set()
        if small:
            rows = await conn.fetch(INSERT_VALUES, small, [given[d] for d in small])
            inserted.update(digest for (digest,) in rows)
        for digest in [digest for digest in new if len(given[digest]) >= _LARGE]:
            if await copy_large(conn, digest, given[digest]):
                inserted.add(digest)
        raced = [digest for digest in new if digest not in inserted]
        if not raced:
            return
        new = [digest for digest in raced if digest not in await lock_stored(conn, raced)]
        if not new:
            return
    from journal._postgres_txn import RetryTransaction  # (no cycle at import time)

    raise RetryTransaction("values inserted and collected again under the transaction")


async def copy_large(conn: Any, digest: str, data: bytes) -> bool:
    """Insert one large value with ``COPY ... FROM STDIN (FORMAT binary)``, streamed from
    the caller's bytes a megabyte per message: bound to a statement whole, the value was
    copied into the message and again into the transport's buffer (peak memory grew by
    three values for one written). Return False, inserting nothing, if another transaction
    stored it first (in a savepoint: the batch's transaction goes on)."""

    async def stream() -> AsyncIterator[bytes | memoryview]:
        key = digest.encode()
        yield _COPY_HEADER + struct.pack("!hi", 2, len(key)) + key + struct.pack("!i", len(data))
        view = memoryview(data)
        for start in range(0, len(data), _COPY_CHUNK):
            yield view[start : start + _COPY_CHUNK]
        yield _COPY_END

    try:
        async with conn.transaction():  # a savepoint
            await conn.copy_to_table(
                "journal_values", source=stream(), columns=["digest", "data"], format="binary"
            )
    except asyncpg.UniqueViolationError:
        return False
    return True


async def read_hashed(conn: Any, digest: str, *, keep: bool = True) -> tuple[bytes, str] | None:
    """A stored value (empty unless ``keep``) and the SHA-256 of its stored bytes, or None
    if it is not stored.

    A large value is read a slice at a time (the column is stored uncompressed, so a slice
    costs its own bytes), hashed as it comes and written into an `io.BytesIO`, all in one
    snapshot; its ``getvalue`` hands over the buffer itself as the bytes returned, with no
    copy. Read whole, asyncpg assembles the row's message and then decodes it: peak memory
    grew by three values for one read; in slices, by about one."""
    row = await conn.fetchrow(_FETCH_SMALL, digest, _SLICE)  # one round trip for most
    if row is None:
        return None
    size, data = row
    if data is not None:
        return data, value_digest(data)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        hasher, buffer = hashlib.sha256(), io.BytesIO()
        for start in range(0, size, _SLICE):
            piece = await conn.fetchval(_FETCH_SLICE, digest, start + 1, _SLICE)
            if piece is None:  # collected since its size was read
                return None
            hasher.update(piece)
            if keep:
                buffer.write(piece)
    return buffer.getvalue(), hasher.hexdigest()


async def read_value(conn: Any, digest: str) -> bytes:
    """A stored value, its hash checked."""
    found = await read_hashed(conn, digest)
    if found is None:
        raise MissingValueError([digest], "read_value")
    data, computed = found
    if computed != digest and not is_sealed_value(data):
        raise CorruptValueError(digest)
    return data


async def has_values(conn: Any, digests: list[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT digest FROM journal_values WHERE digest = ANY($1::text[])", digests
    )
    return {digest for (digest,) in rows}


async def collect(conn: Any) -> int:
    """Delete the garbage values, a page per transaction (see the module's docstring)."""
    collected, after = 0, ""
    while True:
        async with conn.transaction():
            page = [d for (d,) in await conn.fetch(_LOCK_GARBAGE, after, COLLECT_PAGE)]
            if page:
                status = await conn.execute(_DELETE_GARBAGE, page)
                collected += int(status.split()[-1])
        if len(page) < COLLECT_PAGE:
            return collected
        after = page[-1]


async def value_problems(conn: Any) -> AsyncIterator[Problem]:
    """Every value whose bytes do not match its digest (one value in memory at a time), and
    every ref to a value not stored, naming the stream and position of what refers."""
    sizes = await conn.fetch("SELECT digest, octet_length(data) FROM journal_values ORDER BY 1")
    pages: list[list[str]] = [[]]
    held = 0
    for digest, size in sizes:
        if size < _SLICE:
            if held + size > _VERIFY_PAGE:
                pages.append([])
                held = 0
            pages[-1].append(digest)
            held += size
    damaged: list[str] = []
    for page in pages:
        rows = await conn.fetch(
            "SELECT digest, data FROM journal_values WHERE digest = ANY($1::text[])", page
        )
        damaged += [digest for digest, data in rows if not value_intact(digest, data)]
    for digest in [digest for digest, size in sizes if size >= _SLICE]:
        found = await read_hashed(conn, digest, keep=False)
        if found is not None and found[1] != digest:
            # A sealed value (stored under a keyed digest) checks its own trailing hash.
            found = await read_hashed(conn, digest)
            if found is not None and not is_sealed_value(found[0]):
                damaged.append(digest)
    for digest in sorted(damaged):
        yield Problem("", 0, "value", f"value {digest}: stored bytes do not match their SHA-256")
    dangling = await conn.fetch(
        "SELECT s.name, x.position, x.digest FROM journal_record_refs x "
        "JOIN journal_streams s ON s.id = x.stream_id "
        "WHERE NOT EXISTS (SELECT 1 FROM journal_values v WHERE v.digest = x.digest) "
        "UNION ALL SELECT s.name, p.position, x.digest FROM journal_snapshot_refs x "
        "JOIN journal_snapshots p ON p.stream_id = x.stream_id "
        "JOIN journal_streams s ON s.id = x.stream_id "
        "WHERE NOT EXISTS (SELECT 1 FROM journal_values v WHERE v.digest = x.digest) "
        "ORDER BY 1, 2, 3"
    )
    for name, position, digest in dangling:
        yield Problem(name, position, "dangling ref", f"refers to value {digest}, not stored")
