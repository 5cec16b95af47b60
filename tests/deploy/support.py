"""Real `actorflow serve` processes for the deploy tests, and readers of what they leave.

`Servers` starts `actorflow serve tests.deploy.app` as subprocesses (stdout and stderr to a
file per process), each with the shared ledger and its generation number in its
environment; it kills and reaps whatever still runs when the test ends. `read_ledger`
reads the ledger the app writes (see `tests.deploy.app`), and `events` the lifecycle lines
of a server's log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.app import GENERATION_ENV, LEDGER_ENV, connect_ledger

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = "tests.deploy.app"
#: Longest a server may take to answer /readyz after it is started.
READY_TIMEOUT = 20.0
#: Longest a killed server may take to be reaped.
REAP_TIMEOUT = 10.0
#: Slack over the grace budget for a SIGTERM-to-exit measured from outside: the signal's
#: delivery, interpreter teardown, and this process noticing the exit.
EXIT_SLACK = 0.5
TERMINAL = ("completed", "failed", "cancelled")
#: Longest one long-polling request waits (clients time out a little after it).
WAIT_CHUNK = 10.0
CLIENT_TIMEOUT = WAIT_CHUNK + 5.0


def actorflow_command() -> str:
    """The installed `actorflow` script beside this interpreter (else on PATH)."""
    beside = Path(sys.executable).parent / "actorflow"
    if beside.exists():
        return str(beside)
    found = shutil.which("actorflow")
    if found is None:
        pytest.fail("the actorflow command is not installed next to this Python or on PATH")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(
    proc: subprocess.Popen[bytes], url: str, name: str, log_tail: Any, timeout: float
) -> None:
    """Return once ``url``/readyz answers 200; fail (with ``log_tail()``) if ``proc``
    exits first or it takes longer than ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=2.0) as client:
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"{name} exited with {proc.returncode} before it was ready:\n{log_tail()}",
                    pytrace=False,
                )
            with contextlib.suppress(httpx.TransportError):
                if client.get("/readyz").status_code == 200:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"{name} not ready within {timeout} s:\n{log_tail()}", pytrace=False)
            time.sleep(0.02)


@dataclasses.dataclass
class Exit:
    """How a server process ended: its return code, and seconds from the signal."""

    code: int
    seconds: float


class Server:
    """One `actorflow serve` process."""

    def __init__(
        self, workdir: Path, journal: Path, ledger: Path, port: int, grace: float, generation: int
    ) -> None:
        self.port = port
        self.grace = grace
        self.generation = generation
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / f"server-{generation}.log"
        env = dict(os.environ)
        env[LEDGER_ENV] = str(ledger)
        env[GENERATION_ENV] = str(generation)
        env.pop("ACTORFLOW_TOKEN", None)
        command = [
            actorflow_command(),
            "serve",
            APP,
            "--journal",
            str(journal),
            "--port",
            str(port),
            "--grace",
            str(grace),
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.signalled_at: float | None = None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Return once /readyz answers 200; fail if the process dies or takes too long."""
        wait_ready(
            self.proc, self.url, f"server generation {self.generation}", self.log_tail, timeout
        )

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum``; the first signal's time is what `wait_exit` measures from."""
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
        os.kill(self.proc.pid, signum)

    def wait_exit(self, timeout: float) -> Exit:
        """Wait for the process to end (failing past ``timeout``); how it ended."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"server generation {self.generation} still ran {timeout} s after "
                f"the signal (killed now):\n{self.log_tail()}",
                pytrace=False,
            )
        ended = time.monotonic()
        began = self.signalled_at if self.signalled_at is not None else ended
        return Exit(code, ended - began)

    def kill(self) -> None:
        """SIGKILL the process (if it still runs) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            if self.proc.poll() is None:
                self.proc.kill()
        self.proc.wait(REAP_TIMEOUT)

    def log(self) -> str:
        """Everything the process printed."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        """The end of what the process printed."""
        return self.log()[-chars:]

    def events(self, name: str) -> list[dict[str, str]]:
        """The fields of each ``event=<name>`` line in the log."""
        return events(self.log(), name)


def events(log: str, name: str) -> list[dict[str, str]]:
    """The ``key=value`` fields of every ``event=<name>`` line in ``log``."""
    found = []
    for line in log.splitlines():
        match = re.search(rf"\bevent={re.escape(name)}(?:\s|$)(.*)", line)
        if match:
            found.append(dict(re.findall(r"(\w+)=(\S+)", match.group(1))))
    return found


class Servers:
    """Starts servers on one journal and ledger; `close` kills and reaps every one."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.journal = workdir / "journal.db"
        self.ledger = workdir / "ledger.db"
        connect_ledger(str(self.ledger)).close()
        self.started: list[Server] = []

    def start(self, port: int, grace: float) -> Server:
        """Start the next generation of server on ``port`` and wait until it is ready."""
        server = Server(
            self.workdir, self.journal, self.ledger, port, grace, generation=len(self.started)
        )
        self.started.append(server)
        server.wait_ready()
        return server

    def logs(self) -> str:
        """The tail of every server's log, for failure messages."""
        return "\n".join(
            f"--- server generation {server.generation} ---\n{server.log_tail(2500)}"
            for server in self.started
        )

    def close(self) -> None:
        """Kill and reap every server still running."""
        for server in self.started:
            server.kill()


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[Servers]:
    """`Servers` in ``workdir``, every process killed and reaped on the way out."""
    pool = Servers(workdir)
    try:
        yield pool
    finally:
        pool.close()


# -- the ledger ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Applied:
    """A row of the ledger's deduplicated table."""

    key: str
    actor: str
    name: str
    step: int
    amount: int
    generation: int
    seq: int


@dataclasses.dataclass(frozen=True)
class Attempt:
    """A row of the ledger's table of every call."""

    seq: int
    key: str
    actor: str
    name: str
    step: int
    generation: int


def read_ledger(path: Path) -> tuple[list[Applied], list[Attempt]]:
    """Every applied effect and every call, in call order."""
    with contextlib.closing(sqlite3.connect(path, timeout=10.0)) as conn:
        applied = [
            Applied(*row)
            for row in conn.execute(
                "SELECT key, actor, name, step, amount, generation, seq FROM applied ORDER BY seq"
            )
        ]
        attempts = [
            Attempt(*row)
            for row in conn.execute(
                "SELECT seq, key, actor, name, step, generation FROM attempts ORDER BY seq"
            )
        ]
    return applied, attempts


# -- the HTTP API ------------------------------------------------------------------------------


def message_path(actor: str, handler: str) -> str:
    """Where messages for ``actor`` (``Type/key``) to ``handler`` are sent."""
    return f"/v1/actors/{actor}/messages/{handler}"


def invocation_path(invocation: str) -> str:
    """Where the invocation ``Type/key#hex`` is shown."""
    actor, _, tail = invocation.rpartition("#")
    return f"/v1/actors/{actor}/invocations/{tail}"


def send(
    client: httpx.Client,
    actor: str,
    handler: str,
    args: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    deadline: float | None = None,
) -> str:
    """Send a message that must be accepted; its invocation id."""
    headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
    params = {} if deadline is None else {"deadline": str(deadline)}
    response = client.post(message_path(actor, handler), json=args, headers=headers, params=params)
    assert response.status_code in (200, 202), (actor, handler, response.text)
    invocation: str = response.json()["invocation"]
    return invocation


def status(client: httpx.Client, invocation: str) -> dict[str, Any]:
    """The invocation's status right now."""
    response = client.get(invocation_path(invocation))
    assert response.status_code == 200, (invocation, response.text)
    body: dict[str, Any] = response.json()
    return body


def wait_for(client: httpx.Client, invocation: str, timeout: float) -> dict[str, Any]:
    """The invocation's status once it ended; fail past ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        wait = min(WAIT_CHUNK, max(0.0, left))
        response = client.get(invocation_path(invocation), params={"wait": f"{wait:.2f}"})
        assert response.status_code == 200, (invocation, response.text)
        body: dict[str, Any] = response.json()
        if body["state"] in TERMINAL:
            return body
        if time.monotonic() >= deadline:
            pytest.fail(f"{invocation} still {body['state']} after {timeout} s", pytrace=False)


def journal(client: httpx.Client, actor: str) -> list[dict[str, Any]]:
    """The actor's journal and inbox, as the API shows them."""
    response = client.get(f"/v1/actors/{actor}/journal")
    assert response.status_code == 200, (actor, response.text)
    entries: list[dict[str, Any]] = response.json()
    return entries


def journal_problems(entries: list[dict[str, Any]], actor: str, turns: int = 1) -> list[str]:
    """What is wrong with an actor's journal that should hold ``turns`` accepted messages,
    each one turn that ended, and no step twice."""
    problems = []
    kinds = [(entry["stream"], entry["type"]) for entry in entries]
    messages = kinds.count(("inbox", "message"))
    started = kinds.count(("actor", "turn"))
    ended = kinds.count(("actor", "turn_done")) + kinds.count(("actor", "turn_failed"))
    if (messages, started, ended) != (turns, turns, turns):
        problems.append(
            f"{actor}: {messages} accepted messages, {started} turns started, {ended} ended; "
            f"expected {turns} of each"
        )
    steps = [
        (entry["data"]["turn"], entry["data"]["step"])
        for entry in entries
        if entry["stream"] == "actor" and entry["type"] in ("step", "step_failed", "timer")
    ]
    doubled = sorted(step for step, count in Counter(steps).items() if count > 1)
    if doubled:
        problems.append(f"{actor}: steps journaled more than once: {doubled}")
    return problems


def effects_of(applied: list[Applied], actor: str) -> list[str]:
    """The names of the effects applied for ``actor``, in order (``effect`` steps as
    ``effect <step>``)."""
    return [
        f"{row.name} {row.step}" if row.name == "effect" else row.name
        for row in applied
        if row.actor == actor
    ]


def wait_for_ledger(path: Path, ready: dict[str, Any], timeout: float = 10.0) -> None:
    """Wait until, for each actor in ``ready``, the effects applied for it include every
    name in ``ready[actor]`` (a list of names, or an int: at least that many effects)."""
    deadline = time.monotonic() + timeout
    while True:
        applied, _ = read_ledger(path)
        lacking = {}
        for actor, wanted in ready.items():
            done = effects_of(applied, actor)
            short = len(done) < wanted if isinstance(wanted, int) else set(wanted) - set(done)
            if short:
                lacking[actor] = done
        if not lacking:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"the agents did not get far enough within {timeout} s: wanted {ready}, "
                f"have {lacking}",
                pytrace=False,
            )
        time.sleep(0.01)
