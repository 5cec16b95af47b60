"""actorflow.integrations.pydantic_ai: a pydantic-ai agent hosted in an actor journals each
model request and tool call as a step, replays them without calling the model or the tools
again, and takes approvals of tool calls as events. Offline, with pydantic-ai's own
FunctionModel and TestModel."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import anyio
import msgspec
import pytest
from pydantic_ai import Agent, ModelRetry
from pydantic_ai.messages import (
    AgentStreamEvent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.tools import RunContext

import actorflow
from actorflow import Actor, handler
from actorflow.integrations.pydantic_ai import (
    ActorflowDurability,
    ToolApproval,
    dump_messages,
    idempotency_key,
    load_messages,
    run_agent,
)
from tests.runtime.support import crashing, entries, reaches, running

pytestmark = pytest.mark.anyio

#: What the model and the tools were called with, in order, across restarts.
calls: list[tuple[str, Any]] = []
#: Set to let the slow tool finish (a tool still running at a crash is left waiting).
release = anyio.Event()
#: Set by the slow tool when it starts.
started = anyio.Event()


@pytest.fixture(autouse=True)
def _reset() -> None:
    global release, started
    calls.clear()
    release, started = anyio.Event(), anyio.Event()


def returns(messages: list[ModelMessage]) -> list[ToolReturnPart]:
    return [
        part
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    ]


def dinner_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Check the weather, then book a table, then answer with what the tools said."""
    done = returns(messages)
    calls.append(("model", len(done)))
    if not done:
        return ModelResponse(parts=[ToolCallPart("weather", {"city": "Lyon"}, "call-1")])
    if len(done) == 1:
        return ModelResponse(parts=[ToolCallPart("book", {"city": "Lyon"}, "call-2")])
    return ModelResponse(parts=[TextPart(" / ".join(str(part.content) for part in done))])


def dinner_agent(**options: Any) -> Agent[None, str]:
    agent = Agent(
        FunctionModel(dinner_model),
        name="dinner",
        capabilities=[ActorflowDurability(tool_retry=actorflow.NO_RETRY, **options)],
    )

    @agent.tool_plain
    def weather(city: str) -> str:
        calls.append(("weather", city))
        return f"sunny in {city}"

    @agent.tool_plain(requires_approval=True)
    def book(city: str) -> str:
        calls.append(("book", idempotency_key()))
        return f"booked in {city}"

    return agent


AGENT = dinner_agent()


class Diner(Actor):
    @handler
    async def ask(self, question: str) -> str:
        result = await run_agent(self.ctx, AGENT, question)
        return result.output


async def test_each_model_request_and_tool_call_is_a_step_and_replay_repeats_none(
    tmp_path: pathlib.Path,
) -> None:
    journal = tmp_path / "journal.db"
    async with running(journal, [Diner]) as runtime:
        diner = runtime.ref(Diner, "ana")
        invocation = await diner.send(Diner.ask, "dinner?")
        await reaches(diner, "waiting-event")  # the booking waits for its approval
    before = list(calls)
    assert before == [("model", 0), ("weather", "Lyon"), ("model", 1)]

    async with running(journal, [Diner]) as runtime:  # a restart: the turn is replayed
        diner = runtime.ref(Diner, "ana")
        await reaches(diner, "waiting-event")
        assert calls == before  # neither the model nor a tool was called again
        await diner.deliver("approval", {"approved": {"call-2": True}, "by": "ana"})
        assert await runtime.result(invocation) == "sunny in Lyon / booked in Lyon"
        steps = [entry.data["name"] for entry in await entries(runtime, diner, "step")]

    (book,) = [value for kind, value in calls if kind == "book"]
    assert book.endswith(":Diner/ana/t1/s6")  # the tool got its step's idempotency key
    assert calls == [*before, ("book", book), ("model", 2)]
    assert steps == [
        "dinner__model.request",
        "dinner__function_toolset__<agent>.call_tool:weather",
        "dinner__model.request",
        "approval-requested:approval",
        "approval",
        "dinner__function_toolset__<agent>.call_tool:book",
        "dinner__model.request",
    ]


async def test_a_denied_call_is_not_made_and_the_model_is_told_why(tmp_path: pathlib.Path) -> None:
    async with running(tmp_path / "journal.db", [Diner]) as runtime:
        diner = runtime.ref(Diner, "bob")
        invocation = await diner.send(Diner.ask, "dinner?")
        await reaches(diner, "waiting-event")
        await diner.deliver("approval", {"approved": False, "message": "not tonight"})
        assert await runtime.result(invocation) == "sunny in Lyon / not tonight"
    assert [kind for kind, _ in calls] == ["model", "weather", "model", "model"]


async def test_a_map_of_decisions_denies_the_calls_it_leaves_out(tmp_path: pathlib.Path) -> None:
    async with running(tmp_path / "journal.db", [Diner]) as runtime:
        diner = runtime.ref(Diner, "eve")
        invocation = await diner.send(Diner.ask, "dinner?")
        await reaches(diner, "waiting-event")
        await diner.deliver("approval", {"approved": {"call-other": True}})
        assert await runtime.result(invocation) == "sunny in Lyon / The tool call was denied."
    assert "book" not in [kind for kind, _ in calls]


QUICK = dinner_agent(approval_timeout=0.05)


class Impatient(Actor):
    @handler
    async def ask(self, question: str) -> str:
        return (await run_agent(self.ctx, QUICK, question)).output


async def test_no_decision_in_time_denies_the_call(tmp_path: pathlib.Path) -> None:
    async with running(tmp_path / "journal.db", [Impatient]) as runtime:
        result = await runtime.ref(Impatient, "x").call(Impatient.ask, "dinner?")
    assert result == "sunny in Lyon / No decision arrived within 0.05 s."


async def slow_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    if not returns(messages):
        return ModelResponse(parts=[ToolCallPart("slow", {}, "call-1")])
    return ModelResponse(parts=[TextPart(str(returns(messages)[0].content))])


SLOW = Agent(FunctionModel(slow_model), name="slow", capabilities=[ActorflowDurability()])


@SLOW.tool_plain
async def slow() -> str:
    with contextlib.suppress(actorflow.ActorflowError):  # not run by an actor: no key
        calls.append(("slow", idempotency_key()))
    started.set()
    await release.wait()
    return "done"


class Sloth(Actor):
    @handler
    async def ask(self, question: str) -> str:
        return (await run_agent(self.ctx, SLOW, question)).output


async def test_a_tool_call_in_flight_at_a_crash_runs_again_under_the_same_key(
    tmp_path: pathlib.Path,
) -> None:
    journal = tmp_path / "journal.db"
    async with crashing(journal, [Sloth]) as runtime:
        invocation = await runtime.ref(Sloth, "s").send(Sloth.ask, "go")
        await started.wait()
    release.set()
    async with running(journal, [Sloth]) as runtime:
        assert await runtime.result(invocation) == "done"
    assert [kind for kind, _ in calls] == ["slow", "slow"]
    assert calls[0][1] == calls[1][1]


async def test_a_failed_tool_call_fails_the_run_with_its_error(tmp_path: pathlib.Path) -> None:
    def broken_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart("explode", {}, "call-1")])

    agent = Agent(
        FunctionModel(broken_model),
        name="broken",
        capabilities=[ActorflowDurability(tool_retry=actorflow.NO_RETRY)],
    )

    @agent.tool_plain
    def explode() -> str:
        calls.append(("explode", None))
        raise ValueError("the tool broke")

    class Breaker(Actor):
        @handler
        async def ask(self, question: str) -> str:
            return (await run_agent(self.ctx, agent, question)).output

    async with running(tmp_path / "journal.db", [Breaker]) as runtime:
        with pytest.raises(actorflow.HandlerFailed, match="the tool broke"):
            await runtime.ref(Breaker, "b").call(Breaker.ask, "go")
    assert calls == [("explode", None)]


async def test_test_model_calls_every_tool_each_as_a_step(tmp_path: pathlib.Path) -> None:
    agent = Agent(TestModel(), name="tested", capabilities=[ActorflowDurability()])

    @agent.tool_plain
    def first(x: int) -> str:
        calls.append(("first", x))
        return "one"

    @agent.tool_plain
    def second(y: str) -> str:
        calls.append(("second", y))
        return "two"

    class Tested(Actor):
        @handler
        async def ask(self, question: str) -> str:
            return (await run_agent(self.ctx, agent, question)).output

    async with running(tmp_path / "journal.db", [Tested]) as runtime:
        tested = runtime.ref(Tested, "t")
        output = await tested.call(Tested.ask, "go")
        steps = [entry.data["name"] for entry in await entries(runtime, tested, "step")]
    assert "one" in output
    assert "two" in output
    assert sorted(kind for kind, _ in calls) == ["first", "second"]
    assert sorted(steps) == sorted(
        [
            "tested__model.request",
            "tested__function_toolset__<agent>.call_tool:first",
            "tested__function_toolset__<agent>.call_tool:second",
            "tested__model.request",
        ]
    )


async def test_outside_run_agent_the_agent_is_a_plain_pydantic_ai_agent() -> None:
    release.set()
    assert (await SLOW.run("go")).output == "done"  # no actor, no journal: runs as usual
    assert [kind for kind, _ in calls] == []  # its tool found no step key to take
    with pytest.raises(actorflow.ActorflowError, match="only defined inside a tool call"):
        idempotency_key()


async def test_run_agent_refuses_an_agent_it_would_not_journal(tmp_path: pathlib.Path) -> None:
    plain = Agent(FunctionModel(dinner_model), name="plain")

    class Careless(Actor):
        @handler
        async def ask(self, question: str) -> str:
            return (await run_agent(self.ctx, plain, question)).output

    async with running(tmp_path / "journal.db", [Careless]) as runtime:
        with pytest.raises(actorflow.HandlerFailed, match="no ActorflowDurability capability"):
            await runtime.ref(Careless, "c").call(Careless.ask, "go")
    assert calls == []  # the model was never asked


def test_a_conversation_keeps_as_plain_values_and_comes_back_whole() -> None:
    messages: list[ModelMessage] = [
        ModelRequest.user_text_prompt("dinner?"),
        ModelResponse(parts=[ToolCallPart("weather", {"city": "Lyon"}, "call-1")]),
    ]
    kept = msgspec.json.decode(msgspec.json.encode(dump_messages(messages)))
    assert load_messages(kept) == messages


def test_an_approval_payload_is_validated() -> None:
    assert msgspec.convert({"approved": True}, ToolApproval).approved is True
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"approve": True}, ToolApproval)


async def streamed_answer(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    calls.append(("model", len(messages)))
    for word in ("it", " is", " sunny"):
        yield word


STREAMING_EVENTS: list[str] = []


async def collect(ctx: RunContext[None], events: AsyncIterable[AgentStreamEvent]) -> None:
    async for event in events:
        STREAMING_EVENTS.append(type(event).__name__)


STREAMER = Agent(
    FunctionModel(stream_function=streamed_answer),
    name="streamer",
    capabilities=[ActorflowDurability(event_stream_handler=collect)],
)


class Streamer(Actor):
    @handler
    async def ask(self, question: str) -> str:
        result = await run_agent(self.ctx, STREAMER, question)
        await self.ctx.wait_for("done")
        return result.output


async def test_model_events_reach_the_event_stream_handler_live_and_not_on_replay(
    tmp_path: pathlib.Path,
) -> None:
    STREAMING_EVENTS.clear()
    journal = tmp_path / "journal.db"
    async with running(journal, [Streamer]) as runtime:
        streamer = runtime.ref(Streamer, "s")
        invocation = await streamer.send(Streamer.ask, "weather?")
        await reaches(streamer, "waiting-event")
    live = list(STREAMING_EVENTS)
    assert "PartStartEvent" in live
    assert live.count("PartDeltaEvent") == 2  # " is", " sunny": streamed inside the step
    async with running(journal, [Streamer]) as runtime:
        streamer = runtime.ref(Streamer, "s")
        await reaches(streamer, "waiting-event")
        await streamer.deliver("done", None)
        assert await runtime.result(invocation) == "it is sunny"
    assert calls == [("model", 1)]  # the replay did not ask (or stream) again
    assert STREAMING_EVENTS[: len(live)] == live
    assert "PartDeltaEvent" not in STREAMING_EVENTS[len(live) :]


async def test_an_agent_run_inside_a_tool_is_part_of_that_tool_s_step(
    tmp_path: pathlib.Path,
) -> None:
    inner = Agent(
        FunctionModel(lambda messages, info: ModelResponse(parts=[TextPart("inner answer")])),
        name="inner",
        capabilities=[ActorflowDurability()],
    )
    outer = Agent(FunctionModel(slow_model), name="outer", capabilities=[ActorflowDurability()])

    @outer.tool_plain
    async def slow() -> str:  # the name slow_model calls
        calls.append(("inner", None))
        return (await inner.run("go")).output

    class Delegator(Actor):
        @handler
        async def ask(self, question: str) -> str:
            return (await run_agent(self.ctx, outer, question)).output

    async with running(tmp_path / "journal.db", [Delegator]) as runtime:
        delegator = runtime.ref(Delegator, "d")
        assert await delegator.call(Delegator.ask, "go") == "inner answer"
        steps = [entry.data["name"] for entry in await entries(runtime, delegator, "step")]
    assert steps == [
        "outer__model.request",
        "outer__function_toolset__<agent>.call_tool:slow",
        "outer__model.request",
    ]


async def test_a_model_retry_from_a_tool_is_journaled_as_its_result(tmp_path: pathlib.Path) -> None:
    def retrying_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) < 5:
            return ModelResponse(parts=[ToolCallPart("picky", {}, f"call-{len(messages)}")])
        return ModelResponse(parts=[TextPart("settled")])

    agent = Agent(
        FunctionModel(retrying_model), name="retrying", capabilities=[ActorflowDurability()]
    )

    @agent.tool_plain
    def picky() -> str:
        calls.append(("picky", None))
        if len(calls) == 1:
            raise ModelRetry("ask again")
        return "fine"

    class Retrier(Actor):
        @handler
        async def ask(self, question: str) -> str:
            return (await run_agent(self.ctx, agent, question)).output

    async with running(tmp_path / "journal.db", [Retrier]) as runtime:
        retrier = runtime.ref(Retrier, "r")
        assert await retrier.call(Retrier.ask, "go") == "settled"
        tool_steps = [
            entry.data["value"]
            for entry in await entries(runtime, retrier, "step")
            if "call_tool" in entry.data["name"]
        ]
    assert tool_steps == [
        {"kind": "model_retry", "message": "ask again"},
        {"kind": "tool_return", "result": "fine"},
    ]
