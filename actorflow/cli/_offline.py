"""`actorflow journal verify|inspect|stats`: a journal read with no server, from its
SQLite file or PostgreSQL database, opened read-only (see `_offline_open`).

Exit status, for all three: 0 when done (verify: and nothing is wrong), 1 when verify found
problems, or inspect was asked for an actor the journal does not hold, 2 when the journal
cannot be opened (missing file, not a journal, newer schema, bad URL).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import click
import msgspec

from actorflow.cli import _offline_follow as following
from actorflow.cli import _offline_inspect as inspecting
from actorflow.cli._entries import iso, journal_line
from actorflow.cli._offline_inspect import Entry, UnknownActor
from actorflow.cli._offline_open import journal_option, key_file_option, open_read_only
from actorflow.cli._offline_stats import Stats, gather
from actorflow.cli._repair import _actor_id
from actorflow.runtime._big_values import ValueStore
from actorflow.runtime._status import JournalEntry
from journal import JournalError, VerifyReport


def _run(work: Any, *args: Any) -> Any:
    """Run ``work(*args)``; a journal that fails while being read is a clear error (also
    when it failed inside a task group, as while following)."""
    try:
        return anyio.run(work, *args)
    except click.ClickException:
        raise
    except (JournalError, OSError) as exc:
        raise click.ClickException(f"reading the journal failed: {exc}") from None
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if not all(isinstance(leaf, JournalError | OSError) for leaf in leaves):
            raise
        raise click.ClickException(f"reading the journal failed: {leaves[0]}") from None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


def _json(value: Any) -> str:
    return json.dumps(msgspec.to_builtins(value), indent=2, default=str)


# -- verify -------------------------------------------------------------------------------


@click.command("verify")
@journal_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def verify_command(journal: str, as_json: bool) -> None:
    """Check the whole journal: every record's and snapshot's checksum, every stream's
    gapless positions, every stored value against its digest and every reference to one.

    Prints each problem with its stream and position. Exit status: 0 if none was found, 1
    if any was, 2 if the journal cannot be opened. Works beside a running server; changes
    nothing.
    """

    async def check() -> VerifyReport:
        async with open_read_only(journal) as store:
            return await store.verify()

    report: VerifyReport = _run(check)
    if as_json:
        problems = [msgspec.to_builtins(problem) for problem in report.problems]
        click.echo(
            _json(
                {
                    "journal": _shown(journal),
                    "ok": report.ok,
                    "streams": report.streams,
                    "records": report.records,
                    "values": report.values,
                    "problems": problems,
                }
            )
        )
    else:
        for problem in report.problems:
            where = f"stream {problem.stream!r} position {problem.position}"
            if not problem.stream:
                where = "the journal as a whole"
            click.echo(f"{where}: {problem.kind}: {problem.detail}")
        checked = (
            f"{report.streams} streams, {report.records} records, {report.values} stored values"
        )
        if report.ok:
            click.echo(f"{_shown(journal)}: ok ({checked} checked)")
        else:
            click.echo(
                f"{_shown(journal)}: {len(report.problems)} problems found ({checked} checked)",
                err=True,
            )
    if not report.ok:
        sys.exit(1)


def _shown(journal: str) -> str:
    from actorflow.cli._copy_command import describe

    return describe(journal)


# -- inspect ------------------------------------------------------------------------------


@click.command("inspect")
@click.argument("actor")
@journal_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the entries as JSON (with --follow: a line each).",
)
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Then print new entries as a running server appends them, until Ctrl-C or SIGTERM.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05, max=60),
    default=following.DEFAULT_INTERVAL,
    show_default=True,
    help="With --follow: seconds between two reads of the journal (on PostgreSQL, an "
    "append to the actor's inbox or outcomes wakes it at once).",
)
@key_file_option
def inspect_command(
    actor: str,
    journal: str,
    as_json: bool,
    follow: bool,
    interval: float,
    codec_key_file: str | None,
) -> None:
    """Show the journal of ACTOR (Type/key), read from the journal with no server: its
    checkpoint, then its turns and steps (with attempts, retries and errors, timers and
    when they are due, compensations), then its inbox (messages, events, cancellations),
    then its invocations' outcomes. Times are ISO 8601, in UTC; a step shows how long it
    took since the previous entry of its turn. A damaged record is shown as damaged.

    With --follow, it goes on printing new entries as a running `actorflow serve`
    appends them, until Ctrl-C or SIGTERM (exit status 0).
    """
    actor_id = _actor_id(actor)
    printer = _Printer(as_json, follow)

    async def show() -> None:
        async with open_read_only(journal, payloads=True, key_file=codec_key_file) as opened:
            store = ValueStore(opened)  # large values shown, not their references
            try:
                await inspecting.check_known(store, actor_id)
            except UnknownActor:
                raise click.ClickException(
                    f"{_shown(journal)} holds no journal for {actor_id}; check the name "
                    f"(actorflow journal stats lists the largest actors) and --journal"
                ) from None
            found = await inspecting.checkpoint(store, actor_id)
            after: dict[str, int] = {}
            entries = [entry for _, entry in await inspecting.entries_after(store, actor_id, after)]
            printer.show([found, *entries] if found is not None else entries)
            if follow:
                await following.follow(store, actor_id, after, interval, printer.show)

    _run(show)
    printer.done()


class _Printer:
    """Prints entries as lines, a JSON array, or (following) a JSON line each."""

    def __init__(self, as_json: bool, following: bool) -> None:
        self.as_json = as_json
        self.following = following
        self.previous: dict[int, float] = {}
        self.collected: list[Entry] = []

    def show(self, entries: list[Entry]) -> None:
        for entry in entries:
            if self.as_json and self.following:
                click.echo(json.dumps(msgspec.to_builtins(entry), default=str))
            elif self.as_json:
                self.collected.append(entry)
            else:
                click.echo(self.line(entry))

    def done(self) -> None:
        if self.as_json and not self.following:
            click.echo(_json(self.collected))

    def line(self, entry: Entry) -> str:
        head = f"{entry.stream:10} {entry.position:>5}  "
        if entry.damage is not None:
            damage = f"DAMAGED: {entry.damage} (its bytes cannot be trusted)"
            return f"{head}{'-':24}  {entry.type:15} {damage}"
        if entry.decode_error is not None:
            return f"{head}{'-':24}  {entry.type:15} UNREADABLE: {entry.decode_error}"
        if entry.stream == "checkpoint":
            return f"{head}{'-':24}  {'snapshot':15} {inspecting.checkpoint_line(entry)}"
        if entry.stream == "outcome":
            return f"{head}{iso(entry.at):24}  {'ended':15} {inspecting.outcome_line(entry.data)}"
        readable = JournalEntry(
            "actor" if entry.stream == "actor" else "inbox",
            entry.position,
            entry.type,
            entry.at,
            entry.data,
        )
        return f"{entry.stream:10} {journal_line(readable, self.previous)[6:]}"


# -- stats --------------------------------------------------------------------------------


@click.command("stats")
@journal_option
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.option(
    "--top",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="How many of the largest actors to list.",
)
@key_file_option
def stats_command(journal: str, as_json: bool, top: int, codec_key_file: str | None) -> None:
    """Count what the journal holds: streams, records and bytes by kind of stream and by
    record type (named by the runtime's event types), snapshots, the stored values records
    refer to, and the largest actors. Bytes are payload bytes as stored; the file or
    database takes more. Reads every record once; works beside a running server."""

    async def count() -> Stats:
        async with open_read_only(journal, payloads=True, key_file=codec_key_file) as store:
            return await gather(store, top)

    stats: Stats = _run(count)
    if as_json:
        click.echo(_json({"journal": _shown(journal), **msgspec.to_builtins(stats)}))
        return
    for line in stats_lines(journal, stats):
        click.echo(line)


def stats_lines(journal: str, stats: Stats) -> list[str]:
    """The figures as a person reads them."""
    lines = [
        f"{_shown(journal)}: {stats.streams} streams, {stats.records.count} records "
        f"({size(stats.records.bytes)}), {stats.snapshots.count} snapshots "
        f"({size(stats.snapshots.bytes)}), {stats.values.count} stored values referred to "
        f"({size(stats.values.bytes)})"
    ]
    if stats.damaged:
        lines.append(f"{stats.damaged} damaged records or snapshots: run actorflow journal verify")
    lines.append("")
    lines.append(f"{'by kind of stream:':22} {'records':>10} {'bytes':>12}")
    for kind, tally in sorted(stats.stream_kinds.items(), key=lambda kv: -kv[1].bytes):
        lines.append(f"  {kind:20} {tally.count:>10} {size(tally.bytes):>12}")
    lines.append("")
    lines.append(f"{'by record type:':46} {'records':>10} {'bytes':>12}")
    for t in stats.types:
        name = f"{t.stream_kind} {t.type} ({t.event})"
        lines.append(f"  {name:44} {t.count:>10} {size(t.bytes):>12}")
    if stats.largest_actors:
        lines.append("")
        heading = f"largest actors (top {len(stats.largest_actors)}):"
        lines.append(f"{heading:46} {'streams':>7} {'records':>10} {'bytes':>12}")
        for a in stats.largest_actors:
            lines.append(f"  {a.actor:44} {a.streams:>7} {a.records:>10} {size(a.bytes):>12}")
    return lines


def size(count: int) -> str:
    """A byte count, readable."""
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def add_offline_commands(group: click.Group) -> click.Group:
    """Add verify, inspect and stats to the `actorflow journal` group (and say so in the
    help of `actorflow journal ACTOR`, which is the group's)."""
    show = group.commands.get("show")
    if show is not None:
        show.help = (show.help or "") + (
            "\n\nWith no server: `actorflow journal verify`, `actorflow journal inspect "
            "TYPE/KEY [--follow]` and `actorflow journal stats` read the journal file or "
            "database itself (--journal PATH|URL; see their --help)."
        )
    for command in (verify_command, inspect_command, stats_command):
        command.context_settings["help_option_names"] = ["-h", "--help"]
        group.add_command(command)
    return group
