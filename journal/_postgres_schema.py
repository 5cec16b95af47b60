"""The PostgreSQL journal's schema: its tables, its version, and creating or checking it.

Every table is named ``journal_*`` so the journal can share a database with other tables.
``journal_meta`` holds one row: the schema version, the journal's identity and the next
global position. Writers lock that row first in every transaction, which orders all
commits (so global positions follow commit order) and serialises writers across processes.
"""

from __future__ import annotations

from typing import Any

from journal._errors import SchemaVersionError
from journal._postgres_cluster import CREATE_TABLES as CLUSTER_TABLES
from journal._postgres_values import ADD_VALUES, CREATE_VALUES
from journal._store import new_identity

#: The schema this code writes; a database at a higher version is refused untouched.
#: Version 2 added the lease and member tables (`journal._postgres_cluster`), version 3
#: the tables of values stored once (`journal._postgres_values`); an older database is
#: migrated at open, one version at a time, in one transaction.
SCHEMA_VERSION = 3

#: Key of the advisory lock held while the schema is created or checked, so that two
#: processes starting at once do not both create it.
SCHEMA_LOCK = 0x6A6F75726E616C  # "journal"

_CREATE = [
    """
    CREATE TABLE journal_meta (
        id smallint PRIMARY KEY CHECK (id = 1),
        schema_version integer NOT NULL,
        identity text NOT NULL,
        next_global bigint NOT NULL CHECK (next_global >= 1)
    )
    """,
    """
    CREATE TABLE journal_streams (
        id bigserial PRIMARY KEY,
        name text COLLATE "C" NOT NULL UNIQUE,
        last_position bigint NOT NULL DEFAULT 0 CHECK (last_position >= 0),
        first_position bigint NOT NULL DEFAULT 1 CHECK (first_position >= 1),
        epoch bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
        snapshot_position bigint NOT NULL DEFAULT 0 CHECK (snapshot_position >= 0),
        CHECK (first_position <= last_position + 1),
        CHECK (snapshot_position <= last_position)
    )
    """,
    """
    CREATE TABLE journal_records (
        global_position bigint PRIMARY KEY,
        stream_id bigint NOT NULL REFERENCES journal_streams (id),
        position bigint NOT NULL CHECK (position >= 1),
        type text NOT NULL,
        data bytea NOT NULL,
        checksum bigint NOT NULL,
        refs text,
        UNIQUE (stream_id, position)
    )
    """,
    """
    CREATE TABLE journal_snapshots (
        stream_id bigint PRIMARY KEY REFERENCES journal_streams (id),
        position bigint NOT NULL,
        data bytea NOT NULL,
        checksum bigint NOT NULL,
        refs text
    )
    """,
    *CREATE_VALUES,
]


#: The statements that take a database from a version (the key) to the next.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: tuple(CLUSTER_TABLES),  # the lease and member tables
    2: ADD_VALUES,  # the tables of values, and the refs of records and snapshots
}


async def prepare(conn: Any, where: str) -> tuple[str, int]:
    """Create the schema in an empty database, or check the one there; return the
    journal's identity and its next global position."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        exists = await conn.fetchval("SELECT to_regclass('journal_meta') IS NOT NULL")
        if not exists:
            for statement in _CREATE + CLUSTER_TABLES:
                await conn.execute(statement)
            identity = new_identity()
            await conn.execute(
                "INSERT INTO journal_meta (id, schema_version, identity, next_global) "
                "VALUES (1, $1, $2, 1)",
                SCHEMA_VERSION,
                identity,
            )
            return identity, 1
        row = await conn.fetchrow(
            "SELECT schema_version, identity, next_global FROM journal_meta WHERE id = 1"
        )
        if row is not None and row["schema_version"] in _MIGRATIONS:
            version = row["schema_version"]
            while version in _MIGRATIONS:  # each step to the next version, all or none
                for statement in _MIGRATIONS[version]:
                    await conn.execute(statement)
                version += 1
            await conn.execute("UPDATE journal_meta SET schema_version = $1 WHERE id = 1", version)
    if row is None:
        raise SchemaVersionError(f"{where}: journal_meta holds no row; this is not a journal")
    version = row["schema_version"]
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} was written by a newer journal schema (version {version}; this code "
            f"knows up to {SCHEMA_VERSION}); it was not modified. Upgrade actorflow to open it."
        )
    if version < 1:
        raise SchemaVersionError(f"{where}: journal schema version {version} is not valid")
    return str(row["identity"]), int(row["next_global"])


INSERT_RECORDS = (
    "INSERT INTO journal_records "
    "(global_position, stream_id, position, type, data, checksum, refs) "
    "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], "
    "$5::bytea[], $6::bigint[], $7::text[])"
)

#: Write back every stream row a transaction changed, each only if it still holds the
#: last position and epoch the transaction read: a writer that raced (impossible while
#: the stream rows are locked, and checked all the same) finds fewer rows updated.
UPDATE_STREAMS = (
    "UPDATE journal_streams AS s SET last_position = u.last, first_position = u.first, "
    "epoch = u.epoch, snapshot_position = u.snap "
    "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], "
    "$6::bigint[], $7::bigint[]) AS u(id, last, first, epoch, snap, was_last, was_epoch) "
    "WHERE s.id = u.id AND s.last_position = u.was_last AND s.epoch = u.was_epoch"
)

#: Write snapshots (one per stream, replacing the stream's earlier one), and delete the
#: refs rows of the snapshots replaced, in one statement (the new refs rows are inserted
#: after it, if any).
UPSERT_SNAPSHOTS = (
    "WITH replaced AS (DELETE FROM journal_snapshot_refs WHERE stream_id = ANY($1::bigint[])) "
    "INSERT INTO journal_snapshots (stream_id, position, data, checksum, refs) "
    "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bigint[], $5::text[]) "
    "ON CONFLICT (stream_id) DO UPDATE SET position = excluded.position, "
    "data = excluded.data, checksum = excluded.checksum, refs = excluded.refs"
)
#: Lock the meta row and read the next global position (with the transaction's id).
LOCK_META = (
    "SELECT pg_current_xact_id()::text, next_global FROM journal_meta WHERE id = 1 FOR UPDATE"
)
ADVANCE = "UPDATE journal_meta SET next_global = $1 WHERE id = 1"
XID = "SELECT pg_current_xact_id()::text"
#: Take ``$1`` global positions (locking the meta row until COMMIT) and insert the staged
#: records, whose global positions count from 0, after the first one taken; return the
#: transaction's id and that first position.
TAKE_AND_INSERT = (
    "WITH taken AS (UPDATE journal_meta SET next_global = next_global + $1 WHERE id = 1 "
    "RETURNING next_global - $1 AS base), "
    "inserted AS (INSERT INTO journal_records "
    "(global_position, stream_id, position, type, data, checksum, refs) "
    "SELECT taken.base + u.g, u.s, u.p, u.t, u.d, u.c, u.r FROM taken, unnest($2::bigint[], "
    "$3::bigint[], $4::bigint[], $5::text[], $6::bytea[], $7::bigint[], $8::text[]) "
    "AS u(g, s, p, t, d, c, r)) "
    "SELECT pg_current_xact_id()::text, base FROM taken"
)

STREAM_ROW = (
    "SELECT name, id, last_position, first_position, epoch, snapshot_position "
    "FROM journal_streams WHERE name = ANY($1::text[]) FOR UPDATE"
)

#: Rows for new streams, made in one statement. A name another writer is making waits for
#: that writer's transaction to end and is skipped if it committed (read and lock it then).
RESERVE_STREAMS = (
    "INSERT INTO journal_streams (name) SELECT unnest($1::text[]) "
    "ON CONFLICT (name) DO NOTHING RETURNING name, id"
)
DROP_RESERVED = "DELETE FROM journal_streams WHERE id = ANY($1::bigint[])"

STREAM_PAGE = (
    "SELECT position, global_position, type, data, checksum, refs FROM journal_records "
    "WHERE stream_id = (SELECT id FROM journal_streams WHERE name = $1) AND position >= $2 "
    "ORDER BY position LIMIT $3"
)

GLOBAL_PAGE = (
    "SELECT r.position, r.global_position, r.type, r.data, r.checksum, s.name, r.refs "
    "FROM journal_records r JOIN journal_streams s ON s.id = r.stream_id "
    "WHERE r.global_position >= $1 ORDER BY r.global_position LIMIT $2"
)

STREAM_INFO = (
    "SELECT last_position, first_position, epoch, snapshot_position "
    "FROM journal_streams WHERE name = $1"
)

STREAM_INFOS_NAMED = (
    "SELECT name, last_position, first_position, epoch, snapshot_position "
    "FROM journal_streams WHERE name = ANY($1::text[])"
)

STREAM_INFOS = (
    "SELECT name, last_position, first_position, epoch, snapshot_position "
    "FROM journal_streams WHERE last_position > 0 AND name > $1 AND starts_with(name, $2) "
    "ORDER BY name LIMIT $3"
)

SNAPSHOT = (
    "SELECT position, data, checksum, refs FROM journal_snapshots "
    "WHERE stream_id = (SELECT id FROM journal_streams WHERE name = $1)"
)
