"""Budgets over HTTP: the Actorflow-Budget header (hostile values are a 400 and nothing is
accepted), the budget endpoint, the client's budget=, /metrics by actor type, the CLI."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from actorflow import Actor, Budget, BudgetExceeded, Spend, handler
from actorflow.cli import main
from tests.server.support import error_of, nothing_accepted, serving
from tests.server.test_client import client_of

pytestmark = pytest.mark.anyio


def answer(question: str) -> int:
    return len(question)


class Asker(Actor):
    @handler
    async def ask(self, questions: list[str]) -> int:
        asked = 0
        for question in questions:
            try:
                await self.ctx.run(
                    answer,
                    question,
                    reserve=Spend(llm_calls=1, cost="USD 0.10"),
                    spend=lambda n: Spend(tokens=n, llm_calls=1, cost="USD 0.10"),
                )
            except BudgetExceeded:
                break
            asked += 1
        return asked


ASK = "/v1/actors/Asker/a/messages/ask"

HOSTILE = [
    pytest.param("tokens=-1", "whole number", id="negative"),
    pytest.param("tokens=1e3", "whole number", id="not-an-integer"),
    pytest.param("tokens=99999999999999999999", "whole number", id="huge"),
    pytest.param("tokens=1000000000000001", "between 0 and", id="over-the-largest"),
    pytest.param("wall_time=nan", "wall_time", id="nan"),
    pytest.param("wall_time=inf", "wall_time", id="infinite"),
    pytest.param("wall_time=-5", "wall_time", id="negative-time"),
    pytest.param("cost=usd 1", "currency", id="lower-case-currency"),
    pytest.param("cost=USD -1", "currency", id="negative-cost"),
    pytest.param("cost=EURO 1", "currency", id="bad-currency"),
    pytest.param("cost=USD 0.0000001", "at most 6 decimals", id="sub-micro"),
    pytest.param("gold=5", "a name among", id="unknown-dimension"),
    pytest.param("tokens=5; tokens=6", "twice", id="twice"),
    pytest.param("tokens", "name=value", id="no-value"),
    pytest.param("", "at least one", id="empty"),
    pytest.param("tokens=1;" * 200, "short text", id="too-long"),
]


@pytest.mark.parametrize(("header", "why"), HOSTILE)
async def test_a_budget_header_it_cannot_take_is_400_and_nothing_is_accepted(
    header: str, why: str
) -> None:
    async with serving(actors=[Asker]) as api:
        response = await api.send(
            "Asker/a", "ask", {"questions": ["q"]}, headers={"Actorflow-Budget": header}
        )
        status, kind, message = error_of(response)
        assert (status, kind) == (400, "invalid_budget"), message
        assert why in message
        await nothing_accepted(api)


async def test_the_budget_endpoint_shows_spent_and_remaining() -> None:
    async with serving(actors=[Asker]) as api:
        response = await api.send(
            "Asker/a",
            "ask",
            {"questions": ["one", "three", "x"]},
            params={"wait": "5"},
            headers={"Actorflow-Budget": "cost=USD 0.25; tokens=100"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["result"] == 2
        invocation = response.json()["invocation"]
        actor, _, tail = invocation.rpartition("#")
        shown = await api.http.get(f"/v1/actors/{actor}/invocations/{tail}/budget")
        assert shown.status_code == 200, shown.text
        body = shown.json()
        assert body["limit"] == {"cost": "USD 0.25", "tokens": 100}
        assert body["spent"] == {"tokens": 8, "cost": "USD 0.2", "llm_calls": 2}
        assert body["remaining"] == {"tokens": 92, "cost": "USD 0.05"}
        assert body["holds"] == 0
        metrics = (await api.http.get("/metrics")).text
        assert 'actorflow_budget_spent_total{type="Asker",dimension="tokens"} 8' in metrics
        assert 'actorflow_budget_spent_total{type="Asker",dimension="cost_USD"} 200000' in metrics
        assert 'actorflow_budget_refusals_total{type="Asker",dimension="cost"} 1' in metrics
        assert invocation not in metrics  # labels by actor type, never by invocation


async def test_an_invocation_without_a_budget_has_no_budget_endpoint_answer() -> None:
    async with serving(actors=[Asker]) as api:
        response = await api.send("Asker/a", "ask", {"questions": ["q"]}, params={"wait": "5"})
        actor, _, tail = response.json()["invocation"].rpartition("#")
        shown = await api.http.get(f"/v1/actors/{actor}/invocations/{tail}/budget")
        assert error_of(shown)[:2] == (404, "no_budget")


async def test_the_client_sends_a_budget_and_reads_it_back() -> None:
    async with serving(actors=[Asker]) as api, client_of(api) as client:
        budget = Budget(llm_calls=1, wall_time=600)
        status = await client.send("Asker/c", "ask", {"questions": ["a", "b"]}, budget=budget)
        assert await client.result(status.invocation, timeout=5) == 1
        shown = await client.budget(status.invocation)
        assert shown.limit == budget
        assert shown.spent == Spend(tokens=1, cost="USD 0.1", llm_calls=1)
        assert shown.remaining == {"llm_calls": 0}


def test_the_cli_refuses_a_budget_it_cannot_parse_before_sending() -> None:
    result = CliRunner().invoke(
        main, ["send", "Asker/a", "ask", "{}", "--budget", "tokens=-1", "--url", "http://x"]
    )
    assert result.exit_code == 2
    assert "whole number" in result.output
