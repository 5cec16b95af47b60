"""actorflow.integrations.pydantic_ai, streamed: a model request that pydantic-ai streams is
a `ctx.stream` step, so subscribers of the invocation's stream get the model's text as it
comes (and each finished tool call), a retried or re-executed request is superseded before
its new attempt streams, and the journaled value (hence replay) is what `ctx.run` journals.
Offline, with pydantic-ai's FunctionModel."""

from __future__ import annotations

import functools
import pathlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import (
    AgentStreamEvent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.tools import RunContext

import actorflow
from actorflow import Actor, handler
from actorflow._stream import StreamEvent
from actorflow.integrations.pydantic_ai import ActorflowDurability, run_agent
from actorflow.runtime._streams import follow
from tests.runtime.support import crashing, entries, reaches, running

pytestmark = pytest.mark.anyio

#: Longest a test may take: a model that never streams must fail it, not hang it.
DEADLINE = 20.0


def bounded(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> None:
        with anyio.fail_after(DEADLINE):
            await test(*args, **kwargs)

    return run


#: The model's calls, by what it was asked (how many tool results it had), across restarts.
calls: list[int] = []
#: Set by a test to let the model go on after its first text chunk.
gate: dict[str, anyio.Event] = {}
#: How the model misbehaves on its first text answer: "", "fail" or "stall".
mode: dict[str, str] = {"first": ""}

WORDS = ("It", " is", " sunny", " in", " Lyon.")
CALL = {"part_kind": "tool-call", "tool_name": "weather", "tool_call_id": "call-1"}


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    gate.clear()
    mode["first"] = ""


def tool_results(messages: list[ModelMessage]) -> int:
    return sum(
        isinstance(part, ToolReturnPart)
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
    )


async def weather_model(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    """Streams a call of the weather tool, then, given its result, the answer word by word."""
    done = tool_results(messages)
    calls.append(done)
    if not done:
        yield {0: DeltaToolCall("weather", None, tool_call_id="call-1")}
        yield {0: DeltaToolCall(None, '{"city": ')}
        yield {0: DeltaToolCall(None, '"Lyon"}')}
        return
    first_answer = calls.count(1) == 1
    for i, word in enumerate(WORDS):
        if i == 1 and "answer" in gate:
            await gate["answer"].wait()  # until the test saw the first word
        if i == 2 and first_answer and mode["first"] == "fail":
            raise ConnectionError("the model's stream broke")
        if i == 2 and first_answer and mode["first"] == "stall":
            await anyio.sleep_forever()  # until the crash
        yield word


def unstreamed_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """The same answers, whole."""
    done = tool_results(messages)
    calls.append(done)
    if not done:
        return ModelResponse(parts=[ToolCallPart("weather", {"city": "Lyon"}, "call-1")])
    return ModelResponse(parts=[TextPart("".join(WORDS))])


def weather_agent(**options: Any) -> Agent[None, str]:
    agent = Agent(
        FunctionModel(unstreamed_model, stream_function=weather_model),
        name="forecast",
        capabilities=[ActorflowDurability(**options)],
    )

    @agent.tool_plain
    def weather(city: str) -> str:
        return f"sunny in {city}"

    return agent


STREAMED = weather_agent(stream=True)
RETRIED = weather_agent(stream=True, model_retry=actorflow.Retry(initial=0, jitter=0))
PLAIN = weather_agent()
HANDLED: list[str] = []


async def first_event_only(ctx: RunContext[None], events: AsyncIterable[AgentStreamEvent]) -> None:
    async for event in events:
        HANDLED.append(type(event).__name__)
        return  # leaves the rest unread


IMPATIENT = weather_agent(event_stream_handler=first_event_only)


async def run_handler(ctx: RunContext[None], events: AsyncIterable[AgentStreamEvent]) -> None:
    async for event in events:
        HANDLED.append(type(event).__name__)


class Forecaster(Actor):
    @handler
    async def ask(self, question: str) -> str:
        return (await run_agent(self.ctx, STREAMED, question)).output

    @handler
    async def retried(self, question: str) -> str:
        return (await run_agent(self.ctx, RETRIED, question)).output

    @handler
    async def plain(self, question: str) -> str:
        return (await run_agent(self.ctx, PLAIN, question)).output

    @handler
    async def impatient(self, question: str) -> str:
        return (await run_agent(self.ctx, IMPATIENT, question)).output

    @handler
    async def handled(self, question: str) -> str:
        result = await run_agent(self.ctx, PLAIN, question, event_stream_handler=run_handler)
        await self.ctx.wait_for("done")
        return result.output


def summary(events: list[StreamEvent]) -> list[tuple[str, str, Any]]:
    """Each event with its data; of a tool call, its name, id and arguments; of a result,
    the kinds of the response's parts."""
    shown: list[tuple[str, str, Any]] = []
    for event in events:
        data = event.data
        if event.kind == "chunk" and isinstance(data, dict):
            data = {key: data[key] for key in CALL} | {"args": data["args"]}
        elif event.kind == "result":
            data = [part["part_kind"] for part in data["value"]["parts"]]
        shown.append((event.kind, event.id, data))
    return shown


def answer(attempt: int, words: tuple[str, ...] = WORDS) -> list[tuple[str, str, Any]]:
    return [("chunk", f"{attempt}:{i + 1}", word) for i, word in enumerate(words)]


def tool_call(attempt: int) -> list[tuple[str, str, Any]]:
    return [
        ("chunk", f"{attempt}:1", CALL | {"args": '{"city": "Lyon"}'}),
        ("result", f"{attempt}:2", ["tool-call"]),
    ]


ANSWER = "".join(WORDS)


@bounded
async def test_the_model_s_text_reaches_a_subscriber_live_and_the_result_is_unchanged(
    tmp_path: pathlib.Path,
) -> None:
    gate["answer"] = anyio.Event()
    journal = tmp_path / "journal.db"
    async with running(journal, [Forecaster]) as runtime:
        forecaster = runtime.ref(Forecaster, "f")
        invocation = await forecaster.send(Forecaster.ask, "weather?")
        seen: list[StreamEvent] = []
        async for batch in follow(runtime, invocation):
            seen.extend(batch)
            if any(e.data == "It" for e in seen) and not gate["answer"].is_set():
                assert seen[-1].data == "It"  # the model is still answering
                gate["answer"].set()
        assert await runtime.result(invocation) == ANSWER
        steps = [e.data["name"] for e in await entries(runtime, forecaster, "step")]
        values = [e.data["value"] for e in await entries(runtime, forecaster, "step")]
    assert summary(seen) == [
        *tool_call(1),
        *answer(2),
        ("result", "2:6", ["text"]),
        ("end", "end", {"state": "completed", "result": ANSWER}),
    ]
    assert steps == [
        "forecast__model.request_stream",
        "forecast__function_toolset__<agent>.call_tool:weather",
        "forecast__model.request_stream",
    ]
    # What was streamed as each attempt's result is what the step journaled.
    results = [e.data["value"] for e in seen if e.kind == "result"]
    assert results == [values[0], values[2]]
    assert calls == [0, 1]


@bounded
async def test_without_streaming_the_model_requests_are_plain_steps(tmp_path: pathlib.Path) -> None:
    async with running(tmp_path / "journal.db", [Forecaster]) as runtime:
        forecaster = runtime.ref(Forecaster, "p")
        invocation = await forecaster.send(Forecaster.plain, "weather?")
        seen = [event async for batch in follow(runtime, invocation) for event in batch]
        steps = [e.data["name"] for e in await entries(runtime, forecaster, "step")]
    assert [e.kind for e in seen] == ["end"]
    assert steps[0] == "forecast__model.request"


@bounded
async def test_a_retried_model_request_is_superseded_before_it_streams_again(
    tmp_path: pathlib.Path,
) -> None:
    mode["first"] = "fail"
    async with running(tmp_path / "journal.db", [Forecaster]) as runtime:
        invocation = await runtime.ref(Forecaster, "r").send(Forecaster.retried, "weather?")
        seen = [event async for batch in follow(runtime, invocation) for event in batch]
    failed = seen[len(tool_call(1)) + 2]
    assert (failed.kind, failed.id, failed.data["error"]["type"]) == (
        "failed",
        "2:3",
        "builtins.ConnectionError",
    )
    assert summary([e for e in seen if e is not failed]) == [
        *tool_call(1),
        *answer(2, WORDS[:2]),
        ("superseded", "3:0", {"attempt": 2, "by": 3, "step": "forecast__model.request_stream"}),
        *answer(3),
        ("result", "3:6", ["text"]),
        ("end", "end", {"state": "completed", "result": ANSWER}),
    ]
    assert calls == [0, 1, 1]


@bounded
async def test_a_model_request_re_made_after_a_crash_is_superseded_first(
    tmp_path: pathlib.Path,
) -> None:
    mode["first"] = "stall"
    journal = tmp_path / "journal.db"
    seen: list[StreamEvent] = []
    async with crashing(journal, [Forecaster]) as runtime:
        invocation = await runtime.ref(Forecaster, "c").send(Forecaster.ask, "weather?")
        async for batch in follow(runtime, invocation):
            seen.extend(batch)
            if len(seen) == len(tool_call(1)) + 2:  # two words of the answer, then it stalls
                break
    async with running(journal, [Forecaster]) as runtime:
        async for batch in follow(runtime, invocation, after=seen[-1].id):
            seen.extend(batch)
        assert await runtime.result(invocation) == ANSWER
    assert summary(seen) == [
        *tool_call(1),
        *answer(2, WORDS[:2]),
        ("superseded", "3:0", {"attempt": 2, "by": 3, "step": "forecast__model.request_stream"}),
        *answer(3),
        ("result", "3:6", ["text"]),
        ("end", "end", {"state": "completed", "result": ANSWER}),
    ]
    assert calls == [0, 1, 1]  # the tool call's request, journaled, was not made again


@bounded
async def test_a_run_level_event_stream_handler_streams_the_requests_too(
    tmp_path: pathlib.Path,
) -> None:
    HANDLED.clear()
    journal = tmp_path / "journal.db"
    async with running(journal, [Forecaster]) as runtime:
        forecaster = runtime.ref(Forecaster, "h")
        invocation = await forecaster.send(Forecaster.handled, "weather?")
        await reaches(forecaster, "waiting-event")
        steps = [e.data["name"] for e in await entries(runtime, forecaster, "step")]
    live = list(HANDLED)
    async with running(journal, [Forecaster]) as runtime:
        forecaster = runtime.ref(Forecaster, "h")
        await reaches(forecaster, "waiting-event")
        await forecaster.deliver("done", None)
        seen = [event async for batch in follow(runtime, invocation) for event in batch]
    assert steps[0] == "forecast__model.request_stream"
    assert [e.data for e in seen if e.kind == "chunk" and isinstance(e.data, str)] == list(WORDS)
    # pydantic-ai hands a run's own handler each response once its step has completed,
    # part by part (no deltas), and again when the turn is replayed.
    assert "PartDeltaEvent" not in live
    assert live.count("PartStartEvent") == 2
    assert [*live, *live] == HANDLED
    assert calls == [0, 1]


@bounded
async def test_what_the_capability_s_handler_leaves_unread_is_published_all_the_same(
    tmp_path: pathlib.Path,
) -> None:
    HANDLED.clear()
    async with running(tmp_path / "journal.db", [Forecaster]) as runtime:
        invocation = await runtime.ref(Forecaster, "i").send(Forecaster.impatient, "weather?")
        seen = [event async for batch in follow(runtime, invocation) for event in batch]
        assert await runtime.result(invocation) == ANSWER
    assert [e.data for e in seen if e.kind == "chunk" and isinstance(e.data, str)] == list(WORDS)
    assert HANDLED.count("PartStartEvent") == 2  # the first event of each request only
