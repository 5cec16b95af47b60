"""The `actorflow` command line: `serve`, and commands that talk to a running server."""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import httpx
import msgspec

from actorflow._budget import Budget
from actorflow._client import DEFAULT_URL, ClientError, RequestTimeout, SyncClient
from actorflow.cli._budget_command import budget_command, budget_option
from actorflow.cli._crypt_command import CODEC_KEY_HELP, journal_key_command
from actorflow.cli._entries import journal_line, short
from actorflow.cli._offline import add_offline_commands
from actorflow.cli._otel_option import otel_option
from actorflow.cli._query_command import query_command
from actorflow.cli._repair import export_command, reset_command
from actorflow.cli._replay_command import journal_group, replay_command
from actorflow.cli._value_threshold import value_threshold_option
from actorflow.cli._watch import print_events
from actorflow.cluster import WorkerIdInUse
from actorflow.runtime._status import Page
from actorflow.runtime._streams import DEFAULT_STREAM_RETENTION
from actorflow.server import ACTOR_STATES, DEFAULT_PORT, ServeConfig, ServeError, serve
from actorflow.server._connections import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE,
    DEFAULT_MAX_CONNECTIONS,
)
from actorflow.server._memory import GC_THRESHOLD
from journal import DEFAULT_MAX_RECORD_BYTES

TOKEN_ENV = "ACTORFLOW_TOKEN"
TIMEOUT_ENV = "ACTORFLOW_TIMEOUT"
#: Seconds a command waits for the server's answer (beyond its --wait) by default.
DEFAULT_TIMEOUT = 30.0
T = TypeVar("T")


def _token(token_file: Path | None) -> str | None:
    if token_file is not None:
        token = token_file.read_text().strip()
        if not token:
            raise click.BadParameter(f"{token_file} is empty", param_hint="--token-file")
        return token
    return os.environ.get(TOKEN_ENV) or None


def _json_argument(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f'not valid JSON ({exc}); quote it, e.g. \'{{"topic": "x"}}\'', param_hint=what
        ) from None


def _print(value: Any) -> None:
    click.echo(json.dumps(msgspec.to_builtins(value), indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="actorflow")
def main() -> None:
    """actorflow: long-running agents as actors on an event-sourced journal.

    Start a server with `actorflow serve APP`; the other commands talk to it
    (--url, default http://127.0.0.1:8787; token from --token-file or ACTORFLOW_TOKEN)
    and wait at most --timeout seconds (default 30) for its answer.
    """


@main.command("serve")
@click.argument("app")
@click.option(
    "--journal",
    envvar="ACTORFLOW_JOURNAL",
    default="actorflow.db",
    show_default=True,
    help="The journal: a SQLite file (this process alone), or a postgresql:// URL shared by "
    "any number of workers (see docs/cluster.md).  [env: ACTORFLOW_JOURNAL]",
)
@click.option(
    "--durability",
    type=click.Choice(["full", "normal"]),
    default="full",
    show_default=True,
    help="full: survives power loss; normal: survives a process crash.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=int, default=DEFAULT_PORT, show_default=True, help="Port to listen on."
)
@click.option(
    "--grace",
    type=float,
    default=25.0,
    show_default=True,
    help="Seconds to stop in after SIGTERM (keep under Kubernetes' terminationGracePeriodSeconds).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Lifecycle lines (event=start, event=draining, ...) are logged at info.",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"File holding the bearer token clients must send to every endpoint but /livez "
    f"and /readyz (or set {TOKEN_ENV}).",
)
@click.option(
    "--allow-public-without-token",
    is_flag=True,
    help="Listen beyond loopback without a token (only behind an authenticating proxy).",
)
@click.option(
    "--max-body-bytes",
    type=int,
    default=1024 * 1024,
    show_default=True,
    help="Larger request bodies are refused with 413; bodies must be JSON, nested at "
    "most 64 levels deep.",
)
@click.option(
    "--lock-wait",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for another process (the previous version) to release the "
    "journal; meanwhile /livez answers 200 and /readyz 503.",
)
@click.option(
    "--snapshot-every",
    type=int,
    default=100,
    show_default=True,
    help="Every N turns, delete the journal records an actor's checkpoint covers (0: never).",
)
@click.option(
    "--max-record-bytes",
    type=click.IntRange(min=1024),
    default=DEFAULT_MAX_RECORD_BYTES,
    show_default=True,
    help="Largest journal record: with --value-threshold off, a step result above it fails "
    "the step; a message or event above it is refused with 413.",
)
@value_threshold_option
@click.option(
    "--step-threads",
    type=click.IntRange(min=1),
    default=40,
    show_default=True,
    help="Worker threads for sync step functions.",
)
@click.option(
    "--idempotency-retention",
    type=click.FloatRange(min=0, min_open=True),
    default=24 * 3600.0,
    show_default=True,
    help="Seconds an Idempotency-Key stays bound to its invocation.",
)
@click.option(
    "--stream-retention",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_STREAM_RETENTION,
    show_default=True,
    help="Seconds an ended invocation's chunk stream (ctx.stream) is kept.",
)
@click.option(
    "--max-pending-events",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Events an actor may hold that no turn waited for yet (more get 429).",
)
@click.option(
    "--max-queued-messages",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Messages an actor may have waiting for their turns (more get 429).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME[:PORT]",
    help="Also answer requests whose Host header is NAME (on any port, or only PORT; * for "
    "any), as clients reach the server: a Service's DNS name, the pod IP for /metrics "
    "scrapes. Repeatable. Always answered: localhost, 127.0.0.1, [::1] and --host, with "
    "--port. Other Hosts get 421 (a web page reaching the server by DNS rebinding has one); "
    "/livez and /readyz answer any Host, so probes by pod IP need nothing.",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    metavar="URL",
    help="Let web pages of this origin (https://console.example.com) call the API, with "
    "CORS. Repeatable. Requests with any other Origin header get 403: without this, no "
    "browser page can drive the server.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_HEADER_TIMEOUT,
    show_default=True,
    help="Seconds a request's line and headers may take to arrive (from the connection "
    "opening, or its previous response); past it the connection is closed.",
)
@click.option(
    "--keep-alive",
    type=click.IntRange(min=1),
    default=DEFAULT_KEEP_ALIVE,
    show_default=True,
    help="Seconds an idle keep-alive connection is kept after a response.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    help=f"Connections held open at most (default: {DEFAULT_MAX_CONNECTIONS}, or half the "
    f"open-file limit if lower). One more closes the one that has waited longest for a "
    f"request's headers; only if all are serving requests is it refused with 503.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds an actor stays in memory after its last turn (then only its journal).",
)
@click.option(
    "--build-id",
    envvar="ACTORFLOW_BUILD_ID",
    default="",
    help="The code version every turn records (a release, a git commit); shown in status, "
    "the journal and /metrics. Default: per actor type, src- and a hash of its class's "
    "source.  [env: ACTORFLOW_BUILD_ID]",
)
@click.option(
    "--worker-id",
    help="With a PostgreSQL journal: this worker's name in leases, status and `actorflow "
    "workers` (default: host-pid-random).",
)
@click.option(
    "--capacity",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="With a PostgreSQL journal: actors this worker hosts at once, at most.",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=0.3, max=3600),
    default=10.0,
    show_default=True,
    help="With a PostgreSQL journal: seconds a worker's leases outlive its last heartbeat; "
    "a dead or paused worker's actors move to the others after that long.",
)
@click.option(
    "--gc-threshold",
    type=click.IntRange(min=0),
    default=GC_THRESHOLD,
    show_default=True,
    help="Allocations between two collections of Python's youngest garbage-collector "
    "generation (0: Python's own, 700). Fewer collections: less CPU per step.",
)
@otel_option
@click.option(
    "--codec-key-file", type=click.Path(dir_okay=False), default=None, help=CODEC_KEY_HELP
)
def serve_command(
    app: str,
    journal: str,
    durability: str,
    host: str,
    port: int,
    grace: float,
    log_level: str,
    token_file: Path | None,
    allow_public_without_token: bool,
    max_body_bytes: int,
    lock_wait: float,
    snapshot_every: int,
    max_record_bytes: int,
    value_threshold: int,
    step_threads: int,
    idempotency_retention: float,
    stream_retention: float,
    max_pending_events: int,
    max_queued_messages: int,
    allowed_hosts: tuple[str, ...],
    allowed_origins: tuple[str, ...],
    header_timeout: float,
    keep_alive: int,
    max_connections: int | None,
    idle_timeout: float,
    build_id: str,
    worker_id: str | None,
    capacity: int,
    lease_ttl: float,
    gc_threshold: int,
    otel: bool,
    codec_key_file: str | None,
) -> None:
    """Serve the actors defined in APP (a module like `examples.agents`, or a file).

    APP may end with :NAME to name a class or a list of classes; without it, the
    module's ACTORS list, or every Actor class in it. The port answers health checks
    at once; the API once the journal is open and the actors are recovered.

    SIGTERM or Ctrl-C stops it within --grace seconds without losing work: each actor
    type drains, checkpoints or compensates its running turns as it declares, and the
    next `actorflow serve` on the same journal continues them.
    """
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    config = ServeConfig(
        app,
        journal,
        "normal" if durability == "normal" else "full",
        host,
        port,
        grace,
        log_level,
        _token(token_file),
        allow_public_without_token,
        max_body_bytes,
        snapshot_every,
        lock_wait=lock_wait,
        max_record_bytes=max_record_bytes,
        value_threshold=value_threshold,
        step_threads=step_threads,
        idempotency_retention=idempotency_retention,
        stream_retention=stream_retention,
        max_pending_events=max_pending_events,
        max_queued_messages=max_queued_messages,
        allowed_hosts=allowed_hosts,
        allowed_origins=allowed_origins,
        header_timeout=header_timeout,
        keep_alive=keep_alive,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        version=build_id,
        worker_id=worker_id,
        capacity=capacity,
        lease_ttl=lease_ttl,
        gc_threshold=gc_threshold,
        otel=otel,
        codec_key_file=codec_key_file,
    )
    try:
        code = _run(config)
    except (ServeError, WorkerIdInUse) as exc:
        raise click.ClickException(str(exc)) from None
    _exit_despite_abandoned_steps(code)
    sys.exit(code)


def _exit_despite_abandoned_steps(code: int) -> None:
    """Exit now if a sync step abandoned at shutdown still runs in its worker thread.

    Everything acknowledged is in the journal and the journal is closed; Python would
    otherwise wait for the thread before exiting, however far past the grace budget.
    The step runs again, under the same idempotency key, in the next process.
    """
    lingering = [
        thread
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and thread.is_alive() and not thread.daemon
    ]
    if lingering:
        logging.getLogger("actorflow.serve").info(
            "event=exit-abandoning-steps threads=%d", len(lingering)
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _run(config: ServeConfig) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        import asyncio

        return asyncio.run(serve(config))
    return uvloop.run(serve(config))


def _client_options(fn: Any) -> Any:
    fn = click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        envvar=TIMEOUT_ENV,
        default=DEFAULT_TIMEOUT,
        show_default=True,
        help=f"Seconds to wait for the server's answer, on top of any --wait (or set "
        f"{TIMEOUT_ENV}).",
    )(fn)
    fn = click.option(
        "--url",
        envvar="ACTORFLOW_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="The server (or set ACTORFLOW_URL).",
    )(fn)
    return click.option(
        "--token-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=f"Bearer token file (or set {TOKEN_ENV}).",
    )(fn)


def _talk(
    url: str,
    token_file: Path | None,
    timeout: float,
    action: Callable[[SyncClient], T],
) -> T:
    """Run ``action`` with a client of the server; turn failures into CLI errors."""
    try:
        with SyncClient(url, token=_token(token_file), timeout=timeout) as client:
            return action(client)
    except CLIENT_ERRORS as exc:
        _fail(exc)


#: What talking to the server can raise: refusals, network failures, bad names.
CLIENT_ERRORS = (ClientError, httpx.HTTPError, OSError, ValueError)


def _fail(exc: Exception) -> NoReturn:
    if isinstance(exc, RequestTimeout):
        waited = f"{exc.seconds:g} s"
        if exc.wait:
            waited += f" (--wait {exc.wait:g} + --timeout {exc.seconds - exc.wait:g})"
        unsure = (
            " The message may have been accepted: resend it with the same --idempotency-key "
            "to be sure it is sent once."
            if "/messages/" in exc.request
            else ""
        )
        raise click.ClickException(
            f"the server at {exc.url} did not answer {exc.request} within {waited}; is it "
            f"overloaded or stopped? If it needs longer, raise --timeout (or {TIMEOUT_ENV})."
            f"{unsure}"
        )
    if isinstance(exc, ClientError):
        raise click.ClickException(f"{exc.message} (HTTP {exc.status}, {exc.kind})")
    if isinstance(exc, ValueError):
        raise click.ClickException(str(exc))
    raise click.ClickException(
        f"cannot reach the server: {exc}. Is `actorflow serve` running at that --url?"
    )


@main.command()
@click.argument("actor")
@click.argument("handler")
@click.argument("arguments", required=False)
@click.option(
    "--wait",
    type=float,
    help="Wait up to this many seconds (at most 60) for the result.",
)
@click.option("--idempotency-key", help="Retries with the same key return the same invocation.")
@click.option(
    "--deadline", type=float, help="Cancel (and compensate) the turn after this many seconds."
)
@budget_option
@_client_options
def send(
    actor: str,
    handler: str,
    arguments: str | None,
    wait: float | None,
    idempotency_key: str | None,
    deadline: float | None,
    budget: Budget | None,
    url: str,
    token_file: Path | None,
    timeout: float,
) -> None:
    """Send a message to ACTOR (Type/key): HANDLER with ARGUMENTS as a JSON object.

    Example: actorflow send Researcher/job-1 research '{"topic": "batteries"}' --wait 5
    """
    args = _json_argument(arguments, "ARGUMENTS") or {}
    if not isinstance(args, dict):
        raise click.BadParameter(
            "must be a JSON object of argument names to values", param_hint="ARGUMENTS"
        )
    _print(
        _talk(
            url,
            token_file,
            timeout,
            lambda client: client.send(
                actor,
                handler,
                args,
                idempotency_key=idempotency_key,
                wait=wait,
                deadline=deadline,
                budget=budget,
            ),
        )
    )


@main.command()
@click.argument("invocation")
@click.option(
    "--wait",
    type=float,
    help="Wait up to this many seconds (at most 60) for it to finish.",
)
@_client_options
def show(
    invocation: str, wait: float | None, url: str, token_file: Path | None, timeout: float
) -> None:
    """Show an invocation (Type/key#id): its state, result or error."""
    found = _talk(url, token_file, timeout, lambda client: client.invocation(invocation, wait=wait))
    _print(found)


@main.command()
@click.argument("actor")
@_client_options
def status(actor: str, url: str, token_file: Path | None, timeout: float) -> None:
    """Show what ACTOR (Type/key) is doing."""
    _print(_talk(url, token_file, timeout, lambda client: client.status(actor)))


def _limit_option(fn: Any) -> Any:
    return click.option(
        "--limit",
        type=click.IntRange(min=1),
        help="Show at most this many (default: all, fetched from the server a page of "
        f"{PAGE_SIZE} at a time).",
    )(fn)


#: Items per request when a command pages through a listing.
PAGE_SIZE = 1000


def _paged(pages: Iterator[Page[T]], limit: int | None) -> Iterator[T]:
    """The items of ``pages``, at most ``limit`` of them (fetching no page more)."""
    return itertools.islice((item for page in pages for item in page.items), limit)


def _print_json_items(items: Iterator[Any]) -> None:
    """Print ``items`` as one indented JSON array, as they come."""
    click.echo("[", nl=False)
    first = True
    for item in items:
        text = json.dumps(msgspec.to_builtins(item), indent=2, default=str)
        click.echo(("\n" if first else ",\n") + textwrap.indent(text, "  "), nl=False)
        first = False
    click.echo("]" if first else "\n]")


@click.command("journal")
@click.argument("actor")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@_limit_option
@_client_options
def journal_command(
    actor: str,
    as_json: bool,
    limit: int | None,
    url: str,
    token_file: Path | None,
    timeout: float,
) -> None:
    """Show ACTOR's journal: time, entry, step name and how long it took. For an actor
    stuck or held, say why first, and mark the entry where its replay diverged."""

    def show(client: SyncClient) -> None:
        entries = _paged(client.journal_pages(actor, limit=PAGE_SIZE), limit)
        if as_json:
            _print_json_items(entries)
            return
        found = client.status(actor)
        if found.state in ("stuck", "held"):
            click.echo(f"{found.actor} is {found.state}: {found.error}", err=True)
        previous: dict[int, float] = {}
        for entry in entries:
            line = journal_line(entry, previous)
            if entry.stream == "actor" and entry.position == found.diverged_at:
                line += "  <- the replay diverged here"
            click.echo(line)

    _talk(url, token_file, timeout, show)


@main.command("list")
@click.option("--type", "type_name", help="Only actors of this type.")
@click.option("--state", type=click.Choice(ACTOR_STATES), help="Only actors in this state.")
@_limit_option
@_client_options
def list_command(
    type_name: str | None,
    state: str | None,
    limit: int | None,
    url: str,
    token_file: Path | None,
    timeout: float,
) -> None:
    """List actors with their states, the code version of their latest turn ("-" if none),
    the worker hosting them (on a PostgreSQL journal; "-" if none) and their running
    invocation, in id order."""

    def show(client: SyncClient) -> None:
        pages = client.actor_pages(type_name, state, limit=PAGE_SIZE)
        for actor in _paged(pages, limit):
            version, owner = actor.version or "-", actor.owner or "-"
            click.echo(
                f"{actor.actor:40} {actor.state:14} {version:20} {owner:20} "
                f"{actor.invocation or ''}".rstrip()
            )

    _talk(url, token_file, timeout, show)


@main.command()
@_client_options
def workers(url: str, token_file: Path | None, timeout: float) -> None:
    """List the live workers sharing the server's PostgreSQL journal: name, actors hosted
    of capacity, code versions, seconds until the membership expires without a heartbeat."""

    def show(client: SyncClient) -> None:
        found = client.workers()
        if not found:
            click.echo("no workers: this server's journal is not shared (SQLite)")
        for w in found:
            versions = ",".join(f"{t}={v}" for t, v in sorted(w.versions.items()))
            click.echo(f"{w.worker:30} {w.load:>6}/{w.capacity:<6} {versions} {w.expires_in:.1f}s")

    _talk(url, token_file, timeout, show)


@main.command()
@click.argument("actor")
@click.argument("name")
@click.argument("payload", required=False)
@_client_options
def deliver(
    actor: str, name: str, payload: str | None, url: str, token_file: Path | None, timeout: float
) -> None:
    """Deliver the event NAME (with a JSON PAYLOAD) to ACTOR, for ctx.wait_for."""
    value = _json_argument(payload, "PAYLOAD")
    _talk(url, token_file, timeout, lambda client: client.deliver(actor, name, value))
    click.echo(f"delivered {name} to {actor}")


@main.command()
@click.argument("invocation")
@_client_options
def cancel(invocation: str, url: str, token_file: Path | None, timeout: float) -> None:
    """Cancel an invocation: its turn stops and its compensations run."""
    _print(_talk(url, token_file, timeout, lambda client: client.cancel(invocation)))


@main.command()
@click.argument("invocation")
@_client_options
def retry(invocation: str, url: str, token_file: Path | None, timeout: float) -> None:
    """Run a failed invocation again from its last journaled step (completed steps are
    not run again; the failed step and what follows run under the same idempotency keys).
    Refused if it was cancelled or its compensations ran."""
    _print(_talk(url, token_file, timeout, lambda client: client.retry(invocation)))


@main.command()
@click.argument("actor")
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
@_limit_option
@_client_options
def invocations(
    actor: str,
    as_json: bool,
    limit: int | None,
    url: str,
    token_file: Path | None,
    timeout: float,
) -> None:
    """List ACTOR's invocations: running and queued first, then ended ones, latest first,
    with their results or errors."""

    def show(client: SyncClient) -> None:
        found = _paged(client.invocation_pages(actor, limit=PAGE_SIZE), limit)
        if as_json:
            _print_json_items(found)
            return
        for status in found:
            if status.state == "completed":
                detail = short(status.result, 60)
            else:
                detail = status.error or ""
            handler = status.handler or ""
            click.echo(f"{status.invocation:45} {status.state:10} {handler:14} {detail}")

    _talk(url, token_file, timeout, show)


@main.command()
@click.argument("invocation")
@click.option("--after", help="Resume after this event id (<attempt>:<seq>).")
@click.option("--json", "as_json", is_flag=True, help="Print every event as a JSON line.")
@_client_options
def watch(
    invocation: str,
    after: str | None,
    as_json: bool,
    url: str,
    token_file: Path | None,
    timeout: float,
) -> None:
    """Print an invocation's stream (Type/key#id) as it comes: text chunks as they arrive,
    a notice on stderr when an attempt's output is superseded, until it ends (exit 1 if
    it did not complete). Reconnects by itself."""

    def show(client: SyncClient) -> int:
        events = client.stream(invocation, after=after)
        return print_events(events, sys.stdout, sys.stderr, as_json)

    sys.exit(_talk(url, token_file, timeout, show))


main.add_command(export_command)
main.add_command(reset_command)
_journal = add_offline_commands(journal_group(journal_command))
_journal.add_command(journal_key_command)
main.add_command(_journal)
main.add_command(replay_command)
main.add_command(query_command(_client_options, _talk, _json_argument, _print))
main.add_command(budget_command(_client_options, _talk, _print))
