"""``GET /v1/actors/{type}/{key}/query/{name}`` in process (over ASGI), and the clients'
``query``: answers while the turn waits, clear refusals, the API's token."""

from __future__ import annotations

import httpx
import pytest

from actorflow import ClientError, UnknownQueryError
from tests.server.app_under_test import Approval
from tests.server.support import Api, reaches, serving
from tests.server.test_client import client_of

pytestmark = pytest.mark.anyio

ASKED = "/v1/actors/Approval/a/query/asked"


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["type"], error["message"]


async def waiting(api: Api) -> str:
    """Ask Approval/a to approve a deploy; its invocation once its turn waits."""
    sent = await api.send("Approval/a", "request", {"what": "a deploy"})
    await reaches(api, "Approval/a", "waiting-event")
    invocation: str = sent.json()["invocation"]
    return invocation


async def test_a_query_answers_with_the_state_while_the_turn_waits() -> None:
    async with serving() as api:
        invocation = await waiting(api)
        response = await api.http.get(ASKED)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "actor": "Approval/a",
            "query": "asked",
            "result": ["a deploy"],
            "as_of": "step",
            "invocation": invocation,
        }
        assert await api.actor_state("Approval/a") == "waiting-event"


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        (ASKED, {"args": "{not json"}, (400, "malformed_json", "?args= is not valid JSON")),
        (ASKED, {"args": "[1]"}, (400, "invalid_message", "?args= takes a JSON object")),
        (ASKED, {"args": '{"last": "x"}'}, (400, "invalid_message", "Approval.asked")),
        (ASKED, {"args": '{"other": 1}'}, (400, "invalid_message", "unknown field `other`")),
        ("/v1/actors/Approval/a/query/nope", {}, (404, "unknown_query", "its queries: asked")),
        ("/v1/actors/Approval/a/query/request", {}, (404, "unknown_query", "no query")),
        ("/v1/actors/Approval/nobody/query/asked", {}, (404, "unknown_actor", "never been sent")),
        ("/v1/actors/Nobody/a/query/asked", {}, (404, "unknown_actor_type", "'Nobody'")),
    ],
)
async def test_bad_queries_are_refused_clearly(
    path: str, params: dict[str, str], expected: tuple[int, str, str]
) -> None:
    async with serving() as api:
        await waiting(api)
        status, kind, message = error_of(await api.http.get(path, params=params))
        assert (status, kind) == expected[:2], message
        assert expected[2] in message


async def test_a_query_needs_the_apis_token() -> None:
    async with serving(token="secret-token") as api:
        response = await api.http.get(ASKED)
        assert error_of(response)[:2] == (401, "unauthorized")
        headers = {"Authorization": "Bearer secret-token"}
        await api.http.post(
            "/v1/actors/Approval/a/messages/request", json={"what": "x"}, headers=headers
        )
        response = await api.http.get(ASKED, headers=headers)
        assert response.status_code == 200, response.text


async def test_the_clients_query_typed_and_untyped() -> None:
    async with serving() as api, client_of(api) as client:
        invocation = await waiting(api)
        answer = await client.query("Approval/a", "asked", {"last": 1})
        assert (answer.result, answer.as_of, answer.invocation) == (
            ["a deploy"],
            "step",
            invocation,
        )
        remote = client.ref(Approval, "a")
        assert await remote.query(Approval.asked) == ["a deploy"]
        assert await remote.query(Approval.asked, 5) == ["a deploy"]
        with pytest.raises(UnknownQueryError):
            await remote.query(Approval.request)  # type: ignore[arg-type]
        with pytest.raises(ClientError) as refused:
            await client.query("Approval/a", "nope")
        assert (refused.value.status, refused.value.kind) == (404, "unknown_query")
