"""An assistant that drafts an answer (a step), then waits for a human's approval: served by
a real `actorflow serve` in tests/server/test_query_serve.py, and queried while it waits.

Each draft appends a line to the file named by ``QUERY_APP_CALLS``, so a test counts the
step's executions across processes."""

from __future__ import annotations

import os

import msgspec

from actorflow import Actor, handler, query


class Conversation(msgspec.Struct):
    """The messages so far, and who approved the answer."""

    messages: list[str] = msgspec.field(default_factory=list)
    approved_by: str | None = None


def draft(question: str) -> str:
    with open(os.environ["QUERY_APP_CALLS"], "a") as calls:
        calls.write(f"draft {question}\n")
    return f"a draft answer to {question}"


class Assistant(Actor, state=Conversation):
    """Drafts, waits for approval, then answers."""

    @handler
    async def ask(self, question: str) -> str:
        """Draft an answer to ``question`` and return it once a human approves it."""
        self.state.messages.append(f"user: {question}")
        answer = await self.ctx.run(draft, question, name="draft")
        self.state.messages.append(f"assistant (draft): {answer}")
        by = await self.ctx.wait_for("approval", type=str)
        self.state.approved_by = by
        self.state.messages.append(f"approved by {by}")
        return answer

    @query
    def transcript(self, last: int = 100) -> list[str]:
        """The last ``last`` messages."""
        return self.state.messages[-last:]

    @query
    async def approver(self) -> str | None:
        """Who approved the answer, if anyone has."""
        return self.state.approved_by


ACTORS = [Assistant]
