"""Real `actorflow serve tests.cluster.app --journal postgresql://...` worker processes, and
the PostgreSQL database they share.

`Fleet` starts workers (stdout and stderr to a file each) with the ledger's URL and their
worker id in their environment, keeps the list of workers a client may send to (`live_urls`,
read by the driver's thread), and kills and reaps whatever still runs when the test ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.app import LEDGER_ENV, WORKER_ENV
from tests.deploy.support import REPO_ROOT, actorflow_command, events, free_port, wait_ready
from tests.journal.postgres import PostgresServer

APP = "tests.cluster.app"
#: Longest a worker may take to answer /readyz after it is started.
READY_TIMEOUT = 30.0
#: Longest a killed worker may take to be reaped.
REAP_TIMEOUT = 10.0


@dataclasses.dataclass
class Postgres:
    """The session's PostgreSQL server and this test's database on it."""

    server: PostgresServer
    dsn: str

    def restart(self) -> None:
        """``pg_ctl restart -m immediate``: every connection is cut, nothing is shut down
        cleanly (the server recovers from its WAL)."""
        self.server.restart("immediate")


@dataclasses.dataclass
class Exit:
    """How a worker process ended: its return code, and seconds from the signal."""

    code: int
    seconds: float


class Worker:
    """One `actorflow serve` worker process."""

    def __init__(
        self,
        workdir: Path,
        journal: str,
        ledger_url: str,
        name: str,
        build_id: str,
        options: dict[str, str],
    ) -> None:
        self.name = name
        self.build_id = build_id
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"worker-{name}.log"
        self.grace = float(options.get("--grace", "25"))
        env = dict(os.environ)
        env.pop("ACTORFLOW_TOKEN", None)
        env.pop("ACTORFLOW_BUILD_ID", None)
        env[LEDGER_ENV] = ledger_url
        env[WORKER_ENV] = name
        command = [
            actorflow_command(), "serve", APP, "--journal", journal, "--port", str(self.port),
            "--worker-id", name, "--build-id", build_id,
        ]  # fmt: skip
        for option, value in options.items():
            command += [option, value]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.signalled_at: float | None = None
        #: When the process ended (monotonic), noted by a thread that waits for it.
        self.ended_at: float | None = None
        self._reaper = threading.Thread(target=self._reap, name=f"reap-{name}", daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        self.proc.wait()
        self.ended_at = time.monotonic()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Return once /readyz answers 200; fail if the process dies or takes too long."""
        wait_ready(self.proc, self.url, f"worker {self.name}", self.log_tail, timeout)

    def signal(self, signum: signal.Signals) -> float:
        """Send ``signum``; return when (monotonic). The first SIGTERM or SIGKILL is what
        `wait_exit` measures from."""
        at = time.monotonic()
        if self.signalled_at is None and signum in (signal.SIGTERM, signal.SIGKILL):
            self.signalled_at = at
        os.kill(self.proc.pid, signum)
        return at

    def stopped(self) -> bool:
        """Whether the process is stopped by a signal right now (state T in /proc)."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] in ("T", "t")

    def wait_exit(self, timeout: float) -> Exit:
        """Wait for the process to end (failing past ``timeout``); how it ended."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"worker {self.name} still ran {timeout} s after the signal (killed now):\n"
                f"{self.log_tail()}",
                pytrace=False,
            )
        self._reaper.join(REAP_TIMEOUT)
        ended = self.ended_at if self.ended_at is not None else time.monotonic()
        began = self.signalled_at if self.signalled_at is not None else ended
        return Exit(code, ended - began)

    def kill(self) -> None:
        """SIGKILL the process (if it still runs) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process dies all the same
                self.proc.kill()
        self.proc.wait(REAP_TIMEOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    def events(self, name: str) -> list[dict[str, str]]:
        """The fields of each ``event=<name>`` line in the log."""
        return events(self.log(), name)


class Fleet:
    """Starts workers on one journal and ledger; `close` kills and reaps every one."""

    def __init__(self, workdir: Path, journal: str, ledger_url: str, **options: object) -> None:
        self.workdir = workdir
        self.journal = journal
        self.ledger_url = ledger_url
        self.options = {f"--{name.replace('_', '-')}": str(v) for name, v in options.items()}
        self.started: list[Worker] = []
        self._lock = threading.Lock()
        self._live: list[Worker] = []

    def spawn(self, name: str, build_id: str) -> Worker:
        """Start a worker (without waiting for it); it is not live for clients yet."""
        worker = Worker(self.workdir, self.journal, self.ledger_url, name, build_id, self.options)
        self.started.append(worker)
        return worker

    def start(self, *names: str, build_id: str) -> list[Worker]:
        """Start workers together, wait until each is ready, and make them live."""
        workers = [self.spawn(name, build_id) for name in names]
        for worker in workers:
            worker.wait_ready()
            self.add(worker)
        return workers

    def add(self, worker: Worker) -> None:
        """Clients may send to ``worker``."""
        with self._lock:
            if worker not in self._live:
                self._live.append(worker)

    def remove(self, worker: Worker) -> None:
        """Clients stop sending to ``worker`` (as a load balancer would)."""
        with self._lock:
            if worker in self._live:
                self._live.remove(worker)

    def live_urls(self) -> list[str]:
        with self._lock:
            return [worker.url for worker in self._live]

    def running(self) -> list[Worker]:
        return [worker for worker in self.started if worker.proc.poll() is None]

    def logs(self, chars: int = 2500) -> str:
        """The tail of every worker's log, for failure messages."""
        return "\n".join(
            f"--- worker {worker.name} ({worker.build_id}) ---\n{worker.log_tail(chars)}"
            for worker in self.started
        )

    def close(self) -> None:
        for worker in self.started:
            worker.kill()


@contextlib.contextmanager
def fleet(workdir: Path, journal: str, ledger_url: str, **options: object) -> Iterator[Fleet]:
    """A `Fleet`, every process killed and reaped on the way out."""
    started = Fleet(workdir, journal, ledger_url, **options)
    try:
        yield started
    finally:
        started.close()
