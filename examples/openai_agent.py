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
    # the same with a streamed completion (the step's result is the assembled message)
    actorflow send OpenAIConcierge/bob ask '{"question": "dinner in Nice", "stream": true}'

A completion is journaled as the assistant message (a plain dict, as the SDK dumps it), so
the conversation kept in the actor's state is exactly what the next request sends. Kill
the server mid-run and start it again: no completed completion or tool call runs again
(``openai-calls.log``, ``python -m examples.llm_tools``).
"""

from __future__ import annotations

import functools
import json
import os
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


async def chat_completion(
    messages: list[dict[str, Any]], stream: bool, idempotency_key: str
) -> dict[str, Any]:
    """One chat completion: the assistant message, as a plain dict.

    Streamed, the chunks are assembled here into the same message; this loop is where a
    durable token stream would hand each chunk to subscribers as it arrives.
    """
    async with openai.AsyncOpenAI(base_url=BASE_URL, api_key="not-needed", max_retries=0) as client:
        headers = {"Idempotency-Key": idempotency_key}
        if not stream:
            completion = await client.chat.completions.create(
                model=MODEL, messages=messages, tools=TOOLS, extra_headers=headers
            )
            return completion.choices[0].message.model_dump(mode="json", exclude_none=True)
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        chunks = await client.chat.completions.create(
            model=MODEL, messages=messages, tools=TOOLS, extra_headers=headers, stream=True
        )
        async for chunk in chunks:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            text.append(delta.content or "")
            for part in delta.tool_calls or []:
                call = calls.setdefault(
                    part.index,
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                call["id"] = part.id or call["id"]
                if part.function is not None:
                    call["function"]["name"] += part.function.name or ""
                    call["function"]["arguments"] += part.function.arguments or ""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
        if calls:
            message["tool_calls"] = [calls[index] for index in sorted(calls)]
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
            message = await self.ctx.run(chat_completion, messages, stream, name="chat")
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
