"""An outside ledger honouring idempotency keys: a small HTTP server on 127.0.0.1, on threads
of the test process, that the workers' steps call (see `tests.cluster.app.call_ledger`).

``POST /apply {"key", "actor", "step", "amount", "worker"}`` records the call as an
`Attempt` (every call, re-executions too) and applies the effect unless its key was applied
before; it answers the amount stored under the key (the first call's). The test reads
`Ledger.attempts` and `Ledger.applied` directly.

`Ledger.hold` makes the next call from one worker wait after its effect is applied and before
its answer is sent, until the test releases it: the test can then SIGKILL or SIGSTOP that
worker while one of its steps is certainly in flight (applied outside, not yet journaled).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

#: Longest a held call waits for its release (the test releases it long before).
HOLD_LIMIT = 60.0


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One call to the ledger: what it asked, who asked, when (Unix seconds), and whether it
    applied the effect (the first call with its key) or found it applied already."""

    key: str
    actor: str
    step: int
    amount: int
    worker: str
    at: float
    applied: bool


class Hold:
    """The next call from ``worker``, held between its effect and its answer."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.held = threading.Event()
        self.released = threading.Event()
        self.attempt: Attempt | None = None

    def wait_held(self, timeout: float) -> Attempt:
        """The held call, once it arrived; fail the test past ``timeout`` seconds."""
        if not self.held.wait(timeout):
            pytest.fail(f"no ledger call from {self.worker} within {timeout} s", pytrace=False)
        assert self.attempt is not None
        return self.attempt

    def release(self) -> None:
        """Send the held call's answer (to whoever still listens)."""
        self.released.set()


class Ledger:
    """The ledger's state and its HTTP server (`start`, `close`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.attempts: list[Attempt] = []
        self.applied: dict[str, Attempt] = {}
        self._holds: dict[str, Hold] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ledger", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        with self._lock:
            for hold in self._holds.values():
                hold.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10.0)

    def hold(self, worker: str) -> Hold:
        """Hold the next call from ``worker`` (see `Hold`)."""
        hold = Hold(worker)
        with self._lock:
            self._holds[worker] = hold
        return hold

    def apply(self, key: str, actor: str, step: int, amount: int, worker: str) -> int:
        """Record a call and apply it unless its key was; the amount stored under the key.
        Holds the call first if a `Hold` waits for its worker."""
        with self._lock:
            applied = key not in self.applied
            attempt = Attempt(key, actor, step, amount, worker, time.time(), applied)
            self.attempts.append(attempt)
            if applied:
                self.applied[key] = attempt
            stored = self.applied[key].amount
            hold = self._holds.pop(worker, None)
            self._changed.notify_all()
        if hold is not None:
            hold.attempt = attempt
            hold.held.set()
            hold.released.wait(HOLD_LIMIT)
        return stored

    def snapshot(self) -> tuple[list[Attempt], dict[str, Attempt]]:
        """Every call so far and the applied effects, copied."""
        with self._lock:
            return list(self.attempts), dict(self.applied)

    def wait_until(
        self,
        check: Callable[[list[Attempt]], bool],
        what: str,
        timeout: float,
        explain: Callable[[], str] = str,
    ) -> None:
        """Wait until ``check(attempts)`` holds; fail the test past ``timeout`` seconds
        (saying what ``explain()`` says)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not check(self.attempts):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(min(left, 0.5))
            else:
                return
        pytest.fail(f"timed out after {timeout} s waiting for {what}\n{explain()}", pytrace=False)


def _handler(ledger: Ledger) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/apply":
                self.send_error(404)
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            stored = ledger.apply(
                str(body["key"]),
                str(body["actor"]),
                int(body["step"]),
                int(body["amount"]),
                str(body["worker"]),
            )
            answer = json.dumps({"amount": stored}).encode()
            with contextlib.suppress(OSError):  # the caller may be dead by now
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per call would drown the test's output

    return Handler


@contextlib.contextmanager
def running_ledger() -> Iterator[Ledger]:
    """A started `Ledger`, closed on the way out."""
    ledger = Ledger()
    ledger.start()
    try:
        yield ledger
    finally:
        ledger.close()
