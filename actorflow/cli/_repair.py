"""`actorflow export` and `actorflow reset`: repairing a damaged actor on the journal file
itself, with or without a server running (see "A damaged journal" in docs/actors.md)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import click
import httpx
import msgspec

from actorflow._actor import check_key
from actorflow._client import ClientError, SyncClient
from actorflow._errors import InvalidMessageError
from actorflow.runtime import _quarantine
from actorflow.runtime import _reset as _turns
from actorflow.runtime._big_values import ValueStore
from actorflow.runtime._reset import ResetRefused
from actorflow.server._serve import DEFAULT_JOURNAL
from journal import JournalError, SqliteStore, StoreLockedError


def _journal_option(fn: Any) -> Any:
    return click.option(
        "--journal",
        default=DEFAULT_JOURNAL,
        show_default=True,
        help="The SQLite journal file (as given to actorflow serve --journal).",
    )(fn)


def _actor_id(actor: str) -> str:
    type_name, slash, key = actor.partition("/")
    try:
        if not (type_name and slash):
            raise InvalidMessageError(f"actors are named Type/key, got {actor!r}")
        check_key(key)
    except InvalidMessageError as exc:
        raise click.BadParameter(str(exc), param_hint="ACTOR") from None
    return actor


def export_options(fn: Any) -> Any:
    """ACTOR, --out and --journal: what `actorflow export` and `actorflow journal export`
    take."""
    fn = _journal_option(fn)
    fn = click.option(
        "--out",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="The file to write (refused if it exists); '-' for standard output.",
    )(fn)
    return click.argument("actor")(fn)


def export_actor(actor: str, out: Path, journal: str) -> None:
    """Write ACTOR's export to ``out``, naming each damaged record on stderr."""
    actor_id = _actor_id(actor)
    try:
        damaged = anyio.run(_export, journal, actor_id, out)
    except (JournalError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in damaged:
        click.echo(
            f"damaged: stream {line.stream!r} position {line.position} ({line.damage}); "
            f"its bytes as stored are in the export",
            err=True,
        )


@click.command("export")
@export_options
def export_command(actor: str, out: Path, journal: str) -> None:
    """Export ACTOR's journal (Type/key) as JSON lines, damaged records included.

    One line per record of its streams (journal and checkpoint, state parts, inbox, outcomes,
    idempotency keys): its stream and position, its bytes as stored in base64 ("data"),
    what they decode to ("entry"), or for a damaged record its "damage" instead. Reads the
    journal file directly, beside a running server, and changes nothing in it.
    """
    export_actor(actor, out, journal)


async def _export(journal: str, actor_id: str, out: Path) -> list[_quarantine.ExportedRecord]:
    """Write the export; the damaged records (also reported in it)."""
    async with await SqliteStore.open(journal, read_only=True) as store:
        if not await _quarantine.existing_streams(store, actor_id):
            raise click.ClickException(
                f"{journal} holds no journal for {actor_id}; check the name (actorflow list "
                f"shows the actors a server hosts) and --journal"
            )
        damaged, count = [], 0
        with _output(out) as sink:
            # Large values read through their references: the export holds them inline.
            async for line in _quarantine.export(ValueStore(store), actor_id):
                sink.write(_JSON.encode(line) + b"\n")
                count += 1
                if line.damage is not None:
                    damaged.append(line)
    where = "standard output" if str(out) == "-" else str(out)
    click.echo(f"exported {count} records of {actor_id} from {journal} to {where}", err=True)
    return damaged


_JSON = msgspec.json.Encoder()


@contextlib.contextmanager
def _output(out: Path) -> Iterator[BinaryIO]:
    if str(out) == "-":
        yield sys.stdout.buffer
        sys.stdout.flush()
        return
    try:
        sink = out.open("xb")  # never over an earlier export
    except FileExistsError:
        raise click.ClickException(
            f"{out} already exists; choose another --out, or move that file away first"
        ) from None
    with sink:
        yield sink


@click.command("reset")
@click.argument("actor")
@click.option("--yes", is_flag=True, help="Delete for real (without it: say what would go).")
@click.option(
    "--to-last-turn",
    is_flag=True,
    help="Discard only the unfinished turn (exported first): its message runs again.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --to-last-turn: the export of the discarded entries (refused if it exists; "
    "default: JOURNAL.TYPE.KEY.turn-N.jsonl beside the journal, or TYPE.KEY.turn-N.jsonl "
    "here with --url).",
)
@click.option(
    "--url",
    help="With --to-last-turn: reset through this running server instead of the journal file.",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --url: the bearer token file (or set ACTORFLOW_TOKEN).",
)
@_journal_option
def reset_command(
    actor: str,
    yes: bool,
    to_last_turn: bool,
    out: Path | None,
    url: str | None,
    token_file: Path | None,
    journal: str,
) -> None:
    """Start ACTOR (Type/key) afresh: delete its journal, checkpoint, inbox, outcomes and
    idempotency keys, so that its next message finds it new.

    With --to-last-turn, only set it back to its last turn boundary, for an actor stuck
    or held on its unfinished turn: that turn's journal entries are exported to --out,
    then discarded, and its message runs again from the start under the code the next
    server runs (the steps it had completed run again). Asks for confirmation unless
    --yes. With a server running, add --url: the server discards them and this command
    writes the entries its answer holds.

    For an actor quarantined because its journal is damaged (status corrupt) that cannot be
    restored from a backup; export it first (actorflow export). What is lost: its state,
    the messages and events queued for it, the results of its invocations (their ids become
    unknown), its idempotency keys (a retry with one sends anew), and the unfinished turn
    (effects its steps had are not undone; no compensation runs). Actors waiting for its
    replies wait until their own timeouts. The journal must not be open in a server: stop
    it first, then start it again.
    """
    actor_id = _actor_id(actor)
    if out is not None and not to_last_turn:
        raise click.UsageError("--out goes with --to-last-turn (export ACTOR first otherwise)")
    if (url or token_file) and not to_last_turn:
        raise click.UsageError("--url and --token-file go with --to-last-turn")
    if url:
        _reset_turn_through(url, token_file, actor_id, yes, out)
        return
    try:
        if to_last_turn:
            anyio.run(_reset_turn, journal, actor_id, yes, out)
            return
        anyio.run(_reset, journal, actor_id, yes)
    except StoreLockedError:
        if to_last_turn:
            raise click.ClickException(
                f"{journal} is open in a running server (or another process); reset "
                f"{actor_id} through it (add --url URL of the server), or stop it first"
            ) from None
        raise click.ClickException(
            f"{journal} is open in a running server (or another process); stop it first "
            f"(a server would go on with its own idea of {actor_id}), run this again, then "
            f"start the server"
        ) from None
    except JournalError as exc:
        raise click.ClickException(str(exc)) from None


async def _reset(journal: str, actor_id: str, yes: bool) -> None:
    if not yes:
        async with await SqliteStore.open(journal, read_only=True) as store:
            streams = await _quarantine.existing_streams(store, actor_id)
        if not streams:
            raise click.ClickException(f"{journal} holds no journal for {actor_id}")
        raise click.ClickException(
            f"refusing to reset {actor_id} without --yes. It would delete {len(streams)} "
            f"streams ({', '.join(streams)}): its state, queued messages and events, the "
            f"results of its invocations and its idempotency keys, for good. Export it "
            f"first (actorflow export {actor_id} --out FILE), then run this again with --yes."
        )
    async with await SqliteStore.open(journal) as store:
        deleted = await _quarantine.reset(store, actor_id)
        await store.collect_values()  # the values only its records referred to
    if not deleted:
        raise click.ClickException(f"{journal} holds no journal for {actor_id}; nothing reset")
    click.echo(f"reset {actor_id}: deleted {', '.join(deleted)}")


async def _reset_turn(journal: str, actor_id: str, yes: bool, out: Path | None) -> None:
    """Export, then discard, the unfinished turn of ``actor_id`` (after a confirmation)."""
    async with await SqliteStore.open(journal) as opened:
        store: Any = ValueStore(opened)  # reads resolve large values, writes refer to them
        try:
            turn = await _turns.unfinished_turn(store, actor_id)
        except ResetRefused as exc:
            raise click.ClickException(str(exc)) from None
        if turn is None:
            raise click.ClickException(
                f"{actor_id} has no unfinished turn in {journal}; nothing to reset"
            )
        if out is None:
            type_name, _, key = actor_id.partition("/")
            out = Path(f"{journal}.{type_name}.{key}.turn-{turn.turn}.jsonl")
        text = _turns.confirmation(turn)
        if yes:
            click.echo(text, err=True)
        else:
            click.confirm(f"{text}\nThe entries go to {out}. Discard turn {turn.turn}?",
                          abort=True, err=True)  # fmt: skip
        entries = await _turns.export_turn(store, turn)
        with _output(out) as sink:
            for line in entries:
                sink.write(_JSON.encode(line) + b"\n")
            sink.flush()
            if str(out) != "-":
                os.fsync(sink.fileno())  # the export is on disk before anything is deleted
        try:
            await _turns.discard(store, turn)
        except ResetRefused as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(
        f"reset {actor_id} to the start of turn {turn.turn}: {len(entries)} journal entries "
        f"exported to {out} and discarded; invocation {turn.invocation} runs again from the "
        f"start when a server serves {journal}",
        err=True,
    )


def _reset_turn_through(
    url: str, token_file: Path | None, actor_id: str, yes: bool, out: Path | None
) -> None:
    """`reset --to-last-turn --url`: the server discards, this writes what it answers."""
    token = token_file.read_text().strip() if token_file else os.environ.get("ACTORFLOW_TOKEN")
    try:
        with SyncClient(url, token=token or None) as client:
            status = client.status(actor_id)
            if status.state not in ("stuck", "held"):
                raise click.ClickException(
                    f"{actor_id} is {status.state}; only an actor stuck or held on its "
                    f"unfinished turn is reset to its last turn boundary"
                )
            turn = status.turns
            type_name, _, key = actor_id.partition("/")
            out = out or Path(f"{type_name}.{key}.turn-{turn}.jsonl")
            text = (
                f"This discards turn {turn} of {actor_id} (invocation {status.invocation}, "
                f"{status.state}: {status.error}): the server at {url} deletes its journal "
                f"entries, and they are written to {out}. The message that started it then "
                f"runs again from the start under the server's code: the steps it had "
                f"completed run again (their effects happen twice unless they are "
                f"idempotent), and nothing is compensated."
            )
            if yes:
                click.echo(text, err=True)
            else:
                click.confirm(f"{text}\nDiscard turn {turn}?", abort=True, err=True)
            with _output(out) as sink:  # made before the reset: one that exists refuses it
                try:
                    reset = client.reset_to_last_turn(actor_id, turn)
                except BaseException:
                    if str(out) != "-":
                        out.unlink()
                    raise
                for line in reset.discarded:
                    sink.write(_JSON.encode(line) + b"\n")
    except (ClientError, httpx.HTTPError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"reset {actor_id} to the start of turn {turn}: {len(reset.discarded)} journal "
        f"entries discarded by the server and written to {out}; invocation "
        f"{reset.invocation} runs again from the start",
        err=True,
    )
