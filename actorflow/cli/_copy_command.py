"""`actorflow journal copy SOURCE DESTINATION`: a whole journal moved into an empty one
(SQLite to PostgreSQL, say), then verified (see "Copying a journal" in docs/journal.md)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator

import anyio
import click

from journal import (
    CopyReport,
    EncryptedStore,
    EncryptionError,
    JournalError,
    Keyring,
    PostgresStore,
    SqliteStore,
    Store,
    StoreLockedError,
    copy_journal,
    load_keyring,
)

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(target: str) -> bool:
    """Whether ``target`` names a PostgreSQL database (a URL) rather than a SQLite file."""
    return target.startswith(_POSTGRES_SCHEMES)


def describe(target: str) -> str:
    """``target`` as shown in messages: a URL without its password."""
    if is_postgres(target) and "@" in target:
        scheme, rest = target.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"
    return target


@contextlib.asynccontextmanager
async def open_journal(target: str) -> AsyncIterator[Store]:
    """Open ``target`` for the copy. A SQLite file is opened as a writer would open it,
    so that its lock keeps a server off it (and refuses one that holds it) while the copy
    runs."""
    if is_postgres(target):
        store: Store = await PostgresStore.open(target)
    else:
        try:
            store = await SqliteStore.open(target)
        except StoreLockedError as exc:
            raise click.ClickException(
                f"{target} is held by a running process (actorflow serve?): {exc} Stop it "
                f"first: a journal is copied while nothing writes to it."
            ) from None
    try:
        yield store
    finally:
        await store.close()


def _keys(path: str | None) -> Keyring | None:
    return None if path is None else load_keyring(path)


def _same_file(source: str, destination: str) -> bool:
    if is_postgres(source) or is_postgres(destination):
        return source == destination
    try:
        return os.path.samefile(source, destination)
    except OSError:
        return os.path.abspath(source) == os.path.abspath(destination)


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    value = count / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


class _Progress:
    """Progress on standard error, when it is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, stage: str, count: int) -> None:
        if self.enabled:
            click.echo(f"\r{stage}: {count}\x1b[K", err=True, nl=False)

    def done(self) -> None:
        if self.enabled:
            click.echo("\r\x1b[K", err=True, nl=False)


async def _copy(
    source: str,
    destination: str,
    source_keys: Keyring | None = None,
    destination_keys: Keyring | None = None,
) -> CopyReport:
    progress = _Progress()
    try:
        async with (
            open_journal(source) as origin,
            open_journal(destination) as target,
        ):
            if source_keys is not None:
                origin = EncryptedStore(origin, source_keys)
            if destination_keys is not None:
                target = EncryptedStore(target, destination_keys)
            return await copy_journal(origin, target, progress=progress)
    finally:
        progress.done()


@click.command("copy")
@click.argument("source")
@click.argument("destination")
@click.option(
    "--codec-key-file",
    type=click.Path(dir_okay=False),
    help="Key file of both journals: the copy re-encrypts every payload under its write "
    "key (key rotation; docs/encryption.md).",
)
@click.option(
    "--source-key-file",
    type=click.Path(dir_okay=False),
    help="Key file of SOURCE only (default: --codec-key-file; without either, SOURCE is "
    "not encrypted).",
)
@click.option(
    "--destination-key-file",
    type=click.Path(dir_okay=False),
    help="Key file of DESTINATION only (default: --codec-key-file; without either, the "
    "copy is not encrypted).",
)
def journal_copy_command(
    source: str,
    destination: str,
    codec_key_file: str | None,
    source_key_file: str | None,
    destination_key_file: str | None,
) -> None:
    """Copy the whole journal SOURCE into DESTINATION, which must hold no stream, then
    verify the copy: every stream read back from both sides and compared.

    Each is a SQLite file or a postgresql:// URL; the usual move is from SQLite to
    PostgreSQL:

        actorflow journal copy actorflow.db postgresql://user@host/db

    The copy keeps the journal's identity (step idempotency keys derive from it), every
    stream's positions, records, snapshot and owner epoch, and the order of the records.
    Stop the server first: a SQLite file that a server holds is refused, and nothing may
    write to either journal while the copy runs. Exits non-zero if the copy fails or
    differs from its source; then empty the destination before trying again.

    With key files (docs/encryption.md), the source is read and the copy written through
    them: --codec-key-file re-encrypts an encrypted journal under its file's write key
    (key rotation), --destination-key-file alone encrypts a plain journal, and
    --source-key-file alone decrypts one.
    """
    if not is_postgres(source) and not os.path.isfile(source):
        raise click.ClickException(f"{source}: no journal file there to copy")
    if _same_file(source, destination):
        raise click.UsageError("SOURCE and DESTINATION are the same journal")
    try:
        source_keys = _keys(source_key_file or codec_key_file)
        destination_keys = _keys(destination_key_file or codec_key_file)
    except EncryptionError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"copying {describe(source)} to {describe(destination)}")
    try:
        report = anyio.run(_copy, source, destination, source_keys, destination_keys)
    except (JournalError, OSError) as exc:
        raise click.ClickException(f"the copy failed: {exc}") from None
    click.echo(
        f"copied {report.streams} streams, {report.records} records "
        f"({_size(report.record_bytes)}), {report.snapshots} snapshots "
        f"({_size(report.snapshot_bytes)}); journal identity {report.identity}"
    )
    click.echo(
        f"verified: every stream reads back the same from both journals, and the copy's "
        f"own verify found {report.verify.records} records intact"
    )
