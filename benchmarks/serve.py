"""The serve suite: `actorflow serve` end to end, over real HTTP, in a real process.

- ``http-send``: ``actorflow serve benchmarks.serve_app`` runs as a subprocess on a fresh
  journal (``full`` durability, loopback, a free port). A load generator in this process
  (`CONCURRENCY` concurrent workers, each with its own keep-alive HTTP/1.1 connection; see
  `Connection` for why not httpx) posts `SENDS` messages to `Ping.ping` (a handler that
  takes no step) across `KEYS` actors, stopping after `SEND_LIMIT` seconds whatever
  happens. Figure: sends accepted / wall seconds from before the first send to after the
  last answer. Accepted means answered 202, or 200: the server answers 200 when the turn
  had already ended by the time it looked the invocation up (counted, and reported
  apart). Any other answer, or a request that fails, is an error, and fails the suite.
  Not timed, afterwards: every accepted message must have run its turn (the server's
  ``actorflow_turns_total``), and the server must exit 0 on SIGTERM.
  Ceiling: the same load generator against `benchmarks.serve_app.ceiling_app`, a bare ASGI
  app answering 202 without journal or actors, served by uvicorn (the server actorflow
  embeds, same HTTP implementation, same event loop) in its own subprocess: so the ratio is
  what durable acceptance costs over bare HTTP on this machine, with the load generator
  sharing its CPUs.
- ``sigterm-exit``: a fresh server gets `AGENTS` messages to `Napper.nap` (three steps,
  then a durable one-hour timer); once the API lists all of them ``waiting-timer``
  (mid-run, checkpointable), SIGTERM is sent. Figure: seconds from the signal to the
  process's exit (``Popen.wait``, which returns when the kernel reaps it). The exit code
  must be 0 and the log's ``event=stopped-turns`` line must say every agent was
  checkpointed. Then a new server on the same journal must log ``recovered N actors`` and
  list all N waiting on their timers again; it is stopped the same way.
- ``memory`` and ``reads`` (`benchmarks.serve_memory`, run once): the server's RSS per
  active and per passivated actor, with each of CPython's allocators, and the cost of
  lookups and listings over a large history.

Each measurement is repeated and the middle run reported. Everything talks to 127.0.0.1
only; journals and logs live in a temporary directory, removed afterwards (set ``TMPDIR``
to measure another disk). Every wait is bounded, and every subprocess is killed and reaped
whatever happens. A server that misbehaves (answers wrongly, loses a message, exits
non-zero, hangs) stops the suite with an error quoting its log: no figure is reported.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx

from benchmarks._report import (
    AtMost,
    Column,
    Progress,
    Result,
    Section,
    SuiteReport,
    Target,
    fraction,
    loop_name,
    middle,
    on_uvloop,
    seconds,
    whole,
)
from benchmarks.serve_app import NAP_STEPS

ROOT = Path(__file__).resolve().parents[1]
APP = "benchmarks.serve_app"
CEILING_APP = "benchmarks.serve_app:ceiling_app"
HOST = "127.0.0.1"

#: Concurrent workers of the load generator, and connections in its pool.
CONCURRENCY = 64
#: Sends per ``http-send`` run: (full run, --quick run).
SENDS = (20_000, 3_000)
#: Distinct `Ping` actors the sends go to, round-robin.
KEYS = 1_000
#: Seconds after which the load generator stops sending, however many sends remain.
SEND_LIMIT = 30.0
#: Agents mid-run at SIGTERM in ``sigterm-exit``: (full run, --quick run).
AGENTS = (1_000, 1_000)

#: The server's --grace budget (its default): SIGTERM-to-exit must fit well inside it.
GRACE = 25.0
#: Seconds to wait for a server to be ready after it is started.
START_LIMIT = 30.0
#: Seconds to wait for every accepted message to have run, or every agent to be waiting.
SETTLE_LIMIT = 60.0
#: Seconds a server may take to exit after SIGTERM before it is killed (a hang).
EXIT_LIMIT = GRACE + 10.0
#: Seconds one HTTP request may take.
REQUEST_TIMEOUT = 10.0
#: How often the settle waits poll the server.
POLL_EVERY = 0.05


#: What a send is answered once accepted durably: 202, or 200 when its turn had already
#: ended by the time the server looked its status up (the API documents both).
ACCEPTED = (202, 200)


class ServeBenchmarkError(RuntimeError):
    """The server failed or hung under the benchmark: a bug to report, not a figure."""


# -- server processes -----------------------------------------------------------------------


@dataclasses.dataclass
class Served:
    """A server process started by `served`, answering on ``url``, logging to ``log``."""

    name: str
    command: list[str]
    proc: subprocess.Popen[bytes]
    port: int
    url: str
    log: Path
    started: float

    def log_text(self) -> str:
        """Everything the process logged so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def fail(self, problem: str) -> ServeBenchmarkError:
        """An error saying what went wrong, with the end of the process's log."""
        tail = "\n".join(f"    {line}" for line in self.log_text().splitlines()[-15:])
        return ServeBenchmarkError(
            f"{self.name} misbehaved: {problem}\n  its command: {' '.join(self.command)}"
            f"\n  the end of its log ({self.log}):\n{tail or '    (empty)'}\n  reproduce with "
            f"`python -m benchmarks serve --quick`"
        )

    def cpu_seconds(self) -> float | None:
        """CPU seconds the process used so far (all threads), where /proc tells."""
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text(encoding="ascii")
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()  # fields from the 3rd (state) on
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def actorflow_command() -> list[str]:
    """How to run the ``actorflow`` command of this interpreter's environment."""
    script = Path(sys.executable).with_name("actorflow")
    if script.is_file():
        return [str(script)]
    # pragma: no cover - the console script lives beside the interpreter in a venv
    return [sys.executable, "-c", "from actorflow.cli import main; main()"]


def server_command(journal: Path, port: int) -> list[str]:
    """``actorflow serve`` on ``journal`` and ``port``, with the settings measured."""
    return [
        *actorflow_command(),
        "serve",
        APP,
        f"--journal={journal}",
        f"--host={HOST}",
        f"--port={port}",
        "--durability=full",
        f"--grace={GRACE:g}",
        "--log-level=info",
    ]


def ceiling_command(port: int) -> list[str]:
    """uvicorn serving the bare ASGI app, configured as ``actorflow serve`` configures it."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return [
        sys.executable,
        "-m",
        "uvicorn",
        CEILING_APP,
        f"--host={HOST}",
        f"--port={port}",
        f"--loop={loop}",
        "--http=auto",
        "--lifespan=off",
        "--no-access-log",
        "--log-level=warning",
    ]


@contextlib.contextmanager
def served(
    name: str,
    command: list[str],
    port: int,
    log: Path,
    ready: str = "/readyz",
    env: dict[str, str] | None = None,
) -> Iterator[Served]:
    """Start ``command`` (a server on ``port``, with ``env`` added to this process's
    environment), wait until ``ready`` answers 200 (for `actorflow serve`, /readyz: the
    journal is open and the actors recovered; /livez answers as soon as the port is
    bound), yield it; kill and reap it afterwards, whatever happened."""
    environment = {k: v for k, v in os.environ.items() if k != "ACTORFLOW_TOKEN"}
    environment |= env or {}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=environment
        )
    server = Served(name, command, proc, port, f"http://{HOST}:{port}", log, time.perf_counter())
    try:
        wait_alive(server, ready)
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()  # after SIGKILL: at once


def wait_alive(server: Served, ready: str) -> None:
    """Return once ``server`` answers GET ``ready`` with 200; fail if it exits or takes too
    long."""
    give_up = time.perf_counter() + START_LIMIT
    with httpx.Client(base_url=server.url, timeout=1.0) as client:
        while True:
            if server.proc.poll() is not None:
                raise server.fail(f"it exited with code {server.proc.returncode} on starting")
            with contextlib.suppress(httpx.TransportError):
                if client.get(ready).status_code == 200:
                    return
            if time.perf_counter() > give_up:
                raise server.fail(f"{ready} did not answer 200 within {START_LIMIT:g}s")
            time.sleep(POLL_EVERY)


def stop(server: Served) -> tuple[float, int, float]:
    """SIGTERM ``server``; return the seconds until it exited, its exit code, and the
    wall-clock time of the signal.

    ``Popen.wait()`` blocks in ``waitpid`` and returns as the kernel reaps the process;
    a watchdog kills the process if it is not gone after `EXIT_LIMIT` seconds.
    """
    proc = server.proc
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        proc.kill()

    watchdog = threading.Timer(EXIT_LIMIT, kill)
    watchdog.daemon = True
    signalled = time.time()
    start = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    watchdog.start()
    try:
        code = proc.wait()
        elapsed = time.perf_counter() - start
    finally:
        watchdog.cancel()
    if killed.is_set():
        raise server.fail(f"it had not exited {EXIT_LIMIT:g}s after SIGTERM (killed)")
    return elapsed, code, signalled


def stopped_turns(server: Served) -> dict[str, str]:
    """The fields of the log's ``event=stopped-turns`` line; fail if there is none."""
    found = re.findall(r"event=stopped-turns (.*)", server.log_text())
    if not found:
        raise server.fail("its log has no event=stopped-turns line after SIGTERM")
    return dict(field.split("=", 1) for field in found[-1].split() if "=" in field)


@dataclasses.dataclass(frozen=True)
class Stopped:
    """How a server stopped on SIGTERM."""

    seconds: float
    #: The fields of its ``event=stopped-turns`` log line.
    report: dict[str, str]
    #: Where the seconds went, from its log's timestamps (to the millisecond).
    phases: dict[str, float]


def stop_checked(server: Served, running: int) -> Stopped:
    """SIGTERM ``server``, check it exited 0 with ``running`` turns checkpointed."""
    elapsed, code, signalled = stop(server)
    if code != 0:
        raise server.fail(f"it exited with code {code} after SIGTERM, expected 0")
    report = stopped_turns(server)
    wanted = {"running": str(running), "checkpointed": str(running), "abandoned": "0"}
    got = {key: report.get(key) for key in wanted}
    if got != wanted:
        raise server.fail(f"after SIGTERM its log says {report}, expected {wanted}")
    if "event=exit code=0" not in server.log_text():
        raise server.fail("its log has no event=exit code=0 line")
    return Stopped(elapsed, report, phases(server, signalled, signalled + elapsed))


LIFECYCLE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*event=(draining|stopped-turns|exit) ",
    re.MULTILINE,
)


def phases(server: Served, signalled: float, exited: float) -> dict[str, float]:
    """The seconds from SIGTERM to exit, split at the log's lifecycle lines: to the
    draining line, stopping the turns, closing HTTP and the journal (to the exit line),
    and the interpreter's teardown after it. Empty if the log lacks a line."""
    at = {
        name: datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for stamp, name in LIFECYCLE.findall(server.log_text())
    }
    if not at.keys() >= {"draining", "stopped-turns", "exit"}:
        return {}
    # Log stamps are truncated to the millisecond: clamp the first span at zero.
    return {
        "signal_to_draining": round(max(0.0, at["draining"] - signalled), 3),
        "stopping_turns": round(at["stopped-turns"] - at["draining"], 3),
        "closing": round(at["exit"] - at["stopped-turns"], 3),
        "after_exit_line": round(exited - at["exit"], 3),
    }


# -- the load generator ---------------------------------------------------------------------


@dataclasses.dataclass
class Load:
    """What one load run sent and got back."""

    attempted: int
    statuses: collections.Counter[int]
    failures: collections.Counter[str]
    seconds: float
    #: CPU seconds this process used meanwhile (the load generator's cost).
    cpu: float

    @property
    def accepted(self) -> int:
        """Sends accepted: answered 202, or 200 (accepted, and its turn already ended)."""
        return sum(self.statuses[code] for code in ACCEPTED)

    @property
    def errors(self) -> int:
        """Sends answered anything but 202 or 200, or not answered at all."""
        return self.attempted - self.accepted

    def describe_errors(self) -> str:
        """``{status: count}`` and ``{failure: count}``, for error messages."""
        answers = {code: n for code, n in self.statuses.items() if code not in ACCEPTED}
        return f"answers {answers or 'none'}, failures {dict(self.failures) or 'none'}"


def ping_path(i: int) -> str:
    """The ``i``-th send of ``http-send``: `Ping.ping` of the actors, round-robin."""
    return f"/v1/actors/Ping/k-{i % KEYS:04d}/messages/ping"


def nap_path(i: int) -> str:
    """The ``i``-th agent of ``sigterm-exit``."""
    return f"/v1/actors/Napper/agent-{i:04d}/messages/nap"


class Connection:
    """One keep-alive HTTP/1.1 connection to the server: one request at a time.

    The load generator speaks HTTP itself, with asyncio streams, rather than through
    httpx: on a small machine httpx costs about a millisecond of CPU per request (its
    pool scans every connection per request; httpcore retries ``import sniffio`` on each
    one), so it, not the server, would be what was measured. This is the least a client
    can do: write the request, read the head up to the blank line, read the body its
    Content-Length announces.
    """

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes) -> int:
        """POST ``body`` (JSON) to ``path``; return the answer's status code."""
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._streams
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s"
            % (path.encode(), self._host.encode(), self._port, len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        if not re.fullmatch(r"HTTP/1\.1 \d{3}( .*)?", status_line):
            raise ValueError(f"not an HTTP/1.1 answer: {status_line[:80]!r}")
        fields = dict(line.lower().split(":", 1) for line in lines if ":" in line)
        length = fields.get("content-length")
        if length is None:
            raise ValueError(f"an answer without Content-Length: {status_line}")
        await reader.readexactly(int(length))
        if fields.get("connection", "").strip() == "close":
            self.close()
        return int(status_line.split(" ", 2)[1])

    def close(self) -> None:
        """Close the connection; the next `post` opens a new one."""
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def send_load(
    port: int,
    path: Callable[[int], str],
    body: Callable[[int], bytes],
    total: int,
    on_progress: Callable[[int], None],
) -> Load:
    """POST ``total`` messages from `CONCURRENCY` workers, each over its own keep-alive
    connection, stopping after `SEND_LIMIT` seconds whatever remains."""
    statuses: collections.Counter[int] = collections.Counter()
    failures: collections.Counter[str] = collections.Counter()
    issued = 0
    connections = [Connection(HOST, port) for _ in range(CONCURRENCY)]
    start = time.perf_counter()
    cpu = time.process_time()
    stop_sending = start + SEND_LIMIT

    async def worker(connection: Connection) -> None:
        nonlocal issued
        while issued < total and time.perf_counter() < stop_sending:
            i = issued
            issued += 1
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    status = await connection.post(path(i), body(i))
            except (OSError, EOFError, ValueError, TimeoutError, asyncio.LimitOverrunError) as exc:
                failures[type(exc).__name__] += 1
                connection.close()
                continue
            statuses[status] += 1
            if i % 1000 == 999:
                on_progress(i + 1)

    try:
        # The workers stop by themselves after SEND_LIMIT plus one request's timeout;
        # this is the backstop should the client itself hang.
        async with asyncio.timeout(SEND_LIMIT + 2 * REQUEST_TIMEOUT):
            async with asyncio.TaskGroup() as group:
                for connection in connections:
                    group.create_task(worker(connection))
    finally:
        for connection in connections:
            connection.close()
    return Load(issued, statuses, failures, time.perf_counter() - start, time.process_time() - cpu)


def load(
    server: Served,
    path: Callable[[int], str],
    body: Callable[[int], bytes],
    total: int,
    on_progress: Callable[[int], None],
) -> Load:
    """`send_load` on its own event loop; a hung client fails as the server's fault."""
    try:
        return on_uvloop(send_load(server.port, path, body, total, on_progress))
    except TimeoutError:
        raise server.fail("the load generator's requests hung beyond every timeout") from None


def metric(client: httpx.Client, name: str) -> float:
    """One unlabelled value from the server's /metrics."""
    text = client.get("/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    if found is None:
        raise ServeBenchmarkError(f"/metrics has no {name}")
    return float(found.group(1))


def settle(server: Served, what: str, done: Callable[[httpx.Client], bool]) -> float:
    """Poll until ``done``; return the seconds it took; fail after `SETTLE_LIMIT`."""
    start = time.perf_counter()
    with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT) as client:
        while not done(client):
            if time.perf_counter() - start > SETTLE_LIMIT:
                raise server.fail(f"{what}: not done after {SETTLE_LIMIT:g}s")
            if server.proc.poll() is not None:
                raise server.fail(f"{what}: it exited with code {server.proc.returncode}")
            time.sleep(POLL_EVERY)
    return time.perf_counter() - start


# -- http-send ------------------------------------------------------------------------------


def ping_body(i: int) -> bytes:
    """The JSON arguments of the ``i``-th ping."""
    return b'{"n":%d}' % i


@dataclasses.dataclass(frozen=True)
class SendRun:
    """One timed ``http-send`` run against actorflow, with the server's CPU meanwhile."""

    load: Load
    server_cpu: float | None
    turns_after: float
    #: The journal's commits and records from before the load until every turn had run.
    commits: int
    records: int


def send_with_server(tmp: Path, total: int, progress: Progress, label: str) -> SendRun:
    """Time ``total`` sends to a fresh ``actorflow serve``; check they all ran."""
    port = free_port()
    command = server_command(tmp / "j.db", port)
    with served("actorflow serve", command, port, tmp / "serve.log") as server:
        commits, records = journal_counts(server)
        before = server.cpu_seconds()
        result = load(
            server,
            ping_path,
            ping_body,
            total,
            lambda n: progress.step(f"{label}: {n:,}/{total:,} sends"),
        )
        after = server.cpu_seconds()
        if result.errors:
            raise server.fail(
                f"{result.errors:,} of {result.attempted:,} sends were not answered 202: "
                f"{result.describe_errors()}"
            )
        progress.step(f"{label}: waiting for the {result.accepted:,} accepted turns to run")
        turns = settle(
            server,
            f"running the {result.accepted:,} accepted messages",
            lambda c: metric(c, "actorflow_turns_total") >= result.accepted,
        )
        commits_after, records_after = journal_counts(server)
        stop_checked(server, running=0)
    cpu = None if before is None or after is None else after - before
    return SendRun(result, cpu, turns, commits_after - commits, records_after - records)


def journal_counts(server: Served) -> tuple[int, int]:
    """The server's journal commits and records so far, from /metrics."""
    with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT) as client:
        commits = metric(client, "actorflow_journal_commits_total")
        records = metric(client, "actorflow_journal_records_total")
    return int(commits), int(records)


def send_with_ceiling(tmp: Path, total: int, progress: Progress, label: str) -> Load:
    """Time ``total`` sends to the bare ASGI app under uvicorn."""
    port = free_port()
    ceiling = ceiling_command(port)
    with served("uvicorn (ceiling)", ceiling, port, tmp / "ceiling.log", "/livez") as server:
        result = load(
            server,
            ping_path,
            ping_body,
            total,
            lambda n: progress.step(f"{label}: {n:,}/{total:,} sends"),
        )
        if result.errors:
            raise server.fail(
                f"{result.errors:,} of {result.attempted:,} sends were not answered 202: "
                f"{result.describe_errors()}"
            )
    return result


def send_scenario(total: int, repeats: int, progress: Progress) -> Result:
    """Accepted sends/s through ``actorflow serve``, against bare HTTP on the same stack."""
    progress.scenario(f"http-send, {total:,} sends, {CONCURRENCY} concurrent")
    runs: list[SendRun] = []
    ceilings: list[Load] = []
    for n in range(1, repeats + 1):
        with tempfile.TemporaryDirectory(prefix="actorflow-bench-") as tmp:
            runs.append(send_with_server(Path(tmp), total, progress, f"run {n}/{repeats}"))
            ceilings.append(
                send_with_ceiling(Path(tmp), total, progress, f"run {n}/{repeats}, ceiling")
            )
    rate = middle([r.load.accepted / r.load.seconds for r in runs])
    run = next(r for r in runs if r.load.accepted / r.load.seconds == rate)
    ceiling_rate = middle([c.accepted / c.seconds for c in ceilings])
    ceiling = next(c for c in ceilings if c.accepted / c.seconds == ceiling_rate)
    done = run.load
    return {
        "scenario": "http-send",
        "per_s": round(rate, 1),
        "ceiling_per_s": round(ceiling_rate, 1),
        "ratio": round(rate / ceiling_rate, 4),
        "requests": done.attempted,
        "errors": done.errors,
        "answered_200": done.statuses[200],
        "seconds": round(done.seconds, 4),
        "concurrency": CONCURRENCY,
        "sends": total,
        "keys": KEYS,
        "stopped_by_time": done.attempted < total,
        "server_cpu": None if run.server_cpu is None else round(run.server_cpu / done.seconds, 2),
        "client_cpu": round(done.cpu / done.seconds, 2),
        "ceiling_client_cpu": round(ceiling.cpu / ceiling.seconds, 2),
        "ceiling_requests": ceiling.attempted,
        "ceiling_errors": ceiling.errors,
        "ceiling_seconds": round(ceiling.seconds, 4),
        "turns_done_after_s": round(run.turns_after, 3),
        "commits": run.commits,
        "records": run.records,
        "mean_batch": round(run.records / max(run.commits, 1), 2),
        "repeats": repeats,
    }


# -- sigterm-exit ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExitRun:
    """One ``sigterm-exit`` run: what the first server did at SIGTERM, and the restart."""

    stopped: Stopped
    settle_seconds: float
    recovered: int
    restart_seconds: float
    restart_exit_seconds: float


def waiting(client: httpx.Client) -> int:
    """How many `Napper` agents the server lists as waiting on their timer (every page)."""
    path = "/v1/actors?type=Napper&state=waiting-timer&limit=1000"
    return sum(len(page.json()) for page in every_page(client, path))


def every_page(client: httpx.Client, path: str) -> Iterator[httpx.Response]:
    """The answers to ``path`` and to each next page its ``Link`` header names (each must
    answer 200)."""
    url: str | None = path
    while url is not None:
        answer = client.get(url)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {url}: {answer.status_code} {answer.text[:200]}")
        yield answer
        url = answer.links.get("next", {}).get("url")


def nap_body(i: int) -> bytes:
    """The JSON arguments of every nap."""
    return b'{"steps":%d}' % NAP_STEPS


def exit_run(tmp: Path, agents: int, progress: Progress, label: str) -> ExitRun:
    """Put ``agents`` agents mid-run, time SIGTERM to exit, restart and check recovery."""
    journal = tmp / "j.db"
    port = free_port()
    with served("actorflow serve", server_command(journal, port), port, tmp / "1.log") as server:
        progress.step(f"{label}: sending {agents:,} agents")
        sent = load(server, nap_path, nap_body, agents, lambda n: None)
        if sent.errors or sent.attempted != agents:
            raise server.fail(
                f"{sent.accepted:,} of {agents:,} agents were accepted: {sent.describe_errors()}"
            )
        progress.step(f"{label}: waiting for {agents:,} agents to be on their timers")
        settled = settle(
            server, f"{agents:,} agents reaching their timers", lambda c: waiting(c) == agents
        )
        progress.step(f"{label}: SIGTERM")
        stopped = stop_checked(server, running=agents)

    progress.step(f"{label}: restarting on the same journal")
    port = free_port()
    with served("actorflow serve", server_command(journal, port), port, tmp / "2.log") as again:
        found = re.search(r"recovered (\d+) actors", again.log_text())
        recovered = int(found.group(1)) if found else 0
        if recovered != agents:
            said = found.group(0) if found else "no 'recovered N actors' line"
            raise again.fail(f"the restarted server says {said!r}, expected {agents:,}")
        settle(
            again,
            f"{agents:,} recovered agents back on their timers",
            lambda c: waiting(c) == agents,
        )
        restart = time.perf_counter() - again.started
        progress.step(f"{label}: SIGTERM to the restarted server")
        again_stopped = stop_checked(again, running=agents)
    return ExitRun(stopped, settled, recovered, restart, again_stopped.seconds)


def exit_scenario(agents: int, repeats: int, progress: Progress) -> Result:
    """Seconds from SIGTERM to exit with ``agents`` checkpointing agents mid-run."""
    progress.scenario(f"sigterm-exit, {agents:,} agents on durable timers")
    runs: list[ExitRun] = []
    for n in range(1, repeats + 1):
        with tempfile.TemporaryDirectory(prefix="actorflow-bench-") as tmp:
            runs.append(exit_run(Path(tmp), agents, progress, f"run {n}/{repeats}"))
    median = middle([r.stopped.seconds for r in runs])
    run = next(r for r in runs if r.stopped.seconds == median)
    return {
        "scenario": "sigterm-exit",
        "seconds": round(run.stopped.seconds, 4),
        "actors": agents,
        "checkpointed": int(run.stopped.report["checkpointed"]),
        "stopped_turns": run.stopped.report,
        "phases": run.stopped.phases,
        "exit_code": 0,
        "recovered": run.recovered,
        "settle_seconds": round(run.settle_seconds, 3),
        "restart_seconds": round(run.restart_seconds, 3),
        "restart_exit_seconds": round(run.restart_exit_seconds, 4),
        "all_seconds": [round(r.stopped.seconds, 4) for r in runs],
        "grace": GRACE,
        "repeats": repeats,
    }


# -- figures and targets --------------------------------------------------------------------


def targets(results: list[Result]) -> list[Target]:
    """The issue's targets, checked against this run."""

    def find(scenario: str) -> Result:
        return next(r for r in results if r["scenario"] == scenario)

    exits = find("sigterm-exit")
    return [
        Target("http-send, accepted sends/s", find("http-send")["per_s"], 2_000),
        AtMost(
            f"sigterm-exit, {exits['actors']:,} checkpointing agents, seconds",
            exits["seconds"],
            2.0,
            seconds,
        ),
    ]


def cores(value: float) -> str:
    """CPU use in cores: ``0.93``."""
    return fraction(value)


COLUMNS: Sequence[Column] = [
    Column("scenario", "scenario", numeric=False),
    Column("concurrency", "concurrency", whole),
    Column("requests", "requests", whole),
    Column("200s", "answered_200", whole),
    Column("errors", "errors", whole),
    Column("accepted/s", "per_s", whole),
    Column("bare HTTP/s", "ceiling_per_s", whole),
    Column("ratio", "ratio", fraction),
    Column("server cpu", "server_cpu", cores),
    Column("client cpu", "client_cpu", cores),
    Column("actors", "actors", whole),
    Column("checkpointed", "checkpointed", whole),
    Column("recovered", "recovered", whole),
    Column("seconds", "seconds", seconds),
]


# -- the suite ------------------------------------------------------------------------------


def measure(quick: bool, repeats: int) -> tuple[list[Result], list[Result]]:
    """Run every scenario in turn; the main table's results, and the memory and reads
    ones (run once: their figures are not rates, and they take a while)."""
    from benchmarks.serve_memory import memory_scenarios

    progress = Progress("serve", 3)
    results = [
        send_scenario(SENDS[quick], repeats, progress),
        exit_scenario(AGENTS[quick], repeats, progress),
    ]
    memory = memory_scenarios(quick, progress)
    progress.finish()
    return results, memory


def http_implementation() -> str:
    """Which HTTP/1.1 parser uvicorn's ``--http=auto`` picks here."""
    name = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{name} {importlib.metadata.version(name)}"


def run(*, quick: bool, repeats: int) -> SuiteReport:
    """Run the serve suite."""
    from benchmarks import serve_memory

    results, memory = measure(quick, repeats)
    loop = loop_name()
    http = http_implementation()
    uvicorn = importlib.metadata.version("uvicorn")
    plural = "s" if repeats > 1 else ""
    return SuiteReport(
        suite="serve",
        quick=quick,
        title=f"serve: actorflow serve over loopback HTTP, in a subprocess, "
        f"median of {repeats} run{plural}",
        notes=[
            f"http-send: accepted/s = sends answered 202 or 200 / wall seconds; 200s: those "
            f"answered 200 (their turn had already ended); {CONCURRENCY} concurrent "
            f"keep-alive connections from this process, {KEYS:,} Ping actors, a handler "
            f"that takes no step; durability=full; at most {SEND_LIMIT:g}s of sending",
            f"bare HTTP (the ceiling): the same load against a bare ASGI app answering 202 "
            f"under uvicorn {uvicorn} ({http}, {loop}), no journal; server and client cpu: "
            f"cores busy during the run ({os.cpu_count()} on this machine, shared by both)",
            f"sigterm-exit: seconds from SIGTERM to the process's exit with every agent "
            f"waiting on a durable timer mid-run (--grace {GRACE:g}); checkpointed from its "
            f"event=stopped-turns line; recovered from the restarted server's log",
            *time_limited(results),
        ],
        columns=COLUMNS,
        results=results,
        targets=targets(results),
        sections=[
            Section(
                "memory: the server's RSS (/proc/<pid>/status) with every actor in memory, "
                "then passivated",
                serve_memory.MEMORY_COLUMNS,
                [r for r in memory if r["scenario"] == "memory"],
                [
                    "KiB/active: (active - start) / actors in memory; KiB/passivated: "
                    "(passivated - start) / actors; returned: share of the growth given "
                    "back; passivated: once the RSS stopped falling",
                    "pymalloc is CPython's default; PYTHONMALLOC=malloc allocates from the "
                    "C heap, which the server trims once actors are passivated; again: after "
                    "as many more actors ran and were passivated",
                ],
            ),
            Section(
                "reads: lookups and listings on that server, everything passivated",
                serve_memory.READS_COLUMNS,
                [r for r in memory if r["scenario"] == "reads"],
                [
                    "invocation lookup: median of GETs; ratios to the newest invocation's "
                    "(1.0: flat, whatever the history)",
                    "list actors: every page of GET /v1/actors?limit=1000; journal pages: "
                    "every page of the history actor's journal (kept whole), with the "
                    "server's RSS growth meanwhile",
                ],
            ),
        ],
        environment={
            "sqlite": sqlite3.sqlite_version,
            "loop": loop,
            "http": http,
            "uvicorn": uvicorn,
            "repeats": repeats,
        },
    )


def time_limited(results: list[Result]) -> list[str]:
    """A warning line for each scenario the time limit cut short."""
    return [
        f"{r['scenario']}: stopped at the {SEND_LIMIT:g}s limit after {r['requests']:,} of "
        f"{r['sends']:,} sends"
        for r in results
        if r.get("stopped_by_time")
    ]
