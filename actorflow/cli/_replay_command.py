"""`actorflow replay` (check a deploy before it happens) and the `actorflow journal` group
(`actorflow journal ACTOR` shows a live actor's journal; `actorflow journal export`
writes one to a file)."""

from __future__ import annotations

import contextlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import click

from actorflow.cli._copy_command import journal_copy_command
from actorflow.cli._repair import _actor_id, export_actor, export_options
from actorflow.server._serve import ServeError, load_actors
from actorflow.versioning import ExportError, ReplayReport, Selection, check
from journal import JournalError

#: Fewer actors than this to check: no progress bar (it would flash by).
PROGRESS_FROM = 50


@click.command("replay")
@click.argument("app")
@click.option(
    "--journal",
    "journals",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A SQLite journal file (opened read-only; a server may be running on it). Repeatable.",
)
@click.option(
    "--from-export",
    "exports",
    multiple=True,
    type=click.Path(exists=True),
    help="An exported journal file (actorflow journal export), or a directory of *.jsonl "
    "ones, instead of or besides --journal. Repeatable.",
)
@click.option("--type", "types", multiple=True, help="Only actors of this type. Repeatable.")
@click.option("--actor", "actors", multiple=True, help="Only this actor (Type/key). Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--no-progress", is_flag=True, help="No progress bar on standard error.")
@click.option(
    "--strict", is_flag=True, help="Also exit 1 when an actor could not be checked (and why)."
)
def replay_command(
    app: str,
    journals: tuple[str, ...],
    exports: tuple[str, ...],
    types: tuple[str, ...],
    actors: tuple[str, ...],
    as_json: bool,
    no_progress: bool,
    strict: bool,
) -> None:
    """Check a deploy before it happens: replay every unfinished turn in the journal
    against the code in APP (as given to actorflow serve), executing no side effect (no
    step, timer, send or journal write), and report each actor that would diverge: the
    journal position, what was recorded, what the new code does.

    Exit status: 0 if none would diverge, 1 if any would (or, with --strict, could not be
    checked), 2 for a usage error (an app or journal that cannot be loaded).
    """
    if not journals and not exports:
        raise click.UsageError("give the journal to check: --journal PATH or --from-export FILE")
    for actor in actors:
        _actor_id(actor)
    try:
        classes = load_actors(app)
    except ServeError as exc:
        raise click.UsageError(str(exc)) from None
    with _Progress(enabled=not (no_progress or as_json)) as progress:
        try:
            report = anyio.run(
                lambda: check(
                    classes,
                    journals=journals,
                    exports=exports,
                    selection=Selection(types, actors),
                    progress=progress.advance,
                    on_total=progress.start,
                )
            )
        except (ExportError, JournalError) as exc:
            raise click.UsageError(str(exc)) from None
    _show(report, as_json)
    if not report.ok or (strict and report.unchecked):
        sys.exit(1)


def _show(report: ReplayReport, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
        return
    for line in report.lines():
        click.echo(line)


class _Progress:
    """A progress bar on standard error, when it is a terminal and there is much to do."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.bar: Any = None
        self.stack = contextlib.ExitStack()

    def start(self, total: int) -> None:
        if self.enabled and total >= PROGRESS_FROM:
            bar = click.progressbar(length=total, label="replaying", file=sys.stderr)
            self.bar = self.stack.enter_context(bar)

    def advance(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stack.close()


# -- actorflow journal ----------------------------------------------------------------------


class JournalGroup(click.Group):
    """`actorflow journal SUBCOMMAND ...`, where a first argument that names no
    subcommand is an actor: ``actorflow journal Researcher/job-1`` runs ``show``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = [DEFAULT_SUBCOMMAND, *args]
        return super().parse_args(ctx, args)


DEFAULT_SUBCOMMAND = "show"


@click.command("export")
@export_options
def journal_export_command(actor: str, out: Path, journal: str) -> None:
    """Export ACTOR's journal (Type/key) to a file, as JSON lines: a golden journal.

    The file holds what replaying the actor needs (its checkpoint and state parts,
    journal, inbox, outcomes and idempotency keys; the format of actorflow export).
    Check it into your tests and replay it against new code with `actorflow replay APP
    --from-export FILE` or actorflow.testing.replay(APP, exports=[FILE]). Reads the
    journal file directly, beside a running server, and changes nothing in it.
    """
    export_actor(actor, out, journal)


def journal_group(show: click.Command) -> JournalGroup:
    """The `actorflow journal` group: ``show`` (the default) and ``export``."""
    group = JournalGroup(
        "journal",
        help=show.help,
        context_settings={"help_option_names": []},  # --help goes to `show`
    )
    show.help = inspect.cleandoc(show.help or "") + (
        "\n\nAlso: `actorflow journal export TYPE/KEY --out FILE` writes an actor's "
        "journal to a file (a golden journal for actorflow replay; see its --help), and "
        "`actorflow journal copy SOURCE DESTINATION` copies a whole journal (SQLite to "
        "PostgreSQL, say) and verifies the copy."
    )
    show.hidden = True
    for command in (show, journal_export_command, journal_copy_command):
        command.context_settings["help_option_names"] = ["-h", "--help"]
    group.add_command(show, DEFAULT_SUBCOMMAND)
    group.add_command(journal_export_command)
    group.add_command(journal_copy_command)
    return group
