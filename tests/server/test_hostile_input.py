"""Hostile input is a clear 4xx, never a 5xx, and nothing is accepted: numbers the journal
cannot store, JSON nested to exhaust the decoder's stack, arguments over the record limit,
odd paths, methods and query numbers.

In process (over ASGI); `test_hostile_http.py` sends what only a real socket can carry.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from actorflow import Client
from actorflow.server._input import MAX_JSON_DEPTH
from journal import MemoryStore
from tests.server.support import error_of, nothing_accepted, serving

pytestmark = pytest.mark.anyio

GREET = "/v1/actors/Greeter/k/messages/greet"
DECISION = "/v1/actors/Approval/k/events/decision"
JSON = {"Content-Type": "application/json"}


def nested(depth: int, inner: bytes = b"1") -> bytes:
    """A JSON array ``depth`` levels deep."""
    return b"[" * depth + inner + b"]" * depth


# -- numbers the journal cannot store -------------------------------------------------------

OUT_OF_RANGE = [
    pytest.param(GREET, b'{"name": "a", "times": 18446744073709551616}', "$.times", id="2**64"),
    pytest.param(GREET, b'{"name": "a", "times": -9223372036854775809}', "$.times", id="-2**63-1"),
    pytest.param(DECISION, b'{"n": 18446744073709551616}', "$.n", id="event-2**64"),
    pytest.param(
        DECISION, b'{"a": [1, {"b c": [0, 99999999999999999999999]}]}', '$.a[1]["b c"][1]',
        id="event-deep-in-the-payload",
    ),
    pytest.param(DECISION, b"[1, 2, 1e400]", "$[2]", id="float-beyond-a-double"),
    pytest.param(DECISION, b"1" * 5000, "out of range", id="five-thousand-digits"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "where"), OUT_OF_RANGE)
async def test_numbers_the_journal_cannot_store_are_400_saying_where(
    path: str, body: bytes, where: str
) -> None:
    async with serving() as api:
        response = await api.http.post(path, content=body, headers=JSON)
        status, kind, message = error_of(response)
        assert (status, kind) == (400, "invalid_message"), message
        assert where in message
        assert "as a string" in message or "as strings" in message
        await nothing_accepted(api)


async def test_integers_at_the_edges_of_64_bits_are_accepted() -> None:
    async with serving() as api:
        for n in (2**64 - 1, -(2**63)):
            response = await api.http.post(DECISION, json={"n": n})
            assert response.status_code == 202, response.text


# -- nesting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 2000, 100_000])
async def test_json_nested_beyond_the_limit_is_400_saying_where(depth: int) -> None:
    async with serving() as api:
        for path, body in [
            (DECISION, nested(depth)),
            (GREET, b'{"name": ' + nested(depth - 1, b'"x"') + b"}"),
        ]:
            response = await api.http.post(path, content=body, headers=JSON)
            status, kind, message = error_of(response)
            assert (status, kind) == (400, "invalid_message"), message
            assert f"more than {MAX_JSON_DEPTH} levels deep" in message
            level = MAX_JSON_DEPTH + 1
            at = MAX_JSON_DEPTH if path == DECISION else len('{"name": ') + MAX_JSON_DEPTH - 1
            assert f"level {level} opens at byte {at} of the body" in message
        await nothing_accepted(api)


async def test_json_nested_to_the_limit_is_accepted() -> None:
    async with serving() as api:
        response = await api.http.post(DECISION, content=nested(MAX_JSON_DEPTH), headers=JSON)
        assert response.status_code == 202, response.text
        mixed = b'{"a": ' * (MAX_JSON_DEPTH - 1) + b"[]" + b"}" * (MAX_JSON_DEPTH - 1)
        response = await api.http.post(DECISION, content=mixed, headers=JSON)
        assert response.status_code == 202, response.text


async def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    brackets = '[{"\\"' * 200  # quotes escaped inside the string do not end it
    async with serving() as api:
        response = await api.http.post(DECISION, json={"text": brackets})
        assert response.status_code == 202, response.text
        response = await api.http.post(GREET, json={"name": brackets}, params={"wait": "5"})
        assert response.json()["result"] == f"hello {brackets}"


# -- the record limit -------------------------------------------------------------------------


async def test_arguments_over_the_record_limit_are_413_not_400() -> None:
    store = MemoryStore(max_record_bytes=16384)
    values_off = {"value_threshold": 0}  # with values on, the arguments are a value
    async with serving(store, max_body_bytes=100_000, runtime_options=values_off) as api:
        response = await api.http.post(GREET, json={"name": "x" * 20_000})
        status, kind, message = error_of(response)
        assert (status, kind) == (413, "message_too_large"), message
        assert "record limit of 16,384 bytes" in message
        assert "--max-record-bytes" in message
        event = await api.http.post(DECISION, json={"note": "x" * 20_000})
        status, kind, message = error_of(event)
        assert (status, kind) == (413, "message_too_large"), message
        assert "event 'decision'" in message
        await nothing_accepted(api)
        small = await api.http.post(GREET, json={"name": "x"}, params={"wait": "5"})
        assert small.json()["result"] == "hello x"


async def test_with_large_values_on_arguments_over_the_record_limit_are_accepted() -> None:
    store = MemoryStore(max_record_bytes=16384)
    async with serving(store, max_body_bytes=100_000) as api:
        name = "x" * 20_000
        response = await api.http.post(GREET, json={"name": name}, params={"wait": "5"})
        assert response.status_code == 200, response.text
        assert response.json()["result"] == f"hello {name}"


# -- paths and methods ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/v1/actors/", "/v1/actors/Greeter/k/", "/livez/", "/v1/actors/Greeter/k/journal/"]
)
async def test_a_trailing_slash_is_404_not_a_redirect_built_from_the_host(path: str) -> None:
    async with serving(token="t") as api:  # before any auth check: nothing to redirect to
        response = await api.http.get(path, headers={"Host": "localhost"})
        status, kind, message = error_of(response)
        assert (status, kind) == (404, "not_found")
        assert "location" not in response.headers
        assert f"no endpoint {path} (paths have no trailing slash)" in message


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/actors/Greeter/k", "GET, HEAD"),
        ("PUT", GREET, "POST"),
        ("GET", "/v1/actors/Greeter/k/invocations/0123/cancel", "POST"),
        ("POST", "/livez", "GET, HEAD"),
    ],
)
async def test_405_carries_an_allow_header(method: str, path: str, allow: str) -> None:
    async with serving() as api:
        response = await api.http.request(method, path)
        status, kind, message = error_of(response)
        assert (status, kind) == (405, "method_not_allowed")
        assert response.headers["allow"] == allow
        assert message == f"{method} is not allowed on {path}; use {allow}"


# -- ?wait= and ?deadline= ------------------------------------------------------------------

NOT_PLAIN_DECIMALS = ["inf", "-inf", "nan", "1e309", "1e3", "0x10", " 5", "5 ", "5_0", "+5",
                      "-1", ".5", "5.", "", "1" * 400, "\u0665"]  # fmt: skip


@pytest.mark.parametrize("name", ["wait", "deadline"])
@pytest.mark.parametrize("raw", NOT_PLAIN_DECIMALS)
async def test_wait_and_deadline_take_plain_decimals_only(name: str, raw: str) -> None:
    async with serving() as api:
        response = await api.send("Greeter/k", "greet", {"name": "a"}, params={name: raw})
        status, kind, message = error_of(response)
        assert (status, kind) == (400, "invalid_query"), message
        assert f"?{name}= takes a plain decimal number of seconds" in message
        assert repr(raw) in message
        await nothing_accepted(api)


async def test_wait_on_an_invocation_takes_plain_decimals_only() -> None:
    async with serving() as api:
        sent = await api.send("Greeter/k", "greet", {"name": "a"}, params={"wait": "5"})
        for raw in ("inf", "1e3", "nan"):
            response = await api.http.get(sent.headers["location"], params={"wait": raw})
            assert error_of(response)[:2] == (400, "invalid_query"), raw


@pytest.mark.parametrize(("name", "raw"), [("wait", "5"), ("wait", "0.5"), ("wait", "0"),
                                           ("deadline", "5"), ("deadline", "0.5"),
                                           ("deadline", "100000000000000000000")])  # fmt: skip
async def test_plain_decimals_are_taken(name: str, raw: str) -> None:
    async with serving() as api:
        response = await api.send("Greeter/k", "greet", {"name": "a"}, params={name: raw})
        assert response.status_code in (200, 202), response.text


@pytest.mark.parametrize("value", [1e-05, 1e20, 0.5, 3])
async def test_the_client_sends_seconds_as_plain_decimals(value: float) -> None:
    sent: list[Any] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request.url.params)

    async with serving() as api, Client("http://localhost") as client:
        await client._http.aclose()
        client._http = httpx.AsyncClient(
            transport=api.transport,
            base_url="http://localhost",
            event_hooks={"request": [record]},
        )
        status = await client.send("Greeter/k", "greet", {"name": "a"}, deadline=value)
        assert status.actor == "Greeter/k"
        with pytest.raises(ValueError, match="finite number of seconds"):
            await client.send("Greeter/k", "greet", {"name": "a"}, wait=float("inf"))
    [params] = sent
    assert "e" not in params["deadline"]
    assert float(params["deadline"]) == value
