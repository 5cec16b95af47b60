"""The agents `tests.crash.test_budget_crash` serves with `actorflow serve`: a lead that
fans out to parallel sub-agents, each asking the fake OpenAI server questions of random
length until its tree's budget says no.

Each model call is a step that reserves an upper bound of its tokens (the fake server's
usage is a quarter of the characters of the request's messages and of the answer, which
quotes the question) and settles the ``usage`` of the answer. It sends the step's
idempotency key, so a call re-executed after a SIGKILL is applied (counted) once by the
server.
"""

from __future__ import annotations

import os
import string

import httpx
import msgspec

from actorflow import Actor, Budget, BudgetExceeded, Spend, handler

#: Where the fake OpenAI server listens (``.../v1``).
BASE_URL = os.environ.get("ACTORFLOW_OPENAI_BASE_URL", "http://127.0.0.1:8788/v1")


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(msgspec.Struct):
    id: str
    usage: Usage


def upper_bound(question: str) -> int:
    """Tokens the fake server counts for ``question``, at most (ASCII letters only)."""
    return (2 * len(question) + 200) // 4


def ask_model(question: str, idempotency_key: str) -> Completion:
    """One Chat Completions request, keyed so that a retry is applied once."""
    body = {"model": "fake", "messages": [{"role": "user", "content": question}]}
    response = httpx.post(
        f"{BASE_URL}/chat/completions",
        json=body,
        headers={"Idempotency-Key": idempotency_key},
        timeout=30,
    )
    response.raise_for_status()
    return msgspec.json.decode(response.content, type=Completion)


def spent(completion: Completion) -> Spend:
    """What a completion cost: its usage, one LLM call."""
    return Spend(tokens=completion.usage.total_tokens, llm_calls=1)


class SubAgent(Actor):
    """Asks questions of random length until its tree's budget refuses one."""

    @handler
    async def research(self, questions: int) -> int:
        """Ask up to ``questions`` questions; return how many were answered."""
        answered = 0
        for _ in range(questions):
            size = 20 + int(self.ctx.random() * 400)
            letters = string.ascii_letters
            question = "".join(letters[int(self.ctx.random() * 52)] for _ in range(size))
            try:
                await self.ctx.run(
                    ask_model,
                    question,
                    reserve=Spend(tokens=upper_bound(question), llm_calls=1),
                    spend=spent,
                )
            except BudgetExceeded:
                break  # finish gracefully with what it has
            answered += 1
        return answered


class Lead(Actor):
    """Fans out to parallel sub-agents, which spend from the lead's budget (the first
    from a sub-budget carved out of it, when ``carve`` is given)."""

    @handler
    async def run(self, helpers: int, questions: int, carve: str = "") -> int:
        """Run ``helpers`` sub-agents in parallel; return the answers they got."""
        calls = []
        for n in range(helpers):
            ref = self.ctx.ref(SubAgent, f"{self.key}-{n}")
            if n == 0 and carve:
                budget = Budget.parse(carve)
                calls.append(self.ctx.call(ref, SubAgent.research, questions, budget=budget))
            else:
                calls.append(self.ctx.call(ref, SubAgent.research, questions))
        try:
            answers: list[int] = await self.ctx.gather(*calls)
        except BudgetExceeded:  # the carve did not fit: nothing was sent
            return 0
        return sum(answers)


ACTORS = [Lead, SubAgent]
