"""The API tells the truth: a reused Idempotency-Key with another body is a 422, a stuck
actor answers 409 with its error, too many pending events 429, a journal that cannot
write 503; an actor lists its invocations, and an operator retries a failed one."""

from __future__ import annotations

import pathlib

import pytest

from actorflow import Actor, handler
from journal import SqliteStore
from tests.server.app_under_test import BROKEN_TOOLS, reset
from tests.server.support import reaches, serving

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _reset() -> None:
    reset()


async def test_a_reused_idempotency_key_with_another_body_is_422() -> None:
    async with serving() as api:
        key = {"Idempotency-Key": "order-7"}
        first = await api.send("Greeter/g", "greet", {"name": "ana", "times": 2}, headers=key)
        again = await api.send("Greeter/g", "greet", {"times": 2, "name": "ana"}, headers=key)
        other = await api.send("Greeter/g", "greet", {"name": "bob"}, headers=key)
    assert first.status_code in (200, 202)
    assert again.json()["invocation"] == first.json()["invocation"]
    assert other.status_code == 422
    error = other.json()["error"]
    assert error["type"] == "idempotency_key_reused"
    assert "'order-7'" in error["message"]
    assert first.json()["invocation"] in error["message"]


class Before(Actor, name="Flip"):
    @handler
    async def go(self) -> str:
        await self.ctx.sleep(3600)
        return "old"


class After(Actor, name="Flip"):
    @handler
    async def go(self) -> str:
        await self.ctx.wait_for("never")  # not what the journal holds
        return "new"


async def test_a_stuck_actor_answers_409_with_its_error(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "journal.db"
    async with serving(await SqliteStore.open(db), actors=[Before]) as api:
        sent = await api.send("Flip/k", "go")
        invocation = sent.json()["invocation"]
        await reaches(api, "Flip/k", "waiting-timer")
    async with serving(await SqliteStore.open(db), actors=[After]) as api:
        await reaches(api, "Flip/k", "stuck")
        tail = invocation.rpartition("#")[2]
        answers = [
            await api.send("Flip/k", "go"),
            await api.http.post("/v1/actors/Flip/k/events/never", json=1),
            await api.http.post(f"/v1/actors/Flip/k/invocations/{tail}/cancel"),
            await api.http.get(f"/v1/actors/Flip/k/invocations/{tail}", params={"wait": "2"}),
        ]
        status = (await api.http.get("/v1/actors/Flip/k")).json()
    for answer in answers[:3]:
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"]["type"] == "actor_stuck"
        assert "non-deterministic replay" in answer.json()["error"]["message"]
    assert answers[3].status_code == 409, answers[3].text
    assert status["state"] == "stuck"
    assert "non-deterministic replay" in status["error"]


async def test_too_many_pending_events_is_429_with_retry_after() -> None:
    async with serving(runtime_options={"max_pending_events": 2}) as api:
        answers = [
            await api.http.post("/v1/actors/Approval/a/events/decision", json={"n": n})
            for n in range(3)
        ]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[2].json()["error"]["type"] == "too_many_pending_events"
    assert answers[2].headers["Retry-After"]


async def test_a_journal_that_cannot_write_is_503_with_retry_after() -> None:
    async with serving() as api:
        await api.runtime.store.close()
        answer = await api.send("Greeter/g", "greet", {"name": "x"})
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["type"] == "journal_unavailable"
    assert answer.headers["Retry-After"]


async def test_an_actor_lists_its_invocations_and_an_operator_retries_a_failed_one() -> None:
    BROKEN_TOOLS.add("search")
    async with serving() as api:
        sent = await api.send(
            "Pipeline/p", "run", {"tools": ["plan", "search"]}, params={"wait": "5"}
        )
        assert sent.json()["state"] == "failed"
        invocation = sent.json()["invocation"]
        listed = (await api.http.get("/v1/actors/Pipeline/p/invocations")).json()
        assert [(i["invocation"], i["state"], i["retryable"]) for i in listed] == [
            (invocation, "failed", True)
        ]
        BROKEN_TOOLS.clear()  # the tool is back
        tail = invocation.rpartition("#")[2]
        retried = await api.http.post(f"/v1/actors/Pipeline/p/invocations/{tail}/retry")
        assert retried.status_code == 202, retried.text
        done = await api.http.get(f"/v1/actors/Pipeline/p/invocations/{tail}", params={"wait": "5"})
        again = await api.http.post(f"/v1/actors/Pipeline/p/invocations/{tail}/retry")
        listed = (await api.http.get("/v1/actors/Pipeline/p/invocations")).json()
    assert (done.json()["state"], done.json()["result"]) == ("completed", ["plan ok", "search ok"])
    assert again.status_code == 409
    assert again.json()["error"]["type"] == "not_retryable"
    assert [(i["invocation"], i["state"]) for i in listed] == [(invocation, "completed")]


async def test_listing_the_invocations_of_an_unknown_actor_type_is_404() -> None:
    async with serving() as api:
        answer = await api.http.get("/v1/actors/Nobody/k/invocations")
    assert answer.status_code == 404
