"""Browsers cannot drive the API: the requests a web page can make its visitor's browser
send to ``http://127.0.0.1:PORT`` (a cross-site form or fetch, and the same through DNS
rebinding) are sent here exactly, over real HTTP to a real `actorflow serve`, and refused
with nothing journaled; the clients and the CLI, which send JSON and the right Host, work."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from actorflow import SyncClient
from actorflow.server._guard import HostRule, parse_origin, served_hosts, split_host
from tests.server.processes import Server, cli, free_port, served

CONSOLE = "http://console.example:3000"
EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module, allowing one console origin and one more host name."""
    options = ("--allowed-origin", CONSOLE, "--allowed-host", "agents.internal")
    with served(tmp_path_factory.mktemp("browser"), *options) as running:
        yield running
        assert running.stop() == 0


def port_of(server: Server) -> str:
    return server.url.rpartition(":")[2]


def nothing_journaled(server: Server, actor: str) -> None:
    """``actor`` has no journal and is not listed."""
    with SyncClient(server.url) as client:
        assert client.journal(actor) == []
        assert actor not in [status.actor for status in client.list_actors()]


def forged(server: Server, actor: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    """POST ``body`` to ``actor``'s greet handler with exactly ``headers`` (as a browser
    would send them), to the server's loopback address."""
    return httpx.post(
        f"{server.url}/v1/actors/{actor}/messages/greet", content=body, headers=headers
    )


NAME = b'{"name": "victim"}'


def browser(server: Server, **headers: str) -> dict[str, str]:
    """Headers a browser adds to a page's request (``Host`` the page's idea of it)."""
    base = {
        "Host": f"127.0.0.1:{port_of(server)}",
        "User-Agent": "Mozilla/5.0",
        "Accept": "*/*",
        "Sec-Fetch-Mode": "no-cors",
        "Sec-Fetch-Site": "cross-site",
    }
    return base | headers


#: The forgeries: (headers beyond `browser`'s, body, expected status, expected type).
FORGERIES: list[Any] = [
    pytest.param(
        {"Origin": EVIL, "Content-Type": "text/plain;charset=UTF-8"}, NAME, 403,
        "origin_not_allowed", id="cross-site-fetch-text-plain",
    ),
    pytest.param(
        {"Content-Type": "text/plain;charset=UTF-8"}, NAME, 415,
        "unsupported_media_type", id="text-plain-without-origin",
    ),
    pytest.param(
        {"Content-Type": "application/x-www-form-urlencoded"}, b'{"name":"victim"}=', 415,
        "unsupported_media_type", id="html-form-without-origin",
    ),
    pytest.param(
        {"Content-Type": "multipart/form-data; boundary=x"},
        b'--x\r\nContent-Disposition: form-data; name="name"\r\n\r\nvictim\r\n--x--\r\n',
        415, "unsupported_media_type", id="multipart-form-without-origin",
    ),
    pytest.param(
        {"Origin": EVIL, "Content-Type": "application/json"}, NAME, 403,
        "origin_not_allowed", id="cross-site-json",
    ),
    pytest.param(
        {"Origin": "null"}, b"", 403, "origin_not_allowed", id="empty-body-from-a-sandbox"
    ),
    pytest.param(
        {"Host": "evil.example:{port}", "Origin": f"{EVIL}:{{port}}",
         "Content-Type": "application/json"},
        NAME, 421, "host_not_allowed", id="dns-rebinding-same-origin-json",
    ),
    pytest.param(
        {"Host": "evil.example:{port}", "Origin": f"{EVIL}:{{port}}",
         "Content-Type": "text/plain"},
        NAME, 421, "host_not_allowed", id="text-plain-foreign-origin-foreign-host",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "body", "status", "kind"), FORGERIES)
def test_forged_browser_requests_are_refused_and_nothing_is_journaled(
    server: Server, extra: dict[str, str], body: bytes, status: int, kind: str
) -> None:
    port = port_of(server)
    headers = browser(server, **{name: v.format(port=port) for name, v in extra.items()})
    actor = f"Greeter/forged-{status}-{len(body)}"
    response = forged(server, actor, headers, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind
    assert "access-control-allow-origin" not in response.headers
    nothing_journaled(server, actor)


def test_a_rebound_page_cannot_read_the_api(server: Server) -> None:
    port = port_of(server)
    # After rebinding, the page's own origin is the server: the browser sends no Origin
    # on a same-origin GET, only its own name as Host.
    for path in ("/v1/actors", "/openapi.json", "/metrics", "/v1/actors/Greeter/x/journal"):
        answer = httpx.get(f"{server.url}{path}", headers={"Host": f"evil.example:{port}"})
        assert answer.status_code == 421, (path, answer.text)
        message = answer.json()["error"]["message"]
        assert f"does not answer to the Host 'evil.example:{port}'" in message
        assert "--allowed-host evil.example" in message
        assert f"127.0.0.1:{port}" in message  # what it does answer to


def test_the_message_of_a_refused_origin_says_how_to_allow_it(server: Server) -> None:
    answer = httpx.get(f"{server.url}/v1/actors", headers={"Origin": EVIL})
    assert answer.status_code == 403
    assert f"--allowed-origin {EVIL}" in answer.json()["error"]["message"]


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "agents.internal", "AGENTS.internal"])
def test_allowed_hosts_are_answered(server: Server, name: str) -> None:
    port = port_of(server)
    answer = httpx.get(f"{server.url}/v1/actors", headers={"Host": f"{name}:{port}"})
    assert answer.status_code == 200, answer.text
    if name == "agents.internal":  # named without a port: on any port (behind a proxy)
        assert httpx.get(f"{server.url}/v1/actors", headers={"Host": name}).status_code == 200


def test_local_names_are_answered_on_the_served_port_only(server: Server) -> None:
    answer = httpx.get(f"{server.url}/v1/actors", headers={"Host": "localhost:1"})
    assert answer.status_code == 421


def test_health_checks_answer_a_probe_by_pod_ip(server: Server) -> None:
    for path in ("/livez", "/readyz"):
        probe = httpx.get(f"{server.url}{path}", headers={"Host": "10.1.2.3:8787"})
        assert probe.status_code == 200, (path, probe.text)


def test_an_allowed_origin_gets_cors_answers_and_can_send(server: Server) -> None:
    url = f"{server.url}/v1/actors/Greeter/console/messages/greet"
    preflight = httpx.options(
        url,
        headers={
            "Origin": CONSOLE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization, idempotency-key",
        },
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == CONSOLE
    assert "POST" in preflight.headers["access-control-allow-methods"]
    sent = httpx.post(url, json={"name": "console"}, params={"wait": "5"},
                      headers={"Origin": CONSOLE})  # fmt: skip
    assert sent.status_code == 200, sent.text
    assert sent.json()["result"] == "hello console"
    assert sent.headers["access-control-allow-origin"] == CONSOLE
    assert "Location" in sent.headers["access-control-expose-headers"]
    other = httpx.options(url, headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert other.status_code == 403


def test_the_python_client_and_the_cli_still_work(server: Server) -> None:
    with SyncClient(server.url) as client:
        assert client.call("Greeter/py", "greet", {"name": "py"}) == "hello py"
        client.deliver("Approval/py", "decision", {"by": "me", "approved": True})
    done = cli("send", "Greeter/cl", "greet", '{"name": "cl"}', "--wait", "5", "--url", server.url)
    assert done.returncode == 0, done.stderr
    assert '"result": "hello cl"' in done.stdout
    delivered = cli("deliver", "Approval/cl", "decision", "--url", server.url)
    assert delivered.returncode == 0, delivered.stderr
    by_name = cli("list", "--url", f"http://localhost:{port_of(server)}")
    assert by_name.returncode == 0, by_name.stderr
    assert "Greeter/cl" in by_name.stdout


# -- the rules themselves ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "host", "allowed"),
    [
        ("api.example.com", "api.example.com", True),
        ("api.example.com", "API.example.com:443", True),
        ("api.example.com:8787", "api.example.com:8787", True),
        ("api.example.com:8787", "api.example.com", False),
        ("api.example.com:8787", "api.example.com:8788", False),
        ("api.example.com", "evil.api.example.com", False),
        ("api.example.com", "api.example.com.evil.example", False),
        ("[::1]:8787", "[::1]:8787", True),
        ("[::1]:8787", "[::1]", False),
        ("10.0.0.7", "10.0.0.7:8787", True),
        ("*", "anything.example:1", True),
    ],
)
def test_host_rules(rule: str, host: str, allowed: bool) -> None:
    assert HostRule.parse(rule).allows(*split_host(host)) is allowed


@pytest.mark.parametrize(
    "text",
    ["http://api.example.com", "api.example.com:http", "", ":80", "api.example.com/v1", "[::1]x",
     "api:0", "api:70000"],
)  # fmt: skip
def test_host_rules_that_could_never_match_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--allowed-host takes a host name"):
        HostRule.parse(text)


def test_the_default_hosts_are_this_machine_and_the_bound_address_with_the_port() -> None:
    assert served_hosts("127.0.0.1", 8787) == ["localhost:8787", "127.0.0.1:8787", "[::1]:8787"]
    assert served_hosts("::1", 80, ["x"]) == ["localhost:80", "127.0.0.1:80", "[::1]:80", "x"]
    assert served_hosts("0.0.0.0", 9)[-1] == "0.0.0.0:9"
    assert served_hosts("Agents.local", 9)[-1] == "agents.local:9"


@pytest.mark.parametrize(
    ("text", "origin"),
    [("https://Console.Example.com/", "https://console.example.com"),
     ("http://localhost:3000", "http://localhost:3000")],
)  # fmt: skip
def test_allowed_origins_are_compared_as_browsers_send_them(text: str, origin: str) -> None:
    assert parse_origin(text) == origin


@pytest.mark.parametrize(
    "option",
    [("--allowed-host", "http://agents.internal"), ("--allowed-origin", "console.example.com"),
     ("--allowed-origin", "https://console.example.com/app")],
)  # fmt: skip
def test_serve_refuses_browser_rules_that_could_never_match(
    tmp_path: pathlib.Path, option: tuple[str, str]
) -> None:
    journal = tmp_path / "journal.db"
    done = cli("serve", "tests.server.app_under_test", "--port", str(free_port()),
               "--journal", str(journal), *option)  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"{option[0]} takes" in done.stderr
    assert repr(option[1]) in done.stderr
    assert not journal.exists()
