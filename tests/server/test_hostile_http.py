"""Hostile requests over a real socket to a real `actorflow serve`: what an in-process
ASGI client cannot send (ambiguous framing, paths with dot segments, raw Host headers)
goes through uvicorn's own parsing here. Each is a clear 4xx and nothing is journaled."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server.processes import Server, served

#: Seconds a socket read may take before the test fails instead of hanging.
READ_TIMEOUT = 10.0
RECORD_LIMIT = 16384


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module: bodies up to 200 kB, journal records up to 16 kB (and
    large values off, so that the record limit applies to arguments and events)."""
    options = ("--max-body-bytes", "200000", "--max-record-bytes", str(RECORD_LIMIT))
    options += ("--value-threshold", "off")
    with served(tmp_path_factory.mktemp("hostile"), *options) as running:
        yield running
        assert running.stop() == 0


def port_of(server: Server) -> int:
    return int(server.url.rpartition(":")[2])


def journaled(server: Server, actor: str) -> list[Any]:
    """``actor``'s journal entries, read through the API."""
    response = httpx.get(f"{server.url}/v1/actors/{actor}/journal")
    assert response.status_code == 200, response.text
    entries: list[Any] = response.json()
    return entries


def exchange(server: Server, raw: bytes) -> bytes:
    """Send ``raw`` bytes on one connection; everything the server answers before it
    closes the connection (or stops answering)."""
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=READ_TIMEOUT) as sock:
        sock.sendall(raw)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            answer += b"<still open>"
    return answer


def request(
    server: Server, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], Any]:
    """One request sent as written (no path normalisation); status, headers, JSON body."""
    connection = http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=READ_TIMEOUT)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body:  # (unframed, the body would be read as the next request)
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        answer = response.read()
        return response.status, dict(response.getheaders()), json.loads(answer)
    finally:
        connection.close()


def host(server: Server) -> str:
    return f"127.0.0.1:{port_of(server)}"


def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(
    server: Server,
) -> None:
    body = b'{"name": "smuggler"}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    smuggled = (
        b"POST /v1/actors/Greeter/smuggled/messages/greet HTTP/1.1\r\n"
        b"Host: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (host(server).encode(), len(body), body)
    )
    head = (
        b"POST /v1/actors/Greeter/framing/messages/greet HTTP/1.1\r\nHost: %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" % host(server).encode()
    )
    answer = exchange(server, head + chunked + smuggled)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # the request behind it is not read
    assert b"\r\nconnection: close\r\n" in answer.lower(), answer
    assert b'"type":"ambiguous_framing"' in answer
    assert b"Content-Length and Transfer-Encoding" in answer
    assert not answer.endswith(b"<still open>")
    assert journaled(server, "Greeter/framing") == []
    assert journaled(server, "Greeter/smuggled") == []


def test_the_server_parses_http_with_httptools() -> None:
    # (the premise of the figures in docs/cluster-benchmark.md; h11 is uvicorn's fallback)
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    assert AutoHTTPProtocol.__name__ == "HttpToolsProtocol"


@pytest.mark.parametrize("trickled", [False, True])
def test_a_request_head_over_16_kib_is_refused_and_the_connection_closed(
    server: Server, trickled: bool
) -> None:
    line = b"POST /v1/actors/Greeter/big-head/messages/greet HTTP/1.1\r\nHost: %s\r\n" % (
        host(server).encode()
    )
    padding = b"X-Padding: %s\r\n" % (b"p" * 1000)
    # One byte over 16 KiB, and no end of head: the server can only refuse it once it has
    # read every byte sent (a byte arriving after it closed would reset the connection,
    # and the answer with it).
    head = (line + padding * 17)[: 16 * 1024 + 1]
    if trickled:
        with socket.create_connection(("127.0.0.1", port_of(server)), timeout=READ_TIMEOUT) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for start in range(0, len(head), 1000):  # (separate segments, read in pieces)
                sock.sendall(head[start : start + 1000])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    else:
        answer = exchange(server, head)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"\r\nconnection: close\r\n" in answer.lower(), answer
    assert not answer.endswith(b"<still open>")
    assert journaled(server, "Greeter/big-head") == []


def test_a_request_head_under_16_kib_is_served(server: Server) -> None:
    body = b'{"name": "padded"}'
    head = (
        b"POST /v1/actors/Greeter/padded/messages/greet HTTP/1.1\r\nHost: %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n"
        % (host(server).encode(), len(body))
    )
    head += b"X-Padding: %s\r\n" % (b"p" * 1000) * 14 + b"\r\n"
    assert len(head) < 16 * 1024
    answer = exchange(server, head + body)
    assert answer.startswith(b"HTTP/1.1 202 "), answer


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/actors/Greeter/./messages/greet"),
        ("POST", "/v1/actors/Greeter/../messages/greet"),
        ("GET", "/v1/actors/Greeter/../journal"),
        ("GET", "/v1/actors/Greeter/."),
        ("POST", "/v1/actors/Approval/../events/decision"),
    ],
)
def test_dot_keys_sent_as_written_are_400(server: Server, method: str, path: str) -> None:
    body = b'{"name": "dots"}' if method == "POST" else b""
    headers = {"Host": host(server), "Content-Type": "application/json"}
    status, _, answer = request(server, method, path, headers, body)
    assert (status, answer["error"]["type"]) == (400, "invalid_message"), answer
    assert "other than '.' and '..'" in answer["error"]["message"]
    listed = httpx.get(f"{server.url}/v1/actors").json()
    assert [actor["actor"] for actor in listed if "/." in actor["actor"]] == []


def test_a_trailing_slash_is_404_without_a_location(server: Server) -> None:
    status, headers, answer = request(server, "GET", "/v1/actors/", {"Host": host(server)})
    assert (status, answer["error"]["type"]) == (404, "not_found")
    assert "location" not in {name.lower() for name in headers}
    foreign = {"Host": "evil.example"}  # it used to redirect there
    status, headers, answer = request(server, "GET", "/v1/actors/", foreign)
    assert (status, answer["error"]["type"]) == (421, "host_not_allowed")
    assert "location" not in {name.lower() for name in headers}


def test_arguments_over_the_record_limit_are_413_under_a_larger_body_limit(
    server: Server,
) -> None:
    url = f"{server.url}/v1/actors/Greeter/big/messages/greet"
    too_large = httpx.post(url, json={"name": "x" * (RECORD_LIMIT + 1000)})
    assert too_large.status_code == 413, too_large.text
    error = too_large.json()["error"]
    assert error["type"] == "message_too_large"
    assert f"record limit of {RECORD_LIMIT:,} bytes" in error["message"]
    assert "--max-record-bytes" in error["message"]
    event = httpx.post(
        f"{server.url}/v1/actors/Approval/big/events/decision", json={"x": "y" * RECORD_LIMIT}
    )
    assert (event.status_code, event.json()["error"]["type"]) == (413, "message_too_large")
    assert journaled(server, "Greeter/big") == []
    assert journaled(server, "Approval/big") == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/actors/Greeter/n/messages/greet", b'{"name": "a", "times": 18446744073709551616}'),
        ("/v1/actors/Approval/n/events/decision", b"[" * 100_000 + b"]" * 100_000),
    ],
    ids=["integer-beyond-64-bits", "nested-100000-levels"],
)
def test_bodies_that_used_to_be_500_are_400(server: Server, path: str, body: bytes) -> None:
    response = httpx.post(
        f"{server.url}{path}", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_message"
    assert journaled(server, path.split("/")[3] + "/n") == []
