"""The cluster suite's workers: ``actorflow serve`` processes on one PostgreSQL journal, the
load that feeds them over HTTP, and what the suite reads from the database directly.

Every worker is a subprocess (``actorflow serve benchmarks.cluster_app --journal
postgresql://...``) on a loopback port of its own, with a worker id, a capacity and a lease
TTL; it logs to a file in the run's folder. Every wait is bounded; every process started
here is killed and reaped whatever happens.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from benchmarks.serve import (
    HOST,
    REQUEST_TIMEOUT,
    Connection,
    ServeBenchmarkError,
    Served,
    actorflow_command,
    free_port,
    wait_alive,
)

APP = "benchmarks.cluster_app"
ROOT = Path(__file__).resolve().parents[1]
#: The workers' --grace: SIGTERM to exit must fit well inside it.
GRACE = 25.0
#: Seconds a worker may take to exit after SIGTERM before it is killed (a hang).
EXIT_LIMIT = GRACE + 10.0
#: Concurrent keep-alive connections of the load generator, spread over the workers.
CONCURRENCY = 32
#: How often the suite polls the database while it waits for work to be done.
POLL_EVERY = 0.02


class ClusterBenchmarkError(ServeBenchmarkError):
    """The workers failed or hung under the benchmark: a bug to report, not a figure."""


class Worker(Served):
    """A worker process, answering on ``url``, logging to ``log``."""

    def fail(self, problem: str) -> ClusterBenchmarkError:
        """An error saying what went wrong, with the end of the worker's log."""
        tail = "\n".join(f"    {line}" for line in self.log_text().splitlines()[-15:])
        return ClusterBenchmarkError(
            f"{self.name} misbehaved: {problem}\n  its command: {' '.join(self.command)}"
            f"\n  the end of its log ({self.log}):\n{tail or '    (empty)'}\n  reproduce with "
            f"`python -m benchmarks cluster --quick`"
        )


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    """How each worker of a run is started."""

    dsn: str
    capacity: int
    lease_ttl: float
    #: Environment added to each worker's (the step log's directory, say).
    env: dict[str, str] = dataclasses.field(default_factory=dict)


def worker_command(options: WorkerOptions, worker_id: str, port: int) -> list[str]:
    """``actorflow serve`` for one worker, with the settings measured."""
    return [
        *actorflow_command(),
        "serve",
        APP,
        f"--journal={options.dsn}",
        f"--host={HOST}",
        f"--port={port}",
        f"--worker-id={worker_id}",
        f"--capacity={options.capacity}",
        f"--lease-ttl={options.lease_ttl:g}",
        f"--grace={GRACE:g}",
        "--log-level=info",
    ]


def launch(options: WorkerOptions, worker_id: str, folder: Path) -> Worker:
    """Start one worker (not waiting for it to be ready)."""
    port = free_port()
    command = worker_command(options, worker_id, port)
    environment = {k: v for k, v in os.environ.items() if k != "ACTORFLOW_TOKEN"}
    environment |= options.env
    log = folder / f"{worker_id}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=environment
        )
    url = f"http://{HOST}:{port}"
    return Worker(f"worker {worker_id}", command, proc, port, url, log, time.perf_counter())


@contextlib.contextmanager
def workers(
    options: WorkerOptions, count: int, folder: Path, first: int = 1
) -> Iterator[list[Worker]]:
    """``count`` workers started together, each ready (``/readyz`` 200) when yielded; every
    one still running is killed and reaped afterwards, whatever happened."""
    started: list[Worker] = []
    try:
        for n in range(first, first + count):
            started.append(launch(options, f"w{n}", folder))
        for worker in started:
            wait_alive(worker, "/readyz")
        yield started
    finally:
        for worker in started:
            if worker.proc.poll() is None:
                worker.proc.kill()
            worker.proc.wait()


def signal_and_wait(worker: Worker, signum: int) -> tuple[float, int]:
    """Send ``signum``; return the wall-clock time it was sent and the exit code. A worker
    still running `EXIT_LIMIT` seconds later is killed, and that fails the suite."""
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        worker.proc.kill()

    watchdog = threading.Timer(EXIT_LIMIT, kill)
    watchdog.daemon = True
    sent = time.time()
    worker.proc.send_signal(signum)
    watchdog.start()
    try:
        code = worker.proc.wait()
    finally:
        watchdog.cancel()
    if killed.is_set():
        raise worker.fail(f"it had not exited {EXIT_LIMIT:g}s after signal {signum} (killed)")
    return sent, code


def stop_all(running: Sequence[Worker]) -> None:
    """SIGTERM every worker at once; each must exit 0 within `EXIT_LIMIT` seconds."""
    for worker in running:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
    give_up = time.perf_counter() + EXIT_LIMIT
    for worker in running:
        try:
            code = worker.proc.wait(timeout=max(0.0, give_up - time.perf_counter()))
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()
            raise worker.fail(f"it had not exited {EXIT_LIMIT:g}s after SIGTERM (killed)") from None
        if code != 0:
            raise worker.fail(f"it exited with code {code} after SIGTERM, expected 0")


# -- the load -------------------------------------------------------------------------------


def walker_path(key: str, handler: str) -> str:
    """Where a message to the `Walker` ``key``'s ``handler`` is posted."""
    return f"/v1/actors/Walker/{key}/messages/{handler}"


def agent_key(i: int) -> str:
    """The ``i``-th agent's key."""
    return f"agent-{i:04d}"


async def send_all(ports: Sequence[int], requests: Sequence[tuple[str, bytes]]) -> None:
    """POST every ``(path, body)`` in ``requests``, over `CONCURRENCY` keep-alive
    connections spread evenly over the workers at ``ports`` (any worker accepts any
    message); each must be answered 202 (accepted, durably)."""
    statuses: collections.Counter[int] = collections.Counter()
    failures: collections.Counter[str] = collections.Counter()
    queue = list(reversed(requests))
    connections = [Connection(HOST, ports[i % len(ports)]) for i in range(CONCURRENCY)]

    async def sender(connection: Connection) -> None:
        while queue:
            path, body = queue.pop()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    statuses[await connection.post(path, body)] += 1
            except (OSError, EOFError, ValueError, TimeoutError) as exc:
                failures[type(exc).__name__] += 1
                connection.close()

    try:
        async with asyncio.TaskGroup() as group:
            for connection in connections:
                group.create_task(sender(connection))
    finally:
        for connection in connections:
            connection.close()
    if statuses[202] != len(requests):
        raise ClusterBenchmarkError(
            f"{statuses[202]:,} of {len(requests):,} messages were answered 202: answers "
            f"{dict(statuses)}, failures {dict(failures) or 'none'}"
        )


async def results(urls: Sequence[str], keys: Sequence[str]) -> dict[str, Any]:
    """The result of each agent's latest invocation (which must have completed), asked of
    the workers in turn: ``{key: result}``."""
    found: dict[str, Any] = {}
    limits = httpx.Limits(max_connections=16)
    clients = [
        httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT, limits=limits) for url in urls
    ]
    gate = asyncio.Semaphore(16)

    async def one(i: int, key: str) -> None:
        async with gate:
            answer = await clients[i % len(clients)].get(
                f"/v1/actors/Walker/{key}/invocations?limit=1"
            )
        if answer.status_code != 200:
            raise ClusterBenchmarkError(f"GET {key}'s invocations: {answer.status_code}")
        page = answer.json()
        items = page["items"] if isinstance(page, dict) else page
        if not items or items[0]["state"] != "completed":
            raise ClusterBenchmarkError(f"{key}'s latest invocation did not complete: {items}")
        found[key] = items[0]["result"]

    try:
        async with asyncio.TaskGroup() as group:
            for i, key in enumerate(keys):
                group.create_task(one(i, key))
    finally:
        for client in clients:
            await client.aclose()
    return found


# -- the database ---------------------------------------------------------------------------


async def finished(conn: Any, prefix: str) -> int:
    """How many actors under ``prefix`` (``Walker/``) have an outcome journaled."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM journal_streams WHERE starts_with(name, $1) AND last_position > 0",
        f"outcomes/{prefix}",
    )
    return count


async def wait_until(
    what: str, check: Callable[[], Any], limit: float, running: Sequence[Worker]
) -> float:
    """Poll ``check`` (awaited) every `POLL_EVERY` seconds until it is true; the
    ``time.perf_counter()`` at which it was seen true. Fails after ``limit`` seconds, or as
    soon as a worker of ``running`` exits."""
    give_up = time.perf_counter() + limit
    while True:
        if await check():
            return time.perf_counter()
        for worker in running:
            if worker.proc.poll() is not None:
                raise worker.fail(f"{what}: it exited with code {worker.proc.returncode}")
        if time.perf_counter() > give_up:
            tail = running[0].fail(f"{what}: not done after {limit:g}s") if running else None
            raise tail or ClusterBenchmarkError(f"{what}: not done after {limit:g}s")
        await asyncio.sleep(POLL_EVERY)


def process_cpu(pid: int) -> float:
    """CPU seconds process ``pid`` used so far (all threads; 0 where /proc cannot tell)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()  # fields from the 3rd (state) on
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(data: Path) -> float:
    """CPU seconds the PostgreSQL server whose data directory is ``data`` used so far: its
    postmaster's and every live child's (backends, WAL writer, checkpointer)."""
    try:
        postmaster = int((data / "postmaster.pid").read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = process_cpu(postmaster)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="ascii").rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            total += process_cpu(int(stat.parent.name))
    return total


@contextlib.asynccontextmanager
async def connected(dsn: str) -> Any:
    """One asyncpg connection to ``dsn``, closed afterwards."""
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()
