"""The HTTP API in process: sends, results, events, cancellation, inspection, bad input."""

from __future__ import annotations

import contextlib
import pathlib
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from actorflow import Runtime
from actorflow._actor import source_version
from actorflow.server import ACTOR_STATES, ServerState, create_app
from journal import MemoryStore, SqliteStore
from tests.server import app_under_test
from tests.server.support import Api, error_of, reaches, serving

pytestmark = pytest.mark.anyio

_ops_approves = {"by": "ops", "approved": True}


async def finished(api: Api, location: str) -> Any:
    """The invocation at ``location`` once it ended (waiting for it server-side)."""
    response = await api.http.get(location, params={"wait": "5"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] not in ("queued", "running"), body
    return body


# -- sending and results ----------------------------------------------------------------------


async def test_a_send_is_accepted_at_once_with_its_invocation_and_location() -> None:
    async with serving() as api:
        response = await api.send("Approval/a", "request", {"what": "deploy"})
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["actor"] == "Approval/a"
        assert body["state"] in ("queued", "running")
        actor, _, tail = body["invocation"].partition("#")
        assert actor == "Approval/a"
        assert tail
        assert response.headers["location"] == f"/v1/actors/Approval/a/invocations/{tail}"


async def test_wait_answers_200_with_the_result_when_the_turn_ends_in_time() -> None:
    async with serving() as api:
        response = await api.send(
            "Greeter/a", "greet", {"name": "ann", "times": 2}, params={"wait": "5"}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["state"] == "completed"
        assert body["result"] == "hello ann hello ann"
        assert body["error"] is None
        assert response.headers["location"].endswith(body["invocation"].partition("#")[2])


async def test_wait_that_runs_out_answers_202_with_the_turn_still_running() -> None:
    async with serving() as api:
        with anyio.fail_after(3):
            response = await api.send(
                "Approval/a", "request", {"what": "deploy"}, params={"wait": "0.2"}
            )
        assert response.status_code == 202, response.text
        assert response.json()["state"] in ("queued", "running")


async def test_an_invocation_is_shown_with_and_without_waiting() -> None:
    async with serving() as api:
        sent = await api.send("Approval/a", "request", {"what": "deploy"})
        location = sent.headers["location"]
        await reaches(api, "Approval/a", "waiting-event")
        now = await api.http.get(location)
        assert now.status_code == 200, now.text
        assert now.json()["state"] == "running"
        await api.http.post("/v1/actors/Approval/a/events/decision", json=_ops_approves)
        body = await finished(api, location)
        assert body["state"] == "completed"
        assert body["result"] == {"what": "deploy", "by": "ops", "approved": True}
        again = await api.http.get(location)
        assert again.json() == body


async def test_a_failed_invocation_shows_its_error() -> None:
    async with serving() as api:
        response = await api.send("Broken/b", "explode", {"reason": "fuse"}, params={"wait": "5"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["state"] == "failed"
        assert body["result"] is None
        assert "boom: fuse" in body["error"]
        assert "ValueError" in body["error_type"]


async def test_an_empty_body_is_no_arguments_so_a_required_one_is_missing() -> None:
    async with serving() as api:
        response = await api.http.post("/v1/actors/Greeter/a/messages/greet")
        status, kind, message = error_of(response)
        assert (status, kind) == (400, "invalid_message")
        assert "`name`" in message


async def test_keys_may_use_every_character_of_the_documented_set() -> None:
    key = "Az09._~:@+=-"
    async with serving() as api:
        sent = await api.send(f"Greeter/{key}", "greet", {"name": "k"}, params={"wait": "5"})
        assert sent.status_code == 200, sent.text
        assert sent.json()["actor"] == f"Greeter/{key}"
        assert (await finished(api, sent.headers["location"]))["result"] == "hello k"
        assert await api.actor_state(f"Greeter/{key}") == "idle"
        journal = await api.http.get(f"/v1/actors/Greeter/{key}/journal")
        assert journal.status_code == 200
        assert journal.json()


# -- bad input: a clear JSON error, and nothing accepted -------------------------------------

_too_long_key = "k" * 201
#: A raw body sent as JSON (``json=`` bodies get the header from httpx).
_JSON = {"headers": {"Content-Type": "application/json"}}

BAD_REQUESTS = [
    pytest.param(
        "POST", "/v1/actors/Nobody/k/messages/greet", {"json": {"name": "ann"}},
        404, "unknown_actor_type", "Greeter", id="unknown-actor-type",
    ),
    pytest.param(
        "POST", "/v1/actors/Greeter/k/messages/shout", {"json": {"name": "ann"}},
        404, "unknown_handler", "greet", id="unknown-handler",
    ),
    pytest.param(
        "POST", "/v1/actors/Greeter/k/messages/greet", {"json": {"name": 3}},
        400, "invalid_message", "$.name", id="argument-of-wrong-type",
    ),
    pytest.param(
        "POST", "/v1/actors/Greeter/k/messages/greet", {"json": {"name": "a", "times": "2"}},
        400, "invalid_message", "$.times", id="optional-argument-of-wrong-type",
    ),
    pytest.param(
        "POST", "/v1/actors/Greeter/k/messages/greet", {"json": {"times": 2}},
        400, "invalid_message", "name", id="missing-argument",
    ),
    pytest.param(
        "POST", "/v1/actors/Greeter/k/messages/greet", {"json": {"name": "a", "nick": "b"}},
        400, "invalid_message", "nick", id="unknown-argument",
    ),
    pytest.param(
        "POST", "/v1/actors/Greeter/k/messages/greet", {"content": b'{"name": "a"', **_JSON},
        400, "malformed_json", "JSON", id="malformed-json",
    ),
    pytest.param(
        "POST", "/v1/actors/Approval/k/events/decision", {"content": b"{by: ops}", **_JSON},
        400, "malformed_json", "JSON", id="malformed-event-payload",
    ),
    pytest.param(
        "POST", "/v1/actors/Greeter/k/messages/greet", {"json": ["ann"]},
        400, "invalid_message", "object", id="body-not-an-object",
    ),
    pytest.param(
        "POST", "/v1/actors/Greeter/k/messages/greet", {"json": "ann"},
        400, "invalid_message", "object", id="body-a-string",
    ),
    pytest.param(
        "POST", "/v1/actors/Greeter/a%20b/messages/greet", {"json": {"name": "a"}},
        400, "invalid_message", "A-Z a-z 0-9", id="key-with-a-space",
    ),
    pytest.param(
        "POST", "/v1/actors/Greeter/caf%C3%A9/messages/greet", {"json": {"name": "a"}},
        400, "invalid_message", "A-Z a-z 0-9", id="key-not-ascii",
    ),
    pytest.param(
        "POST", f"/v1/actors/Greeter/{_too_long_key}/messages/greet", {"json": {"name": "a"}},
        400, "invalid_message", "1 to 200", id="key-too-long",
    ),
    pytest.param(
        "GET", "/v1/actors/Greeter/a%21/journal", {},
        400, "invalid_message", "A-Z a-z 0-9", id="bad-key-journal",
    ),
    pytest.param(
        "GET", "/v1/actors/Greeter/a%2A", {},
        400, "invalid_message", "A-Z a-z 0-9", id="bad-key-status",
    ),
    pytest.param(
        "POST", "/v1/actors/Approval/a%3F/events/decision", {"json": {}},
        400, "invalid_message", "A-Z a-z 0-9", id="bad-key-deliver",
    ),
    pytest.param(
        "POST", "/v1/actors/Greeter/k/messages/greet",
        {"json": {"name": "a"}, "params": {"wait": "soon"}},
        400, "invalid_query", "wait", id="wait-not-a-number",
    ),
    pytest.param(
        "POST", "/v1/actors/Greeter/k/messages/greet",
        {"json": {"name": "a"}, "params": {"wait": "-1"}},
        400, "invalid_query", "wait", id="wait-negative",
    ),
    pytest.param(
        "POST", "/v1/actors/Greeter/k/messages/greet",
        {"json": {"name": "a"}, "params": {"deadline": "0"}},
        400, "invalid_message", "deadline", id="deadline-not-positive",
    ),
    pytest.param(
        "POST", "/v1/actors/Greeter/k/messages/greet",
        {"json": {"name": "a"}, "headers": {"Idempotency-Key": "x" * 201}},
        400, "invalid_message", "idempotency key", id="idempotency-key-too-long",
    ),
    pytest.param(
        "GET", "/v1/actors/Greeter/k/invocations/0123456789abcdef01234567", {},
        404, "unknown_invocation", "Greeter/k#0123456789abcdef01234567",
        id="unknown-invocation",
    ),
    pytest.param(
        "POST", "/v1/actors/Greeter/k/invocations/0123456789abcdef01234567/cancel", {},
        404, "unknown_invocation", "Greeter/k#0123456789abcdef01234567",
        id="cancel-unknown-invocation",
    ),
    pytest.param(
        "GET", "/v1/actors/Nobody/k", {},
        404, "unknown_actor_type", "Nobody", id="status-of-unknown-actor-type",
    ),
    pytest.param(
        "GET", "/v1/actors/Nobody/k/journal", {},
        404, "unknown_actor_type", "Nobody", id="journal-of-unknown-actor-type",
    ),
    pytest.param(
        "GET", "/v1/actors", {"params": {"type": "Nobody"}},
        404, "unknown_actor_type", "Nobody", id="list-of-unknown-actor-type",
    ),
    pytest.param(
        "POST", "/v1/actors/Nobody/k/events/decision", {"json": {}},
        404, "unknown_actor_type", "Nobody", id="deliver-to-unknown-actor-type",
    ),
    pytest.param(
        "GET", "/v1/actors/Nobody/k/invocations/0123456789abcdef01234567", {},
        404, "unknown_actor_type", "Nobody", id="invocation-of-unknown-actor-type",
    ),
    pytest.param(
        "GET", "/v1/nowhere", {},
        404, "not_found", "/openapi.json", id="unknown-endpoint",
    ),
    pytest.param(
        "DELETE", "/v1/actors/Greeter/k", {},
        405, "method_not_allowed", "DELETE", id="wrong-method",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "request_options", "status", "kind", "says"), BAD_REQUESTS
)
async def test_bad_input_gets_a_clear_json_error_and_nothing_is_accepted(
    method: str,
    path: str,
    request_options: dict[str, Any],
    status: int,
    kind: str,
    says: str,
) -> None:
    async with serving() as api:
        response = await api.http.request(method, path, **request_options)
        got_status, got_kind, message = error_of(response)
        assert (got_status, got_kind) == (status, kind), message
        assert says in message
        assert await api.runtime.list_actors() == []


async def _chunks(total: int, size: int = 256) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


async def test_a_body_over_the_limit_is_refused_by_its_content_length() -> None:
    async with serving(max_body_bytes=1024) as api:
        body = b'{"name": "' + b"a" * 2000 + b'"}'
        response = await api.http.post("/v1/actors/Greeter/k/messages/greet", content=body, **_JSON)
        assert response.request.headers["content-length"] == str(len(body))
        status, kind, message = error_of(response)
        assert (status, kind) == (413, "body_too_large")
        assert "1024" in message
        assert "--max-body-bytes" in message
        assert await api.runtime.list_actors() == []


async def test_a_chunked_body_over_the_limit_is_refused_without_a_content_length() -> None:
    async with serving(max_body_bytes=1024) as api:
        response = await api.http.post(
            "/v1/actors/Greeter/k/messages/greet", content=_chunks(4096), **_JSON
        )
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert error_of(response)[:2] == (413, "body_too_large")
        assert await api.runtime.list_actors() == []


async def test_an_event_payload_over_the_limit_is_refused() -> None:
    async with serving(max_body_bytes=1024) as api:
        response = await api.http.post(
            "/v1/actors/Approval/a/events/decision", content=b'"' + b"x" * 2000 + b'"', **_JSON
        )
        assert error_of(response)[:2] == (413, "body_too_large")
        assert await api.runtime.list_actors() == []


async def test_a_body_of_exactly_the_limit_is_accepted() -> None:
    async with serving(max_body_bytes=1024) as api:
        body = b'{"name": "ann"}'.ljust(1024)
        response = await api.http.post(
            "/v1/actors/Greeter/k/messages/greet", content=body, params={"wait": "5"}, **_JSON
        )
        assert response.status_code == 200, response.text
        assert response.json()["result"] == "hello ann"


# -- idempotency ------------------------------------------------------------------------------


async def test_a_retry_with_the_same_idempotency_key_returns_the_same_invocation() -> None:
    async with serving() as api:
        key = {"Idempotency-Key": "greet-ann-1"}
        first = await api.send("Greeter/g", "greet", {"name": "ann"}, headers=key)
        retry = await api.send("Greeter/g", "greet", {"name": "ann"}, headers=key)
        assert first.status_code in (200, 202)
        assert retry.json()["invocation"] == first.json()["invocation"]
        assert retry.headers["location"] == first.headers["location"]
        assert (await finished(api, first.headers["location"]))["result"] == "hello ann"
        late = await api.send("Greeter/g", "greet", {"name": "ann"}, headers=key)
        assert late.status_code == 200
        assert late.json()["invocation"] == first.json()["invocation"]
        other = await api.send("Greeter/g", "greet", {"name": "ann"}, params={"wait": "5"})
        assert other.json()["invocation"] != first.json()["invocation"]
        assert app_under_test.greeted["ann"] == 2  # the keyed send ran once, the other once


async def test_a_keyed_send_answers_at_once_while_its_turn_still_waits() -> None:
    async with serving() as api:
        with anyio.fail_after(5):  # the answer must not wait for the turn to end
            sent = await api.send(
                "Approval/a", "request", {"what": "x"}, headers={"Idempotency-Key": "k"}
            )
        assert sent.status_code == 202
        assert sent.json()["state"] in ("queued", "running")


async def test_concurrent_retries_with_one_idempotency_key_make_one_invocation() -> None:
    async with serving() as api:
        answers: list[httpx.Response] = []

        async def attempt() -> None:
            headers = {"Idempotency-Key": "same"}
            answers.append(await api.send("Greeter/g", "greet", {"name": "bo"}, headers=headers))

        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(attempt)
        assert len({answer.json()["invocation"] for answer in answers}) == 1
        await finished(api, answers[0].headers["location"])
        assert app_under_test.greeted["bo"] == 1


async def test_an_idempotency_key_is_per_actor() -> None:
    async with serving() as api:
        key = {"Idempotency-Key": "k1"}
        one = await api.send("Greeter/one", "greet", {"name": "a"}, headers=key)
        two = await api.send("Greeter/two", "greet", {"name": "a"}, headers=key)
        assert one.json()["invocation"] != two.json()["invocation"]


# -- events and cancellation ------------------------------------------------------------------


async def test_a_delivered_event_reaches_wait_for_with_its_payload() -> None:
    async with serving() as api:
        sent = await api.send("Approval/a", "request", {"what": "deploy"})
        await reaches(api, "Approval/a", "waiting-event")
        response = await api.http.post("/v1/actors/Approval/a/events/decision", json=_ops_approves)
        assert response.status_code == 202, response.text
        assert response.json() == {"delivered": "decision"}
        body = await finished(api, sent.headers["location"])
        assert body["result"] == {"what": "deploy", "by": "ops", "approved": True}


async def test_an_event_delivered_before_the_handler_waits_is_kept() -> None:
    async with serving() as api:
        early = {"by": "early bird", "approved": False}
        response = await api.http.post("/v1/actors/Approval/a/events/decision", json=early)
        assert response.status_code == 202, response.text
        sent = await api.send("Approval/a", "request", {"what": "rollback"})
        body = await finished(api, sent.headers["location"])
        assert body["result"] == {"what": "rollback", "by": "early bird", "approved": False}


async def test_cancelling_a_running_invocation_compensates_its_completed_steps() -> None:
    async with serving() as api:
        sent = await api.send("Booking/b", "trip", {"destination": "oslo"})
        location = sent.headers["location"]
        await reaches(api, "Booking/b", "waiting-timer")
        response = await api.http.post(f"{location}/cancel")
        assert response.status_code == 202, response.text
        assert response.json()["invocation"] == sent.json()["invocation"]
        body = await finished(api, location)
        assert body["state"] == "cancelled"
        assert body["compensated"] == ["reserve"]
        assert body["result"] is None
        assert app_under_test.reserved == ["oslo"]
        assert app_under_test.released == ["seat-to-oslo"]
        await reaches(api, "Booking/b", "idle")


async def test_a_deadline_per_message_cancels_the_turn_and_compensates() -> None:
    async with serving() as api:
        sent = await api.send(
            "Booking/b", "trip", {"destination": "oslo"}, params={"deadline": "0.3"}
        )
        body = await finished(api, sent.headers["location"])
        assert body["state"] == "cancelled"
        assert "deadline" in body["error"]
        assert body["compensated"] == ["reserve"]
        assert app_under_test.released == ["seat-to-oslo"]


async def test_cancelling_a_finished_invocation_changes_nothing() -> None:
    async with serving() as api:
        sent = await api.send("Greeter/g", "greet", {"name": "cy"}, params={"wait": "5"})
        response = await api.http.post(f"{sent.headers['location']}/cancel")
        assert response.json()["state"] == "completed"
        assert (await finished(api, sent.headers["location"]))["result"] == "hello cy"


# -- inspection -------------------------------------------------------------------------------


async def test_actor_status_says_what_each_actor_is_doing() -> None:
    async with serving() as api:
        await api.send("Greeter/g", "greet", {"name": "a"}, params={"wait": "5"})
        trip = await api.send("Booking/b", "trip", {"destination": "rome"})
        await api.send("Approval/a", "request", {"what": "x"})
        await reaches(api, "Booking/b", "waiting-timer")
        await reaches(api, "Approval/a", "waiting-event")
        booking = (await api.http.get("/v1/actors/Booking/b")).json()
        assert booking == {
            "actor": "Booking/b",
            "state": "waiting-timer",
            "invocation": trip.json()["invocation"],
            "turns": 1,
            "error": None,
            "attention": [],
            "version": source_version(app_under_test.Booking),
            "diverged_at": None,
            "owner": None,
        }
        greeter = (await api.http.get("/v1/actors/Greeter/g")).json()
        assert (greeter["state"], greeter["invocation"], greeter["turns"]) == ("idle", None, 1)
        fresh = (await api.http.get("/v1/actors/Greeter/never-seen")).json()
        assert (fresh["state"], fresh["invocation"], fresh["turns"]) == ("idle", None, 0)


async def test_the_journal_endpoint_reads_as_entries_with_step_names_and_times() -> None:
    async with serving() as api:
        sent = await api.send("Booking/b", "trip", {"destination": "rome"})
        await reaches(api, "Booking/b", "waiting-timer")
        response = await api.http.get("/v1/actors/Booking/b/journal")
        assert response.status_code == 200, response.text
        entries = response.json()
        kinds = [(e["stream"], e["type"]) for e in entries]
        assert kinds == [
            ("actor", "turn"),
            ("actor", "step"),
            ("actor", "timer"),
            ("inbox", "message"),
        ]
        turn, step, timer, message = entries
        assert turn["data"]["handler"] == "trip"
        assert turn["data"]["args"] == {"destination": "rome"}
        assert step["data"]["name"] == "reserve"
        assert step["data"]["value"] == "seat-to-rome"
        assert timer["data"]["name"] == "departure"
        assert message["data"]["invocation"] == sent.json()["invocation"]
        assert all(e["at"] > 1_600_000_000 for e in entries)
        assert [e["position"] for e in entries] == [1, 2, 3, 1]


async def test_actors_are_listed_by_type_and_by_state() -> None:
    async with serving() as api:
        await api.send("Greeter/g", "greet", {"name": "a"}, params={"wait": "5"})
        await api.send("Booking/b", "trip", {"destination": "rome"})
        await api.send("Approval/a", "request", {"what": "x"})
        await reaches(api, "Booking/b", "waiting-timer")
        await reaches(api, "Approval/a", "waiting-event")

        async def listed(**query: str) -> list[tuple[str, str]]:
            response = await api.http.get("/v1/actors", params=query)
            assert response.status_code == 200, response.text
            return sorted((a["actor"], a["state"]) for a in response.json())

        assert await listed() == [
            ("Approval/a", "waiting-event"),
            ("Booking/b", "waiting-timer"),
            ("Greeter/g", "idle"),
        ]
        assert await listed(type="Greeter") == [("Greeter/g", "idle")]
        assert await listed(state="waiting-timer") == [("Booking/b", "waiting-timer")]
        assert await listed(type="Booking", state="waiting-timer") == [
            ("Booking/b", "waiting-timer")
        ]
        assert await listed(type="Booking", state="idle") == []
        assert await listed(type="Broken") == []


async def test_an_unknown_state_filter_is_refused_with_the_valid_states() -> None:
    async with serving() as api:
        await api.send("Greeter/g", "greet", {"name": "a"}, params={"wait": "5"})
        for bad in ("bogus", "waiting", "IDLE", ""):
            response = await api.http.get("/v1/actors", params={"state": bad})
            status, kind, message = error_of(response)
            assert (status, kind) == (400, "invalid_query"), bad
            assert f"?state={bad} is not an actor state" in message
            assert ", ".join(ACTOR_STATES) in message
        unknown_type = await api.http.get("/v1/actors", params={"type": "Nobody", "state": "idle"})
        status, kind, message = error_of(unknown_type)
        assert (status, kind) == (404, "unknown_actor_type")
        assert "this server hosts: Approval, Booking, Broken, Greeter" in message
        for state in ACTOR_STATES:  # every state it names is one it takes
            response = await api.http.get("/v1/actors", params={"state": state})
            assert response.status_code == 200, (state, response.text)
            assert {a["state"] for a in response.json()} <= {state}


def test_the_actor_states_are_the_ten_the_runtime_reports() -> None:
    assert ACTOR_STATES == (
        "idle",
        "running",
        "waiting-timer",
        "waiting-event",
        "waiting-retry",
        "retrying",
        "stuck",
        "held",
        "corrupt",
        "pending",
    )


# -- auth -------------------------------------------------------------------------------------

TOKEN = "s3cret-token"

#: Every endpoint but the health checks, with a request that succeeds given the token.
GUARDED = [
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
    ("GET", "/v1/actors", None),
    ("GET", "/v1/actors/Greeter/g", None),
    ("GET", "/v1/actors/Greeter/g/journal", None),
    ("POST", "/v1/actors/Greeter/g/messages/greet", {"name": "a"}),
    ("POST", "/v1/actors/Approval/g/events/decision", _ops_approves),
    ("GET", "/v1/actors/Greeter/g/invocations/0123456789abcdef01234567", None),
    ("POST", "/v1/actors/Greeter/g/invocations/0123456789abcdef01234567/cancel", None),
]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"],
    ids=["missing", "wrong", "basic-scheme", "empty", "longer"],
)
async def test_with_a_token_every_endpoint_but_the_health_checks_refuses_a_bad_one(
    authorization: str | None,
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with serving(token=TOKEN) as api:
        for method, path, body in GUARDED:
            response = await api.http.request(method, path, json=body, headers=headers)
            assert error_of(response)[:2] == (401, "unauthorized"), (method, path)
            assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)
        if authorization is None:
            assert "Authorization: Bearer <token>" in error_of(response)[2]
        livez = await api.http.get("/livez", headers=headers)
        assert livez.status_code == 200
        readyz = await api.http.get("/readyz", headers=headers)  # probes send no token
        assert (readyz.status_code, readyz.json()) == (200, {"status": "ready"})
        assert await api.runtime.list_actors() == []


async def test_with_the_right_token_every_endpoint_answers() -> None:
    async with serving(token=TOKEN, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        for method, path, body in GUARDED:
            response = await api.http.request(method, path, json=body)
            assert response.status_code != 401, (method, path, response.text)
            assert response.status_code < 500, (method, path, response.text)
        sent = await api.send("Greeter/g", "greet", {"name": "tok"}, params={"wait": "5"})
        assert sent.json()["result"] == "hello tok"


async def test_without_a_token_configured_no_header_is_needed() -> None:
    async with serving() as api:
        for method, path, body in GUARDED:
            response = await api.http.request(method, path, json=body)
            assert response.status_code != 401, (method, path, response.text)


# -- readiness and shutdown -------------------------------------------------------------------


async def test_readiness_fails_once_shutdown_begins_and_new_work_gets_503() -> None:
    async with serving(retry_after=7) as api:
        ready = await api.http.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        api.state.shutting_down.set()
        assert (await api.http.get("/readyz")).status_code == 503
        assert (await api.http.get("/livez")).status_code == 200
        send = await api.send("Greeter/g", "greet", {"name": "late"})
        assert error_of(send)[:2] == (503, "shutting_down")
        assert send.headers["retry-after"] == "7"
        deliver = await api.http.post("/v1/actors/Approval/a/events/decision", json={})
        assert error_of(deliver)[:2] == (503, "shutting_down")
        assert deliver.headers["retry-after"] == "7"
        assert (await api.http.get("/v1/actors/Greeter/g")).status_code == 200
        assert await api.runtime.list_actors() == []


#: Every endpoint but the health checks.
API = GUARDED
STARTING = "waiting for the journal lock on j.db, held by another process"


@contextlib.asynccontextmanager
async def app_of(state: ServerState, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app over ``state`` (which may have no runtime yet)."""
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://localhost", **options
    ) as http:
        yield http


async def test_before_the_runtime_is_ready_only_health_checks_answer() -> None:
    state = ServerState(retry_after=7)
    state.starting = STARTING
    async with app_of(state) as http:
        assert (await http.get("/livez")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "starting", "reason": STARTING}
        for method, path, body in API:
            response = await http.request(method, path, json=body)
            status, kind, message = error_of(response)
            assert (status, kind) == (503, "starting"), (method, path)
            assert f"not ready yet ({STARTING}); retry in 7 s" in message, (method, path)
            assert response.headers["retry-after"] == "7", (method, path)

        store = MemoryStore()
        async with Runtime(store, app_under_test.ACTORS, grace=1) as runtime:
            state.ready(runtime)
            assert (await http.get("/readyz")).json() == {"status": "ready"}
            for method, path, body in GUARDED:
                response = await http.request(method, path, json=body)
                assert response.status_code < 500, (method, path, response.text)
            sent = await http.post(
                "/v1/actors/Greeter/g/messages/greet", json={"name": "on"}, params={"wait": "5"}
            )
            assert sent.json()["result"] == "hello on"
        await store.close()


async def test_before_the_runtime_is_ready_a_token_is_still_required() -> None:
    state = ServerState(token=TOKEN)
    async with app_of(state) as http:
        assert (await http.get("/livez")).status_code == 200
        for method, path, body in GUARDED:
            response = await http.request(method, path, json=body)
            assert error_of(response)[:2] == (401, "unauthorized"), (method, path)
        ready = await http.get("/readyz")  # public: a probe sends no token
        assert (ready.status_code, ready.json()["status"]) == (503, "starting")


async def test_a_signal_before_the_runtime_is_ready_makes_refusals_say_shutting_down() -> None:
    state = ServerState()
    state.shutting_down.set()
    async with app_of(state) as http:
        assert (await http.get("/livez")).status_code == 200
        ready = await http.get("/readyz")
        assert (ready.status_code, ready.json()) == (503, {"status": "shutting down"})
        for method, path, body in API:
            response = await http.request(method, path, json=body)
            assert error_of(response)[:2] == (503, "shutting_down"), (method, path)


async def test_a_send_waiting_for_its_result_answers_when_shutdown_begins() -> None:
    async with serving() as api:
        answers: list[httpx.Response] = []

        async def send_and_wait() -> None:
            params = {"wait": "30"}
            answers.append(await api.send("Approval/a", "request", {"what": "x"}, params=params))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(send_and_wait)
                await reaches(api, "Approval/a", "waiting-event")
                api.state.shutting_down.set()
        [answer] = answers
        assert answer.status_code == 202
        assert answer.json()["state"] == "running"


async def test_a_stopped_runtime_refuses_sends_with_503_and_retry_after() -> None:
    async with serving() as api:
        await api.runtime.shutdown(0.5)
        send = await api.send("Greeter/g", "greet", {"name": "late"})
        assert error_of(send)[:2] == (503, "shutting_down")
        assert send.headers["retry-after"] == "5"


# -- metrics and the API document -------------------------------------------------------------


def _samples(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        samples[name] = float(value)
    return samples


async def test_metrics_are_prometheus_text_with_turns_and_commit_batches(
    tmp_path: pathlib.Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "journal.db")
    async with serving(store) as api:
        for name in ("a", "b", "c"):
            await api.send(f"Greeter/{name}", "greet", {"name": name}, params={"wait": "5"})
        response = await api.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert text.endswith("\n")
    for line in text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or _is_sample(line), line
    samples = _samples(text)
    assert samples["actorflow_turns_total"] >= 3
    version = source_version(app_under_test.Greeter)
    assert samples[f'actorflow_code_version_info{{type="Greeter",version="{version}"}}'] == 1
    assert samples["actorflow_steps_total"] >= 3
    assert samples["actorflow_journal_appends_total"] >= 1
    assert samples['actorflow_journal_commit_batch_records_bucket{le="+Inf"}'] >= 1
    assert samples["actorflow_journal_commit_batch_records_count"] >= 1
    assert samples["actorflow_journal_commits_total"] >= 1
    assert "actorflow_actors_active" in samples
    assert "actorflow_actors_stuck" in samples
    assert samples["actorflow_turn_duration_seconds_count"] >= 3
    assert "# TYPE actorflow_journal_commit_batch_records histogram" in text
    assert "# TYPE actorflow_turns_total counter" in text


def _is_sample(line: str) -> bool:
    return (
        re.fullmatch(r'[a-z_]+(\{[a-z]+="[^"]*"(,[a-z]+="[^"]*")*\})? -?[0-9.e+]+', line)
        is not None
    )


async def test_the_openapi_document_lists_each_handler_with_its_argument_schema() -> None:
    async with serving() as api:
        response = await api.http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"]
    schemas = document["components"]["schemas"]
    expected = {
        ("Greeter", "greet"): ({"name", "times"}, ["name"]),
        ("Approval", "request"): ({"what"}, ["what"]),
        ("Broken", "explode"): ({"reason"}, ["reason"]),
        ("Booking", "trip"): ({"destination"}, ["destination"]),
    }
    for (type_name, handler_name), (fields, required) in expected.items():
        path = f"/v1/actors/{type_name}/{{key}}/messages/{handler_name}"
        post = document["paths"][path]["post"]
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        schema = _resolve(document, schema)
        assert set(schema["properties"]) == fields, path
        assert sorted(schema.get("required", [])) == required, path
        assert {p["name"] for p in post["parameters"]} >= {"key", "wait", "Idempotency-Key"}
    greet = _resolve(
        document,
        document["paths"]["/v1/actors/Greeter/{key}/messages/greet"]["post"]["requestBody"][
            "content"
        ]["application/json"]["schema"],
    )
    assert greet["properties"]["name"]["type"] == "string"
    assert greet["properties"]["times"]["type"] == "integer"
    for path in ("/v1/actors", "/v1/actors/{type}/{key}", "/v1/actors/{type}/{key}/journal"):
        assert "get" in document["paths"][path]
    enum = {"type": "string", "enum": list(ACTOR_STATES)}
    query = {p["name"]: p for p in document["paths"]["/v1/actors"]["get"]["parameters"]}
    assert (query["state"]["in"], query["state"]["schema"]) == ("query", enum)
    assert query["type"]["in"] == "query"
    assert schemas["ActorStatus"]["properties"]["state"] == enum
    for ref in _refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


async def test_the_openapi_document_declares_every_path_parameter() -> None:
    async with serving() as api:
        document = (await api.http.get("/openapi.json")).json()
    for path, item in document["paths"].items():
        templated = set(re.findall(r"\{([^}]+)\}", path))
        for method, operation in item.items():
            declared = {
                p["name"]
                for p in [*item.get("parameters", []), *operation.get("parameters", [])]
                if p["in"] == "path" and p.get("required") is True
            }
            assert templated <= declared, (
                f"{method.upper()} {path} does not declare {templated - declared}"
            )


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = document["components"]["schemas"][name]
    return schema


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []
