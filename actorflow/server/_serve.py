"""`actorflow serve`: load the app's actors, open the journal, serve HTTP, stop gracefully.

The port answers as soon as it is bound: /livez at once, /readyz and the API once the
journal is open and the actors are recovered (503 with the reason until then). On the
first SIGTERM or SIGINT: readiness fails at once, new sends get 503 with
Retry-After, each actor type stops by its strategy within the grace budget, the journal is
flushed and the process exits 0. A second signal exits at once; everything acknowledged
was already durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import ipaddress
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Self

import anyio
import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from actorflow._actor import Actor
from actorflow._errors import ActorDefinitionError, ActorflowError
from actorflow.cluster import NOTIFY_PREFIXES, ClusterOptions
from actorflow.runtime import Runtime
from actorflow.runtime._big_values import DEFAULT_VALUE_THRESHOLD
from actorflow.runtime._streams import DEFAULT_STREAM_RETENTION
from actorflow.server import _encryption
from actorflow.server._app import ServerState, create_app
from actorflow.server._connections import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE,
    MAX_HEAD_BYTES,
    ConnectionGuard,
    ConnectionLimits,
    check_max_connections,
    default_max_connections,
    guarded_protocol,
)
from actorflow.server._guard import HostRule, parse_origin, served_hosts
from actorflow.server._memory import GC_THRESHOLD, trim_after_passivations, tune_gc
from actorflow.server._tracing import TracingSetupError, serve_tracer_provider
from journal import (
    DEFAULT_MAX_RECORD_BYTES,
    Durability,
    JournalError,
    PostgresStore,
    SqliteStore,
    Store,
    StoreLockedError,
)

log = logging.getLogger("actorflow.serve")

DEFAULT_PORT = 8787
DEFAULT_JOURNAL = "actorflow.db"
#: Kept back from the grace budget for closing HTTP connections and the journal.
EXIT_MARGIN = 0.5
#: How often a server waiting for the journal tries its lock again.
LOCK_POLL = 0.1
#: Longest the HTTP server may take to close its connections once told to stop.
HTTP_CLOSE_WAIT = 2.0
#: Stream states the journal's writer keeps in memory (`SqliteStore.open`'s
#: ``cached_streams``, about 0.5 KiB each): enough for the streams of a few thousand
#: busy actors (three each), not of every actor seen since the start (20,000 actors held
#: over 30 MiB). A stream not cached costs one indexed read when it is next written; one
#: written only once (an invocation's index entry) is never cached.
CACHED_STREAMS = 10_000
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ServeError(ActorflowError):
    """`actorflow serve` cannot start as configured; the message says what to change."""


@dataclasses.dataclass
class ServeConfig:
    """Everything `actorflow serve` is told (see `actorflow serve --help`)."""

    app: str
    journal: str = DEFAULT_JOURNAL
    durability: Durability = "full"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    grace: float = 25.0
    log_level: str = "info"
    token: str | None = None
    allow_public: bool = False
    max_body_bytes: int = 1024 * 1024
    snapshot_every: int = 100
    idle_timeout: float = 60.0
    version: str = ""
    lock_wait: float = 60.0
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    #: Payloads over this many bytes are stored once as values (`--value-threshold`; 0: off).
    value_threshold: int = DEFAULT_VALUE_THRESHOLD
    step_threads: int = 40
    idempotency_retention: float = 24 * 3600.0
    max_pending_events: int = 100
    max_queued_messages: int = 1000
    #: Host values answered beyond this machine's names and the bound address (`--allowed-host`).
    allowed_hosts: tuple[str, ...] = ()
    #: Browser origins allowed to call the API (`--allowed-origin`); none by default.
    allowed_origins: tuple[str, ...] = ()
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    keep_alive: int = DEFAULT_KEEP_ALIVE
    #: None: `default_max_connections` (1000, or half the open-file limit if lower).
    max_connections: int | None = None
    #: As a worker on a PostgreSQL journal: its name (None: host-pid-random), how many
    #: actors it hosts at once, and how long its leases outlive its last heartbeat.
    worker_id: str | None = None
    capacity: int = 1000
    lease_ttl: float = 10.0
    #: Allocations between collections of the GC's youngest generation (0: CPython's).
    gc_threshold: int = GC_THRESHOLD
    #: Seconds an ended invocation's chunk stream is kept (`--stream-retention`).
    stream_retention: float = DEFAULT_STREAM_RETENTION
    #: Trace with OpenTelemetry (`--otel`; see `actorflow.server._tracing`).
    otel: bool = False
    #: The key file that encrypts the journal (`--codec-key-file`, docs/encryption.md).
    codec_key_file: str | None = None

    @property
    def shared(self) -> bool:
        """Whether the journal is a PostgreSQL database shared by workers."""
        return self.journal.startswith(("postgresql://", "postgres://"))

    @property
    def journal_label(self) -> str:
        """The journal as logs and messages name it (a URL's password left out)."""
        if not self.shared:
            return self.journal
        scheme, _, rest = self.journal.partition("://")
        credentials, at, where = rest.rpartition("@")
        return f"{scheme}://{credentials.partition(':')[0]}{at}{where}"

    def cluster(self) -> ClusterOptions | None:
        """The worker's settings, on a shared journal."""
        if not self.shared:
            return None
        if self.worker_id is None:
            return ClusterOptions(capacity=self.capacity, lease_ttl=self.lease_ttl)
        return ClusterOptions(self.worker_id, self.capacity, self.lease_ttl)

    def connection_limits(self) -> ConnectionLimits:
        """The connection settings, checked against the process's open-file limit."""
        if self.max_connections is None:
            return ConnectionLimits(self.header_timeout, self.keep_alive, default_max_connections())
        problem = check_max_connections(self.max_connections)
        if problem is not None:
            raise ServeError(problem)
        return ConnectionLimits(self.header_timeout, self.keep_alive, self.max_connections)


def load_actors(spec: str) -> list[type[Actor]]:
    """The actor classes named by ``spec``: ``package.module``, ``path/to/file.py``, or
    either followed by ``:NAME`` (a class, or a list of classes). Without ``:NAME``,
    the module's ``ACTORS`` list if it has one, else every Actor class it holds.

    Raises `ServeError` when they cannot be loaded, saying why: the problems of a
    misdefined actor class, or the traceback of the app's own code that failed."""
    target, _, attr = spec.partition(":")
    module = _import(target)
    if attr:
        found = getattr(module, attr, None)
        if found is None:
            raise ServeError(f"{target} has no attribute {attr!r}")
        classes = list(found) if isinstance(found, list | tuple) else [found]
    elif hasattr(module, "ACTORS"):
        classes = list(module.ACTORS)
    else:
        classes = [
            value
            for value in vars(module).values()
            if inspect.isclass(value) and issubclass(value, Actor) and value is not Actor
        ]
    bad = [c for c in classes if not (inspect.isclass(c) and issubclass(c, Actor))]
    if bad or not classes:
        raise ServeError(
            f"{spec} names no actor classes (found {bad or 'none'}); point actorflow serve "
            f"at a module that defines actorflow.Actor subclasses, e.g. examples.agents"
        )
    _check_names(spec, classes)
    return classes


def _check_names(spec: str, classes: list[type[Actor]]) -> None:
    named: dict[str, type[Actor]] = {}
    for cls in classes:
        name = cls.__actorflow_name__
        other = named.setdefault(name, cls)
        if other is not cls:
            raise ServeError(
                f"cannot load the app {spec}: two actor classes are both named {name!r} "
                f"({_qualified(other)} and {_qualified(cls)}); rename one, or give it "
                f"another type name with `class {cls.__name__}(actorflow.Actor, name=...)`"
            )


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _import(target: str) -> ModuleType:
    if target.endswith(".py") or os.sep in target:
        path = Path(target).resolve()
        if not path.is_file():
            raise ServeError(f"no such file: {target}")
        sys.path.insert(0, str(path.parent))
        loaded = importlib.util.spec_from_file_location(path.stem, path)
        if loaded is None or loaded.loader is None:
            raise ServeError(f"cannot import {target}")
        module = importlib.util.module_from_spec(loaded)
        sys.modules[path.stem] = module
        try:
            loaded.loader.exec_module(module)
        except Exception as exc:
            raise _load_failed(target, exc) from None
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if not _names_target(exc, target):
            raise _load_failed(target, exc) from None
        raise ServeError(
            f"cannot import {target!r}: {exc}; run actorflow serve from the folder that "
            f"holds it, or give the path of its file (e.g. app/agents.py)"
        ) from None
    except Exception as exc:
        raise _load_failed(target, exc) from None


def _names_target(exc: ModuleNotFoundError, target: str) -> bool:
    """Whether ``exc`` says the module ``target`` (or a package of it) does not exist,
    rather than that a module it imports does not."""
    return exc.name is not None and (target + ".").startswith(exc.name + ".")


def _load_failed(target: str, exc: Exception) -> ServeError:
    """The error for an app whose import raised ``exc``: a misdefined actor says its
    problems; anything else shows the traceback of the app's own code."""
    if isinstance(exc, ActorDefinitionError):
        return ServeError(f"cannot load the app {target}: {exc}")
    shown = traceback.TracebackException.from_exception(exc)
    _drop_our_frames(shown)
    return ServeError(
        f"cannot load the app {target}: importing it raised {type(exc).__name__}. Fix the "
        f"code below and start the server again.\n{''.join(shown.format()).rstrip()}"
    )


#: Where frames come from that are not the app's: actorflow, and the import machinery.
_NOT_THE_APP = (
    str(Path(__file__).parents[1]) + os.sep,
    str(Path(importlib.__file__).parent) + os.sep,
)


def _drop_our_frames(shown: traceback.TracebackException) -> None:
    """Keep only the app's frames in ``shown`` and the exceptions chained to it."""
    seen: set[int] = set()
    pending: list[traceback.TracebackException | None] = [shown]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        kept = [
            frame
            for frame in current.stack
            if not frame.filename.startswith(("<frozen ", *_NOT_THE_APP))
        ]
        current.stack = traceback.StackSummary.from_list(kept)
        pending += [current.__cause__, current.__context__]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(config: ServeConfig) -> None:
    """Refuse to listen beyond this machine without a token (unless told to)."""
    if is_loopback(config.host) or config.token or config.allow_public:
        return
    raise ServeError(
        f"refusing to listen on {config.host} without an auth token: anyone who can reach "
        f"it could run your agents. Set a token with --token-file PATH or the "
        f"ACTORFLOW_TOKEN environment variable, or pass --allow-public-without-token "
        f"if something in front of this server authenticates."
    )


def check_browser_rules(config: ServeConfig) -> None:
    """Refuse an --allowed-host or --allowed-origin that could never match a request."""
    try:
        for host in config.allowed_hosts:
            HostRule.parse(host)
        for origin in config.allowed_origins:
            parse_origin(origin)
    except ValueError as exc:
        raise ServeError(str(exc)) from None


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handling: `serve` owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def event(name: str, **fields: Any) -> None:
    """A lifecycle log line: ``event=name key=value ...``."""
    details = " ".join(f"{key}={value}" for key, value in fields.items())
    log.info("event=%s %s", name, details)


async def serve(config: ServeConfig) -> int:
    """Run the server until a signal stops it; return the process exit code.

    The port answers from the moment it is bound: health checks at once, the API once the
    journal is open and the runtime has recovered its actors (503 with Retry-After until
    then).
    """
    check_binding(config)
    check_browser_rules(config)
    limits = config.connection_limits()
    actors = load_actors(config.app)
    try:
        tracer_provider, close_tracing = serve_tracer_provider(config.otel)
    except TracingSetupError as exc:
        raise ServeError(str(exc)) from None
    started = time.monotonic()
    sock = _bind(config)  # before anything else, so a busy port is a plain error
    state = ServerState(
        token=config.token,
        max_body_bytes=config.max_body_bytes,
        allowed_hosts=served_hosts(config.host, sock.getsockname()[1], config.allowed_hosts),
        allowed_origins=config.allowed_origins,
    )
    try:
        with _Signals(state) as signals:
            async with _listening(config, limits, state, sock) as http:
                await _run(config, actors, state, signals, http, tracer_provider)
    finally:
        sock.close()
        close_tracing()  # exports the spans still buffered
    event("exit", code=0, uptime_s=f"{time.monotonic() - started:.1f}")
    return 0


async def _run(
    config: ServeConfig,
    actors: list[type[Actor]],
    state: ServerState,
    signals: _Signals,
    http: _Http,
    tracer_provider: Any = None,
) -> None:
    """Open the journal, start the runtime, serve it until a signal, then stop by strategy
    and close HTTP while the runtime still answers the requests in progress."""
    try:
        keyring = _encryption.read_key_file(config.codec_key_file)
    except _encryption.KeyFileError as exc:
        raise ServeError(str(exc)) from None
    store = await _open_journal(config, state, signals.stop)
    if store is None:
        event("stopped-waiting", signal=signals.first, journal=config.journal_label)
        return
    try:
        try:
            store = await _encryption.encrypted(store, keyring, config.journal_label)
        except _encryption.KeyFileError as exc:
            raise ServeError(str(exc)) from None
        state.starting = f"recovering actors from the journal {config.journal_label}"
        runtime = Runtime(
            store,
            actors,
            snapshot_every=config.snapshot_every,
            idle_timeout=config.idle_timeout,
            version=config.version,
            grace=config.grace,
            step_threads=config.step_threads,
            idempotency_retention=config.idempotency_retention,
            stream_retention=config.stream_retention,
            value_threshold=config.value_threshold,
            max_pending_events=config.max_pending_events,
            max_queued_messages=config.max_queued_messages,
            cluster=config.cluster(),
            tracer_provider=tracer_provider,
        )
        async with runtime:
            tune_gc(config.gc_threshold)
            state.ready(runtime)
            event(
                "start",
                actors=",".join(sorted(cls.__actorflow_name__ for cls in actors)),
                journal=config.journal_label,
                durability=config.durability,
                recovered=runtime.metrics.recovered,
                worker=runtime.worker.id if runtime.worker is not None else "",
            )
            async with anyio.create_task_group() as background:
                background.start_soon(trim_after_passivations, runtime.in_memory)
                await signals.stop.wait()
                background.cancel_scope.cancel()
            await _drain(config, runtime, signals)
            await http.close()
    finally:
        await store.close()


async def _open_journal(config: ServeConfig, state: ServerState, stop: anyio.Event) -> Store | None:
    """Open the journal, waiting (up to ``lock_wait`` seconds) while the previous process
    still holds it: during a deploy the new process may start before the old one exits.
    None if ``stop`` is set first. A PostgreSQL journal is shared: nothing to wait for."""
    state.starting = f"opening the journal {config.journal_label}"
    if config.shared:
        try:
            return await PostgresStore.open(
                config.journal,
                max_record_bytes=config.max_record_bytes,
                notify_prefixes=NOTIFY_PREFIXES,
            )
        except (OSError, JournalError) as exc:
            raise ServeError(f"cannot open the journal {config.journal_label}: {exc}") from None
    give_up = time.monotonic() + config.lock_wait
    waiting = False
    while True:
        try:
            return await SqliteStore.open(
                config.journal,
                durability=config.durability,
                max_record_bytes=config.max_record_bytes,
                cached_streams=CACHED_STREAMS,
            )
        except StoreLockedError:
            if time.monotonic() >= give_up:
                raise ServeError(
                    f"{config.journal} is still held by another process after "
                    f"{config.lock_wait:g} s (--lock-wait); stop that process, wait longer "
                    f"with a larger --lock-wait, or point --journal elsewhere"
                ) from None
        if not waiting:
            waiting = True
            state.starting = (
                f"waiting for the journal lock on {config.journal}, held by another process"
            )
            event("waiting-for-journal", journal=config.journal)
        with anyio.move_on_after(LOCK_POLL):
            await stop.wait()
        if stop.is_set():
            return None


async def _drain(config: ServeConfig, runtime: Runtime, signals: _Signals) -> None:
    """Stop each actor type by its strategy within the grace budget, and say how it went."""
    began = time.monotonic()
    event("draining", signal=signals.first, budget_s=config.grace, running=runtime.running_turns())
    budget = max(0.0, config.grace - EXIT_MARGIN)
    report = await runtime.shutdown(budget)
    event(
        "stopped-turns",
        running=report.running,
        checkpointed=report.checkpointed,
        finished=report.finished,
        compensated=report.compensated,
        abandoned=report.abandoned,
        seconds=f"{time.monotonic() - began:.2f}",
    )


class _Signals:
    """SIGTERM and SIGINT while serving: the first fails readiness at once and sets
    ``stop``; a second one exits the process at once (everything acknowledged is durable)."""

    def __init__(self, state: ServerState) -> None:
        self.stop = anyio.Event()
        self._state = state
        self._received: list[int] = []

    @property
    def first(self) -> str:
        """The name of the first signal received."""
        return signal.Signals(self._received[0]).name

    def _on_signal(self, signum: int) -> None:
        self._received.append(signum)
        if len(self._received) > 1:
            event("exit-now", signal=signal.Signals(signum).name, reason="second signal")
            logging.shutdown()
            os._exit(128 + signum)
        self._state.shutting_down.set()
        self.stop.set()

    def __enter__(self) -> Self:
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        return self

    def __exit__(self, *exc_info: object) -> None:
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


class _Http:
    """The HTTP server on the bound socket, running in the background."""

    def __init__(self, server: uvicorn.Server) -> None:
        self._server = server
        self._stopped = anyio.Event()

    async def run(self, sock: socket.socket) -> None:
        """Serve until `close` is called."""
        try:
            await self._server.serve([sock])
        finally:
            self._stopped.set()

    async def close(self) -> None:
        """Stop accepting, and close connections once their requests are answered (waiting
        up to ``timeout_graceful_shutdown``). Call it before the runtime stops, so that
        requests in progress still find it."""
        self._server.should_exit = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(HTTP_CLOSE_WAIT):
            await self._stopped.wait()


@contextlib.asynccontextmanager
async def _listening(
    config: ServeConfig, limits: ConnectionLimits, state: ServerState, sock: socket.socket
) -> AsyncIterator[_Http]:
    """Serve HTTP on ``sock`` for the duration of the block (closed at its end, if not
    before), with a deadline on request heads and a bound on connections (see
    `actorflow.server._connections`)."""
    guard = ConnectionGuard(limits)
    http = _Http(
        _Server(
            uvicorn.Config(
                create_app(state),
                host=config.host,
                port=config.port,
                log_level=config.log_level,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=1,
                http=guarded_protocol(AutoHTTPProtocol, guard),
                timeout_keep_alive=limits.keep_alive,
                h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            )
        )
    )
    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(http.run, sock)
        event(
            "listening",
            url=f"http://{config.host}:{sock.getsockname()[1]}",
            max_connections=limits.max_connections,
            header_timeout_s=f"{limits.header_timeout:g}",
            keep_alive_s=limits.keep_alive,
        )
        try:
            yield http
        except Exception as exc:  # re-raised below as itself, not in an exception group
            failure = exc
        finally:
            await http.close()
    if failure is not None:
        raise failure


def _bind(config: ServeConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        sock.close()
        raise ServeError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror}; is another "
            f"server running there? Choose another --port."
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
