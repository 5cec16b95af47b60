"""Nothing a client does with connections exhausts `actorflow serve`: a real server, with a
low open-file limit, under a bounded slow-header attack from this process (sockets that
send part of a request line and headers, then stall or trickle a byte at a time), keeps
answering /livez, and closes the stalled connections once their head deadline passes.

Everything talks to 127.0.0.1. The attack is bounded in sockets (`ATTACK`) and in time;
every socket is closed at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import pathlib
import resource
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.server.processes import Server, cli, free_port, served

#: The server's open-file limit: low, so that the attack exceeds it (as 2,000 connections
#: exceed the usual 1,024).
SERVER_FILES = 256
#: Sockets the attack holds: more than the server has file descriptors.
ATTACK = 300
#: The server's --header-timeout.
HEADER_TIMEOUT = 3.0
#: How long a /livez probe may wait for its answer: less than the head deadline, so a
#: probe answered only once the attack's connections time out fails.
PROBE_WAIT = 2.0
#: How long after the head deadline every stalled connection must be closed by.
CLOSE_MARGIN = 5.0
#: How long after --keep-alive 1 an idle connection must be closed by.
KEEP_ALIVE_MARGIN = 2.5
#: The partial request each attacking socket sends: no blank line ends its head.
PARTIAL = b"GET /v1/actors HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (SERVER_FILES, SERVER_FILES))


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[Server]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < ATTACK + 200:
        if hard != resource.RLIM_INFINITY and hard < ATTACK + 200:
            pytest.skip(f"this test opens {ATTACK} sockets; the open-file limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (ATTACK + 200, hard))
    options = ("--header-timeout", str(HEADER_TIMEOUT), "--keep-alive", "1")
    with served(tmp_path, *options, preexec_fn=_limit_files) as running:
        yield running


@contextlib.contextmanager
def attacking(url: str) -> Iterator[list[socket.socket]]:
    """`ATTACK` sockets connected to the server, each having sent `PARTIAL`; all closed
    at the end."""
    host, port = url.removeprefix("http://").split(":")
    sockets: list[socket.socket] = []
    try:
        for _ in range(ATTACK):
            sock = socket.create_connection((host, int(port)), timeout=5)
            sockets.append(sock)
            with contextlib.suppress(OSError):  # already closed to make room: fine
                sock.sendall(PARTIAL)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def trickle(sockets: list[socket.socket]) -> None:
    """One more header byte on each socket still open."""
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.send(b"x")


def closed_by_server(sock: socket.socket) -> bytes | None:
    """What the server sent before closing ``sock``; None while it is still open."""
    sock.setblocking(False)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return None
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def test_livez_answers_during_a_slow_header_attack_and_stalled_heads_are_closed(
    server: Server,
) -> None:
    with attacking(server.url) as sockets:
        trickling = sockets[::2]
        for _ in range(3):
            trickle(trickling)
            answer = httpx.get(f"{server.url}/livez", timeout=PROBE_WAIT)
            assert answer.status_code == 200
            assert answer.json() == {"status": "alive"}

        open_until = time.monotonic() + HEADER_TIMEOUT + CLOSE_MARGIN
        answers: dict[int, bytes] = {}
        while len(answers) < len(sockets) and time.monotonic() < open_until:
            trickle(trickling)
            ready, _, _ = select.select(
                [s for i, s in enumerate(sockets) if i not in answers], [], [], 0.2
            )
            for sock in ready:
                said = closed_by_server(sock)
                if said is not None:
                    answers[sockets.index(sock)] = said
        assert len(answers) == len(sockets), (
            f"{len(sockets) - len(answers)} of {len(sockets)} stalled connections were still "
            f"open {HEADER_TIMEOUT + CLOSE_MARGIN:g} s after the attack began"
        )

    kinds = {said.split(b"\r\n", 1)[0] for said in answers.values()}
    # Those closed to make room for newer ones get 503 (or nothing, if the server had not
    # read their bytes yet); the rest time out with 408.
    assert kinds <= {b"HTTP/1.1 503 Service Unavailable", b"HTTP/1.1 408 Request Timeout", b""}
    assert b"HTTP/1.1 408 Request Timeout" in kinds
    timed_out = next(s for s in answers.values() if s.startswith(b"HTTP/1.1 408"))
    assert b'"type":"request_timeout"' in timed_out
    assert b"--header-timeout" in timed_out
    assert httpx.get(f"{server.url}/readyz", timeout=PROBE_WAIT).status_code == 200
    assert "event=connections-closed" in server.logged()


def test_an_idle_keep_alive_connection_is_closed_silently(server: Server) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(1 + KEEP_ALIVE_MARGIN)  # under uvicorn's default of 5 s
        received = b""
        while chunk := sock.recv(65536):  # the answer, then the close after --keep-alive 1
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK")
    assert received.endswith(b'{"status":"alive"}')


def test_more_connections_than_the_open_file_limit_allows_are_refused_at_start(
    tmp_path: pathlib.Path,
) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    journal = tmp_path / "journal.db"
    port = str(free_port())
    done = cli(
        "serve", "tests.server.app_under_test", "--port", port, "--journal", str(journal),
        "--max-connections", str(soft),
    )  # fmt: skip
    assert done.returncode == 1
    assert f"--max-connections {soft} does not fit the open-file limit of {soft}" in done.stderr
    assert "ulimit -n" in done.stderr
    assert not journal.exists()
