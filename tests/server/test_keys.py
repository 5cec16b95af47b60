"""Actor keys: one rule (`actorflow._actor.check_key`, docs/api.md "Actor keys") for the
runtime, the server, the Python clients and the CLI. The keys ``.`` and ``..`` are refused
everywhere: a URL path drops or climbs out of them, so no HTTP client can address them."""

from __future__ import annotations

import pathlib
import re

import pytest

from actorflow import ActorRef, Client, InvalidMessageError, SyncClient
from actorflow._actor import KEY_PATTERN, check_key
from tests.server.processes import cli
from tests.server.support import error_of, nothing_accepted, serving

pytestmark = pytest.mark.anyio

#: What the refusal of the keys "." and ".." says.
DOT_KEYS = re.escape("other than '.' and '..'")


@pytest.mark.parametrize("key", [".", ".."])
def test_dot_keys_are_refused_by_the_one_key_check(key: str) -> None:
    assert KEY_PATTERN.fullmatch(key) is None
    with pytest.raises(InvalidMessageError, match=DOT_KEYS):
        check_key(key)


@pytest.mark.parametrize("key", ["...", ".a", "a.", "..a", "a..b", "Az09._~:@+=-"])
def test_keys_that_only_contain_dots_are_fine(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["%2E", "%2E%2E", ".%2E"])
async def test_dot_keys_are_refused_by_every_endpoint_that_takes_a_key(key: str) -> None:
    actor = f"/v1/actors/Greeter/{key}"
    hexa = "0123456789abcdef01234567"
    async with serving() as api:
        for method, path, body in [
            ("POST", f"{actor}/messages/greet", {"name": "a"}),
            ("POST", f"/v1/actors/Approval/{key}/events/decision", {}),
            ("GET", actor, None),
            ("GET", f"{actor}/journal", None),
            ("GET", f"{actor}/invocations", None),
            ("GET", f"{actor}/invocations/{hexa}", None),
            ("POST", f"{actor}/invocations/{hexa}/cancel", None),
            ("POST", f"{actor}/invocations/{hexa}/retry", None),
        ]:
            response = await api.http.request(method, path, json=body)
            status, kind, message = error_of(response)
            assert (status, kind) == (400, "invalid_message"), (method, path, message)
            assert "other than '.' and '..'" in message
        await nothing_accepted(api)


@pytest.mark.parametrize("key", [".", ".."])
async def test_the_clients_refuse_dot_keys_before_sending(key: str) -> None:
    async with Client("http://127.0.0.1:9") as client:  # nothing listens: nothing is sent
        for call in (
            client.send(f"Greeter/{key}", "greet", {"name": "a"}),
            client.status(ActorRef("Greeter", key)),
            client.invocation(f"Greeter/{key}#0123"),
        ):
            with pytest.raises(InvalidMessageError, match=DOT_KEYS):
                await call
    with SyncClient("http://127.0.0.1:9") as sync, pytest.raises(InvalidMessageError):
        sync.journal(f"Greeter/{key}")


@pytest.mark.parametrize("actor", ["Greeter/.", "Greeter/.."])
def test_the_cli_refuses_dot_keys_saying_why(actor: str) -> None:
    done = cli("status", actor, "--url", "http://127.0.0.1:9")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "other than '.' and '..'" in done.stderr
    assert "cannot reach the server" not in done.stderr  # refused before connecting


def test_the_docs_show_the_pattern_the_code_checks() -> None:
    docs = (pathlib.Path(__file__).parents[2] / "docs" / "api.md").read_text()
    assert f"\n^(?:{KEY_PATTERN.pattern})$\n" in docs
