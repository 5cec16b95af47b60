"""Real `actorflow` processes for the server tests: `actorflow serve` of the test app on a
free loopback port, and CLI commands run against it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx

ROOT = pathlib.Path(__file__).resolve().parents[2]
ACTORFLOW = str(pathlib.Path(sys.executable).parent / "actorflow")
APP = "tests.server.app_under_test"
#: The grace budget the servers here run with.
GRACE = 3.0
#: Longest a server may take to be ready (or live) after it is started, and a poll to
#: see what it waits for.
START_DEADLINE = 20.0
#: Longest one CLI command may run.
COMMAND_DEADLINE = 30.0


def free_port() -> int:
    """A loopback port nothing listens on (bound once by the OS, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment, without actorflow settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORFLOW_")}
    return env | extra


@dataclasses.dataclass
class Server:
    """A running `actorflow serve` process."""

    process: subprocess.Popen[bytes]
    url: str
    log: pathlib.Path

    def stop(self, signum: signal.Signals = signal.SIGTERM) -> int:
        """Send ``signum`` and wait for it to exit; its exit code."""
        self.process.send_signal(signum)
        return self.process.wait(timeout=GRACE + 10)

    def logged(self) -> str:
        """What it wrote to stderr so far."""
        return self.log.read_text()


def _wait_until_answered(server: Server, path: str, token: str | None) -> None:
    """Return once ``path`` answers 200; fail if the server exits or takes too long."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    give_up = time.monotonic() + START_DEADLINE
    while time.monotonic() < give_up:
        if server.process.poll() is not None:
            raise AssertionError(f"actorflow serve exited early:\n{server.logged()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}{path}", headers=headers, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"actorflow serve did not answer {path} in time:\n{server.logged()}")


@contextlib.contextmanager
def served(
    workdir: pathlib.Path,
    *options: str,
    env: dict[str, str] | None = None,
    until: str = "/readyz",
    preexec_fn: Callable[[], None] | None = None,
    journal: str | None = None,
    port: int | None = None,
    app: str = APP,
) -> Iterator[Server]:
    """`actorflow serve` of the test app on a free loopback port, with the journal
    ``workdir/journal.db``, once ``until`` answers 200 (by default once it is ready: it
    answers /livez before); killed if still running at the end. ``preexec_fn`` runs in
    the child before it starts (to lower a resource limit, say); ``journal`` replaces the
    journal (a ``postgresql://`` URL, say); ``port`` the port (a restart on the same
    one), ``app`` the app served."""
    env = env or clean_env()
    port = port or free_port()
    log = workdir / f"serve-{port}.log"
    command = [ACTORFLOW, "serve", app, "--port", str(port), "--grace", str(GRACE)]
    command += ["--journal", journal or str(workdir / "journal.db"), *options]
    with open(workdir / f"serve-{port}.out", "wb") as out, open(log, "wb") as err:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=err, env=env, preexec_fn=preexec_fn
        )
        server = Server(process, f"http://127.0.0.1:{port}", log)
        try:
            _wait_until_answered(server, until, env.get("ACTORFLOW_TOKEN"))
            yield server
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: pathlib.Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run an `actorflow` command to its end; its exit code and output."""
    return subprocess.run(
        [ACTORFLOW, *args],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_DEADLINE,
        check=False,
    )
