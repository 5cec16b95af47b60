"""An agent written directly with the official ``openai`` SDK: a tool-calling loop in which
each chat completion and each tool call is a step.

The same dinner concierge as ``examples/pydantic_agent.py``, without a framework: the
handler asks the model, runs the tools it calls (``get_weather``, ``book_table``), and
asks again until it answers in text. It talks to the fake OpenAI server
(``examples/fake_openai.py``), so it runs offline. Needs ``pip install
'actorflow[openai]'``. Run it::

    python -m examples.fake_openai --port 8788 &     # the model
    actorflow serve examples.openai_agent           # the agent, on 127.0.0.1:8787
    actorflow send OpenAIConcierge/ana ask '{"question": "dinner in Lyon"}'
    actorflow invocations OpenAIConcierge/ana       # the answer
    # streamed: each completion is a ctx.stream step; watch the tokens as they come
    actorflow send OpenAIConcierge/bob ask '{"question": "dinner in Nice", "stream": true}'
    actorflow watch 'OpenAIConcierge/bob#...'       # the "invocation" send printed

A completion is journaled as the assistant message (a plain dict, as the SDK dumps it), so
the conversation kept in the actor's state is exactly what the next request sends.
Streamed, its chunks (``actorflow watch``, ``GET .../invocations/{id}/stream``,
``Client.stream``) are the text deltas as ``str`` and then each tool call the model made,
whole, as a dict; the journaled message is built from them (`assistant_message`). Kill the
server mid-run and start it again: no completed completion or tool call runs again
(``openai-calls.log``, ``python -m examples.llm_tools``), and a completion cut short is
streamed again after a ``superseded`` event.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import openai

import actorflow
from examples import llm_tools

BASE_URL = os.environ.get("ACTORFLOW_OPENAI_BASE_URL", "http://127.0.0.1:8788/v1")
MODEL = "fake-model"
#: Most completions one question may take before the agent gives up.
MAX_ROUNDS = 8

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    for name, description in (
        ("get_weather", "The weather in a city."),
        ("book_table", "Book a table for dinner in a city."),
    )
]


def get_weather(city: str) -> str:
    """The weather tool."""
    return llm_tools.get_weather(city)


def book_table(city: str, idempotency_key: str) -> str:
    """The booking tool; actorflow passes the step's idempotency key."""
    return llm_tools.book_table(city, idempotency_key)


TOOL_FUNCTIONS = {"get_weather": get_weather, "book_table": book_table}


async def chat_completion(messages: list[dict[str, Any]], idempotency_key: str) -> dict[str, Any]:
    """One chat completion: the assistant message, as a plain dict."""
    async with openai.AsyncOpenAI(base_url=BASE_URL, api_key="not-needed", max_retries=0) as client:
        completion = await client.chat.completions.create(
            model=MODEL,
            messages=messages,
            tools=TOOLS,
            extra_headers={"Idempotency-Key": idempotency_key},
        )
        return completion.choices[0].message.model_dump(mode="json", exclude_none=True)


async def streamed_completion(
    messages: list[dict[str, Any]], idempotency_key: str
) -> AsyncIterator[str | dict[str, Any]]:
    """One streamed chat completion, as the chunks of a ``ctx.stream`` step: the text
    deltas as they come (``str``), then each tool call the model made, whole (a dict in
    the message format), once the completion has ended. `assistant_message` builds the
    message from them."""
    async with openai.AsyncOpenAI(base_url=BASE_URL, api_key="not-needed", max_retries=0) as client:
        calls: dict[int, dict[str, Any]] = {}
        chunks = await client.chat.completions.create(
            model=MODEL,
            messages=messages,
            tools=TOOLS,
            extra_headers={"Idempotency-Key": idempotency_key},
            stream=True,
        )
        async for chunk in chunks:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            if delta.content:
                yield delta.content
            for part in delta.tool_calls or []:
                call = calls.setdefault(
                    part.index,
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                call["id"] = part.id or call["id"]
                if part.function is not None:
                    call["function"]["name"] += part.function.name or ""
                    call["function"]["arguments"] += part.function.arguments or ""
        for index in sorted(calls):
            yield calls[index]


def assistant_message(chunks: list[str | dict[str, Any]]) -> dict[str, Any]:
    """The assistant message a streamed completion's chunks make: the same dict as
    `chat_completion` returns for the same answer."""
    text = "".join(chunk for chunk in chunks if isinstance(chunk, str))
    calls = [chunk for chunk in chunks if isinstance(chunk, dict)]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return message


class Chat(msgspec.Struct):
    """The conversation so far, in the Chat Completions message format."""

    messages: list[dict[str, Any]] = []


class OpenAIConcierge(actorflow.Actor, state=Chat):
    """A tool-calling loop over the openai SDK, one step per completion and tool call."""

    @actorflow.handler
    async def ask(self, question: str, stream: bool = False) -> str:
        """Answer ``question``, calling tools as the model asks."""
        messages = [*self.state.messages, {"role": "user", "content": question}]
        for _ in range(MAX_ROUNDS):
            if stream:  # subscribers of the invocation's stream see the tokens as they come
                message = await self.ctx.stream(
                    streamed_completion, messages, name="chat", collect=assistant_message
                )
            else:
                message = await self.ctx.run(chat_completion, messages, name="chat")
            messages.append(message)
            calls = message.get("tool_calls") or []
            if not calls:
                self.state.messages = messages
                return str(message.get("content") or "")
            for call in calls:
                name = call["function"]["name"]
                args = json.loads(call["function"]["arguments"])
                tool = functools.partial(TOOL_FUNCTIONS[name], **args)
                result = await self.ctx.run(tool, name=name)
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
        raise actorflow.StepError(f"no answer after {MAX_ROUNDS} completions")


ACTORS = [OpenAIConcierge]
