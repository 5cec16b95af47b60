"""Every request of the clients and the CLI has a timeout: against a server that accepts
connections and never answers (a bare listening socket on loopback), they give up with a
message naming the server and the time, instead of hanging."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from actorflow import Client, SyncClient
from actorflow._client import RequestTimeout
from tests.server.processes import clean_env, cli

#: Longest any test here may take: far below the clients' default timeouts (30 and 60 s),
#: so a timeout that is not applied fails the test instead of passing slowly.
BOUND = 15


@pytest.fixture
def silent() -> Iterator[str]:
    """The URL of a socket that accepts connections (the kernel does) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def one_line(stderr: str) -> str:
    """The command's error: one line, no traceback."""
    assert "Traceback" not in stderr
    [line] = stderr.strip().splitlines()
    return line


@pytest.mark.timeout(BOUND)
def test_a_cli_command_gives_up_after_its_timeout_saying_what_to_do(silent: str) -> None:
    done = cli("status", "Greeter/a", "--url", silent, "--timeout", "0.3")
    assert done.returncode == 1
    assert one_line(done.stderr) == (
        f"Error: the server at {silent} did not answer GET /v1/actors/Greeter/a within 0.3 s; "
        f"is it overloaded or stopped? If it needs longer, raise --timeout (or "
        f"ACTORFLOW_TIMEOUT)."
    )
    assert done.stdout == ""


@pytest.mark.timeout(BOUND)
def test_a_cli_command_that_waits_gets_its_wait_plus_the_timeout(silent: str) -> None:
    done = cli(
        "send", "Greeter/a", "greet", '{"name": "a"}', "--wait", "0.5", "--url", silent,
        env=clean_env(ACTORFLOW_TIMEOUT="0.25"),
    )  # fmt: skip
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert re.search(
        r"did not answer POST /v1/actors/Greeter/a/messages/greet within 0\.75 s "
        r"\(--wait 0\.5 \+ --timeout 0\.25\)",
        line,
    ), line
    assert "resend it with the same --idempotency-key" in line


def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error() -> None:
    done = cli("list", "--timeout", "0")
    assert done.returncode == 2
    assert "Invalid value for '--timeout': 0.0 is not in the range x>0" in done.stderr


@pytest.mark.timeout(BOUND)
def test_the_sync_client_raises_timeout_error_after_its_timeout(silent: str) -> None:
    with SyncClient(silent, timeout=0.2) as client:
        with pytest.raises(TimeoutError) as failure:
            client.status("Greeter/a")
        assert str(failure.value) == (
            f"the server at {silent} did not answer GET /v1/actors/Greeter/a within 0.2 s; "
            f"is it overloaded or stopped? Give the client a larger timeout= if it needs longer"
        )
        with pytest.raises(RequestTimeout) as waited:
            client.invocation("Greeter/a#00", wait=0.3)
        assert (waited.value.seconds, waited.value.wait) == (pytest.approx(0.5), 0.3)
        assert waited.value.url == silent


#: The status a slow server answers with, after `SLOW` seconds.
ANSWER = b'{"invocation": "Greeter/a#00", "actor": "Greeter/a", "state": "completed"}'
SLOW = 1.5


def answer_late(sock: socket.socket) -> None:
    """Answer one request on ``sock``, `SLOW` seconds after it has arrived: a server busy
    waiting for a result, as a request with ?wait= asks it to."""
    conn, _ = sock.accept()
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                return
            request += chunk
        time.sleep(SLOW)  # the server's work, not a race: the client must wait it out
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(ANSWER)}\r\nConnection: close\r\n\r\n"
        )
        conn.sendall(head.encode() + ANSWER)


@pytest.mark.timeout(BOUND)
def test_a_request_that_waits_is_given_its_wait_on_top_of_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        sock.settimeout(BOUND)
        server = threading.Thread(target=answer_late, args=(sock,), daemon=True)
        server.start()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        # A timeout well under the server's delay, a wait well over it.
        with SyncClient(url, timeout=SLOW / 5) as client:
            status = client.invocation("Greeter/a#00", wait=SLOW * 5)
        server.join(BOUND)
    assert status.state == "completed"


@pytest.mark.anyio
async def test_the_async_client_raises_timeout_error_after_its_timeout(silent: str) -> None:
    async with Client(silent, timeout=0.2) as client:
        with pytest.raises(TimeoutError, match=f"the server at {silent} did not answer POST"):
            await client.send("Greeter/a", "greet", {"name": "a"})
        with pytest.raises(RequestTimeout) as waited:
            await client.send("Greeter/a", "greet", {"name": "a"}, wait=0.3)
        assert (waited.value.seconds, waited.value.wait) == (pytest.approx(0.5), 0.3)


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan")])
def test_a_client_timeout_must_be_a_positive_number(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout= takes a number of seconds > 0"):
        SyncClient(timeout=timeout)
    with pytest.raises(ValueError, match="timeout= takes a number of seconds > 0"):
        Client(timeout=timeout)
