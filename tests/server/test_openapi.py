"""/openapi.json is right: it validates as OpenAPI 3.1, its paths and parameters are the
server's, and a live `actorflow serve` answers every generated request as it says
(schemathesis: no 5xx, documented statuses, content types, bodies and headers).

The live run makes ``ACTORFLOW_SCHEMATHESIS_EXAMPLES`` examples per operation (default
20, a few seconds per operation here); raise it to search longer (docs/api.md).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from actorflow._actor import KEY_PATTERN
from actorflow.server import ACTOR_STATES, ServerState, create_app
from tests.server.app_under_test import ACTORS
from tests.server.processes import Server, served
from tests.server.support import serving

#: Examples per operation in the live run.
EXAMPLES = int(os.environ.get("ACTORFLOW_SCHEMATHESIS_EXAMPLES", "20"))
#: Longest a generated ?wait= may make a request wait, in seconds: the server would wait
#: up to 60 s for a turn that waits for an event nobody sends.
LONGEST_WAIT = 0.1
TOKEN = "openapi-token"


def document_of(token: str | None = None) -> dict[str, Any]:
    """The document served in process (with or without a token configured)."""

    async def fetch() -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with serving(token=token, headers=headers) as api:
            document: dict[str, Any] = (await api.http.get("/openapi.json")).json()
            return document

    return anyio.run(fetch)


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
def test_the_document_validates_as_openapi_3_1(token: str | None) -> None:
    document = document_of(token)
    assert document["openapi"] == "3.1.0"
    validate(document)


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def _route_pattern(route: str) -> re.Pattern[str]:
    """What documents ``route``: each ``{name}`` as itself, or a hosted type or handler
    written in the path (the document has one send path per handler)."""
    literal = r"[A-Za-z_][A-Za-z0-9_.]*"
    return re.compile(
        re.sub(r"\\\{(\w+)\\\}", lambda m: rf"(?:\{{{m[1]}\}}|{literal})", re.escape(route))
    )


def test_every_documented_path_is_a_route_with_the_same_parameter_names() -> None:
    routes = [r for r in create_app(ServerState()).routes if isinstance(r, Route)]
    for path, method, operation in _operations(document_of()):
        declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert declared == set(re.findall(r"\{(\w+)\}", path)), (method, path)
        assert [
            route
            for route in routes
            if _route_pattern(route.path).fullmatch(path) and method.upper() in route.methods
        ], f"{method.upper()} {path} is no route of the server"


def test_statuses_match_what_the_server_answers() -> None:
    paths = document_of(TOKEN)["paths"]
    actor = "/v1/actors/{type}/{key}"

    def codes(path: str, method: str = "get") -> set[str]:
        return set(paths[path][method]["responses"])

    assert {"200", "202"} <= codes("/v1/actors/Greeter/{key}/messages/greet", "post")
    assert "200" not in codes(f"{actor}/invocations/{{invocation}}/cancel", "post")
    assert "202" in codes(f"{actor}/invocations/{{invocation}}/cancel", "post")
    assert "200" not in codes(f"{actor}/events/{{name}}", "post")
    assert {"202", "413", "415", "429"} <= codes(f"{actor}/events/{{name}}", "post")
    assert {"401", "421", "403"} <= codes("/metrics")
    assert {"400", "413", "415", "422", "409"} <= codes(
        "/v1/actors/Greeter/{key}/messages/greet", "post"
    )
    assert "409" in codes(f"{actor}/invocations/{{invocation}}/retry", "post")
    assert {"200", "400", "409", "415"} <= codes(f"{actor}/reset", "post")
    assert {"200", "400", "404", "409", "500"} <= codes("/v1/actors/Approval/{key}/query/asked")
    for health in ("/livez", "/readyz"):
        assert paths[health]["get"]["security"] == []  # no token needed
        assert not {"401", "421"} & codes(health)  # nor a known Host
    assert "503" in codes("/readyz")
    assert "security" not in paths["/metrics"]["get"]  # the document's default: the token
    for path, method, operation in _operations(paths_document := document_of(TOKEN)):
        if path not in ("/livez", "/readyz"):
            assert "401" in operation["responses"], (method, path)
    assert paths_document["security"] == [{"bearer": []}]
    without = document_of()
    assert "security" not in without
    assert all("401" not in op["responses"] for _, _, op in _operations(without))


def test_parameters_carry_the_servers_rules() -> None:
    paths = document_of()["paths"]
    send = paths["/v1/actors/Greeter/{key}/messages/greet"]["post"]
    parameters = {p["name"]: p["schema"] for p in send["parameters"]}
    assert parameters["key"]["pattern"] == f"^(?:{KEY_PATTERN.pattern})$"
    assert parameters["deadline"] == {"type": "number", "exclusiveMinimum": 0}
    assert parameters["wait"] == {"type": "number", "minimum": 0}
    status = paths["/v1/actors/{type}/{key}"]["get"]
    hosted = sorted(cls.__actorflow_name__ for cls in ACTORS)
    assert {p["name"]: p["schema"] for p in status["parameters"]}["type"]["enum"] == hosted
    listed = {p["name"]: p["schema"] for p in paths["/v1/actors"]["get"]["parameters"]}
    assert listed["type"]["enum"] == hosted
    assert listed["state"]["enum"] == list(ACTOR_STATES)


# -- the live server, driven by schemathesis --------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real `actorflow serve` of the test app on a fresh journal."""
    with served(tmp_path_factory.mktemp("openapi")) as running:
        yield running
        assert running.stop() == 0


@pytest.fixture(scope="module")
def live_schema(live: Server) -> Any:
    """The live server's own document, as schemathesis reads it."""
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json")


#: Every operation of the document, as (method, path).
OPERATIONS = [(method.upper(), path) for path, method, _ in _operations(document_of())]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_the_live_server_answers_as_its_document_says(
    live_schema: Any, method: str, path: str
) -> None:
    operation = live_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case: Any) -> None:
        if case.query and "wait" in case.query:
            case.query["wait"] = min(case.query["wait"], LONGEST_WAIT)
        case.call_and_validate(checks=CHECKS, timeout=30)

    answers_as_documented()


#: What every answer must satisfy.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def test_the_successes_of_a_real_run_are_answered_as_documented(live_schema: Any) -> None:
    """Random ids never name an invocation, so the generated requests above never cancel,
    retry or show one; a real run does, each answer checked against the document."""

    def call(path: str, method: str = "GET", **request: Any) -> Any:
        case = live_schema[path][method].Case(**request)
        response = case.call_and_validate(checks=CHECKS, timeout=30)
        assert response.status_code < 300, response.text
        return response.json()

    actor = "/v1/actors/{type}/{key}"
    trip = {"type": "Booking", "key": "documented"}
    sent = call(
        "/v1/actors/Booking/{key}/messages/trip",
        "POST",
        path_parameters={"key": trip["key"]},
        body={"destination": "lima"},
        query={"deadline": 3600},
    )
    invocation = {**trip, "invocation": sent["invocation"].rpartition("#")[2]}
    call(f"{actor}/invocations/{{invocation}}", path_parameters=invocation, query={"wait": 0.1})
    call(f"{actor}/invocations", path_parameters=trip)
    call(actor, path_parameters=trip)
    call(f"{actor}/journal", path_parameters=trip)
    call(f"{actor}/invocations/{{invocation}}/cancel", "POST", path_parameters=invocation)
    call(f"{actor}/events/{{name}}", "POST", path_parameters={**trip, "name": "go"}, body=[1])
    failed = call(
        "/v1/actors/Broken/{key}/messages/explode",
        "POST",
        path_parameters={"key": "documented"},
        body={"reason": "x"},
        query={"wait": 5},
    )
    assert failed["state"] == "failed"
    retry = {"type": "Broken", "key": "documented", "invocation": failed["invocation"][-24:]}
    call(f"{actor}/invocations/{{invocation}}/retry", "POST", path_parameters=retry)
    call("/v1/actors", query={"type": "Booking", "state": "idle"})
    asking = {"key": "documented"}
    call("/v1/actors/Approval/{key}/messages/request", "POST", path_parameters=asking,
         body={"what": "a deploy"})  # fmt: skip
    waiting = {"type": "Approval", **asking}
    give_up = time.monotonic() + 10
    while call(actor, path_parameters=waiting)["state"] != "waiting-event":  # its turn began
        assert time.monotonic() < give_up, "the Approval turn did not start"
        time.sleep(0.01)
    answered = call("/v1/actors/Approval/{key}/query/asked", path_parameters=asking,
                    query={"args": '{"last": 1}'})  # fmt: skip
    assert answered["result"] == ["a deploy"]
    for path in ("/livez", "/readyz", "/metrics", "/openapi.json"):
        live_schema[path]["GET"].Case().call_and_validate(checks=CHECKS, timeout=30)


def test_the_live_document_is_what_the_in_process_one_is(live: Server) -> None:
    served_document = httpx.get(f"{live.url}/openapi.json").json()
    validate(served_document)
    assert served_document == document_of()
