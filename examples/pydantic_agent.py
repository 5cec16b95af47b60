"""A pydantic-ai agent hosted in an actor: each model request and tool call is a step.

The ``Concierge`` agent answers dinner questions with two tools: ``get_weather`` and
``book_table``, which needs a human's approval (``requires_approval=True``). Its model is
pydantic-ai's OpenAI model pointed at the fake OpenAI server (``examples/fake_openai.py``),
so it runs offline. Needs ``pip install 'actorflow[pydantic-ai]'``. Run it::

    python -m examples.fake_openai --port 8788 &      # the model
    actorflow serve examples.pydantic_agent          # the agent, on 127.0.0.1:8787
    actorflow send Concierge/ana ask '{"question": "dinner in Lyon"}'
    actorflow status Concierge/ana                   # waiting-event: the booking awaits approval
    actorflow deliver Concierge/ana approval '{"approved": true, "by": "ana"}'
    actorflow invocations Concierge/ana              # the answer
    actorflow watch 'Concierge/ana#...'     # the "invocation" send printed: as it streams

Each model request is streamed (``ActorflowDurability(stream=True)``): subscribers of the
invocation's stream (``actorflow watch``, ``GET .../invocations/{id}/stream``,
``Client.stream``) get the answer's text as it comes and each tool call the model makes,
whole, as JSON; the journal keeps each response as a step, as without streaming.

Kill the server mid-run (``kill -9``) and start it again: the run continues at the step it
reached; ``openai-calls.log`` (the fake server's) and ``python -m examples.llm_tools`` show
that no completed model request or tool call ran again. ``ACTORFLOW_OPENAI_BASE_URL``
points the agent at another server.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec
import openai
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import actorflow
from actorflow.integrations.pydantic_ai import (
    ActorflowDurability,
    ToolApproval,
    dump_messages,
    idempotency_key,
    load_messages,
    run_agent,
)
from examples import llm_tools

BASE_URL = os.environ.get("ACTORFLOW_OPENAI_BASE_URL", "http://127.0.0.1:8788/v1")


def build_agent(client: openai.AsyncOpenAI | None = None) -> Agent[None, str]:
    """The concierge agent, talking to the OpenAI-compatible server at `BASE_URL` (or
    through ``client``)."""
    provider = (
        OpenAIProvider(openai_client=client)
        if client is not None
        else OpenAIProvider(base_url=BASE_URL, api_key="not-needed")
    )
    model = OpenAIChatModel("fake-model", provider=provider)
    agent = Agent(
        model,
        name="concierge",
        instructions="You help people plan dinner. Check the weather, then book a table.",
        # stream=True: each model request is streamed to the invocation's subscribers.
        capabilities=[ActorflowDurability(approval_event="approval", stream=True)],
    )

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return llm_tools.get_weather(city)

    @agent.tool_plain(requires_approval=True)
    def book_table(city: str) -> str:
        """Book a table for dinner in a city (a person approves it first)."""
        # The step's key: a call re-run after a crash books nothing more.
        return llm_tools.book_table(city, idempotency_key())

    return agent


AGENT = build_agent()


class Conversation(msgspec.Struct):
    """The messages so far, as pydantic-ai's own adapter dumps them."""

    messages: list[dict[str, Any]] = []


class Concierge(actorflow.Actor, state=Conversation, events={"approval": ToolApproval}):
    """A pydantic-ai agent per key; the conversation goes on from one question to the next."""

    @actorflow.handler
    async def ask(self, question: str) -> str:
        """Answer ``question``, booking a table once a person approves it."""
        history = load_messages(self.state.messages)
        result = await run_agent(self.ctx, AGENT, question, message_history=history)
        self.state.messages = dump_messages(result.all_messages())
        return result.output


ACTORS = [Concierge]
