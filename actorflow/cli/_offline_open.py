"""Opening a journal for the offline tools (`actorflow journal verify|inspect|stats`):
read-only, beside a running server or with none, changing nothing in it.

- A SQLite file is opened with SQLite's ``mode=ro`` (`SqliteStore.open(read_only=True)`):
  no lock is taken, nothing is created, upgraded or checkpointed; a server may be writing it
  through its WAL meanwhile.
- A PostgreSQL database is checked first on a connection of its own (the journal's tables
  are there, of this code's schema), then opened with every transaction read-only
  (``default_transaction_read_only``): PostgreSQL itself refuses any write, so the schema
  is never created or upgraded.

Whatever stops it from being read is a `CannotOpen` (exit status 2) saying why.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import click

from actorflow.cli._copy_command import describe, is_postgres
from actorflow.server._encryption import KeyFileError, encrypted, read_key_file
from actorflow.server._serve import DEFAULT_JOURNAL
from journal import JournalError, PostgresStore, SqliteStore, Store
from journal._postgres_schema import SCHEMA_VERSION as POSTGRES_SCHEMA

#: The environment variable that names the journal when --journal is not given.
JOURNAL_ENV = "ACTORFLOW_JOURNAL"
#: Seconds to wait for a PostgreSQL server before giving up.
CONNECT_TIMEOUT = 10.0


class CannotOpen(click.ClickException):
    """The journal cannot be read: no file there, not a journal, a newer schema, a bad
    URL or an unreachable server. Exit status 2."""

    exit_code = 2


def journal_option(fn: Any) -> Any:
    """``--journal PATH|URL`` (or ACTORFLOW_JOURNAL), as `actorflow serve` takes it."""
    return click.option(
        "--journal",
        envvar=JOURNAL_ENV,
        default=DEFAULT_JOURNAL,
        show_default=True,
        help=f"The journal, as given to actorflow serve: a SQLite file or a postgresql:// "
        f"URL (or set {JOURNAL_ENV}). Opened read-only; a server may be running on it.",
    )(fn)


def key_file_option(fn: Any) -> Any:
    """``--codec-key-file FILE``: the keys of an encrypted journal (docs/encryption.md)."""
    return click.option(
        "--codec-key-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="The key file of an encrypted journal (as given to actorflow serve); needed to "
        "read its payloads.",
    )(fn)


@contextlib.asynccontextmanager
async def open_read_only(
    target: str, *, payloads: bool = False, key_file: str | None = None
) -> AsyncIterator[Store]:
    """The journal at ``target``, opened for reading only. To read its ``payloads``, an
    encrypted journal is read through ``key_file``: without one, or with keys that do not
    open it, it cannot be opened (said with the key id); otherwise the payloads are read
    as stored (what `verify` checks, with no key)."""
    store = await (_open_postgres(target) if is_postgres(target) else _open_sqlite(target))
    try:
        if payloads:
            try:
                store = await encrypted(store, read_key_file(key_file), describe(target))
            except KeyFileError as exc:
                raise CannotOpen(str(exc)) from None
        yield store
    finally:
        await store.close()


async def _open_sqlite(path: str) -> Store:
    _check_file(path)
    try:
        return await SqliteStore.open(path, read_only=True, readers=1)
    except (JournalError, OSError) as exc:
        raise CannotOpen(f"cannot open the journal: {exc}") from None


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise CannotOpen(
            f"{path}: no journal file there (actorflow serve --journal names the file it "
            f"writes; or set {JOURNAL_ENV})"
        )
    if os.path.isdir(path):
        raise CannotOpen(f"{path} is a directory, not a journal file")


async def _open_postgres(url: str) -> Store:
    shown = describe(url)
    read_only = _read_only_url(url)
    await _check_postgres(read_only, shown)
    try:
        return await PostgresStore.open(read_only, pool_size=1, reconnect_timeout=CONNECT_TIMEOUT)
    except (JournalError, OSError, ValueError) as exc:
        raise CannotOpen(f"cannot open the journal {shown}: {exc}") from None


def _read_only_url(url: str) -> str:
    """``url`` with ``default_transaction_read_only=on`` among its settings (asyncpg
    passes unknown query parameters on as the session's server settings)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in query if k != "default_transaction_read_only"]
    query.append(("default_transaction_read_only", "on"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


async def _check_postgres(url: str, shown: str) -> None:
    """Refuse, changing nothing, a database that holds no journal of this code's schema
    (PostgresStore.open would create or upgrade it)."""
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    except Exception as exc:  # a bad URL, refused credentials, no server there
        raise CannotOpen(f"cannot connect to {shown}: {exc}") from None
    try:
        if not await conn.fetchval("SELECT to_regclass('journal_meta') IS NOT NULL"):
            raise CannotOpen(
                f"{shown} holds no actorflow journal (no journal_meta table); check the URL "
                f"(actorflow serve --journal names the database it writes)"
            )
        version = await conn.fetchval("SELECT schema_version FROM journal_meta WHERE id = 1")
        if version is None:
            raise CannotOpen(f"{shown}: journal_meta holds no row; this is not a journal")
        if version > POSTGRES_SCHEMA:
            raise CannotOpen(
                f"{shown} was written by a newer journal schema (version {version}; this "
                f"code knows up to {POSTGRES_SCHEMA}); it was not modified. Upgrade actorflow "
                f"to read it."
            )
        if version < POSTGRES_SCHEMA:
            raise CannotOpen(
                f"{shown} was written by an older journal schema (version {version}); the "
                f"offline tools do not upgrade it. Start actorflow serve on it once to "
                f"upgrade it, then read it."
            )
    finally:
        await conn.close()
