"""pydantic-ai agents, durably: every model request and tool call of a run is a journaled step.

Attach `ActorflowDurability` to an agent and run the agent from an actor's handler with
`run_agent` (see docs/pydantic-ai.md)::

    agent = Agent(model, name="support", tools=[lookup], capabilities=[ActorflowDurability()])


    class Support(actorflow.Actor):
        @actorflow.handler
        async def ask(self, question: str) -> str:
            result = await run_agent(self.ctx, agent, question)
            return result.output

Outside `run_agent` the capability is transparent: the agent runs as a plain pydantic-ai agent.
Built on pydantic-ai's engine-builder surface (`pydantic_ai.durable_exec`): the capability
declares how actorflow journals (JSON-compatible values, one step per unit, tools one at a
time) and its backend runs each unit as ``ctx.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import msgspec
import pydantic
from anyio.streams.memory import MemoryObjectSendStream
from pydantic_ai import Agent
from pydantic_ai.agent import EventStreamHandler
from pydantic_ai.durable_exec import (
    JSON_CODEC,
    BaseDurabilityCapability,
    CallableOperationBackend,
    DurabilityEngineSpec,
    DurableOperationBackend,
    DurableOperationId,
    JournalOperationNamer,
    ModelRequestId,
    RoleBasedOperationConfig,
    ToolsetCallToolId,
    conversation_id_from_run_id,
)
from pydantic_ai.messages import (
    AgentStreamEvent,
    FinalResultEvent,
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelResponsePart,
    ModelResponseStreamEvent,
    PartDeltaEvent,
    PartEndEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
)
from pydantic_ai.models import Model
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import (
    AgentDepsT,
    DeferredToolRequests,
    DeferredToolResults,
    RunContext,
    ToolDenied,
)
from pydantic_core import to_json

import actorflow

__all__ = [
    "ActorflowDurability",
    "ApprovalRequest",
    "ToolApproval",
    "dump_messages",
    "idempotency_key",
    "load_messages",
    "run_agent",
    "stream_chunk",
]

OutputT = TypeVar("OutputT")
T = TypeVar("T")


class _Hosted:
    """The turn an agent run is hosted in, and the queue of its ctx operations.

    pydantic-ai runs each node of an agent's graph in a task of its own, and actorflow takes
    ctx operations only from the turn's task (that is what keeps their order deterministic).
    So the graph's tasks hand each operation to `run_agent`, which runs it in the turn's task,
    one at a time, in the order the agent asked for them (tool calls run one at a time).
    """

    def __init__(self, ctx: actorflow.Context, requests: _Requests) -> None:
        self.ctx = ctx
        self.owner = asyncio.current_task()
        self.requests = requests
        self.runs = 0

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a ctx operation in the turn's task and return its outcome."""
        if asyncio.current_task() is self.owner:
            return await operation()
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.requests.send((operation, done))
        result: T = await done
        return result


_Request = tuple[Callable[[], Awaitable[Any]], "asyncio.Future[Any]"]
_Requests = MemoryObjectSendStream[_Request]

_hosted: contextvars.ContextVar[_Hosted | None] = contextvars.ContextVar(
    "actorflow_pydantic_ai_hosted", default=None
)
#: The idempotency key of the step whose unit (tool call, model request) is running.
_step_key: contextvars.ContextVar[str] = contextvars.ContextVar("actorflow_pydantic_ai_key")
#: Inside a streamed model request's step: where its chunks go (to the step's ctx.stream).
_publish: contextvars.ContextVar[Callable[[object], None] | None] = contextvars.ContextVar(
    "actorflow_pydantic_ai_publish", default=None
)


def _current() -> _Hosted:
    hosted = _hosted.get()
    if hosted is None:
        raise actorflow.ActorflowError(
            "this pydantic-ai agent runs outside actorflow.integrations.pydantic_ai.run_agent: "
            "run it with `await run_agent(self.ctx, agent, prompt)` from an actor's handler"
        )
    return hosted


def idempotency_key() -> str:
    """The idempotency key of the step running this tool call (or model request): the same
    on every re-execution of that step. Call it inside a tool function and pass it to the
    API that applies the effect, so that a tool call re-run after a crash applies it once."""
    try:
        return _step_key.get()
    except LookupError:
        raise actorflow.ActorflowError(
            "idempotency_key() is only defined inside a tool call (or model request) of an "
            "agent run hosted by actorflow.integrations.pydantic_ai.run_agent"
        ) from None


class ToolApproval(msgspec.Struct, forbid_unknown_fields=True):
    """The payload of the event that decides tool calls waiting for approval.

    ``approved`` is True or False for every waiting call, or a map from tool call id to
    True/False (a call the map leaves out is denied). ``message`` is what the model is told
    about a denied call; ``by`` says who decided.
    """

    approved: bool | dict[str, bool]
    message: str = "The tool call was denied."
    by: str | None = None


class ApprovalRequest(msgspec.Struct, frozen=True):
    """A tool call waiting for approval, as journaled before the wait."""

    tool_call_id: str
    tool_name: str
    args: str


#: Per durable unit kind (pydantic-ai's operation roles), the step retry policy.
_Config = actorflow.Retry | None


class _Backend(CallableOperationBackend[_Config]):
    """Runs each of pydantic-ai's durable units as one actorflow step (``ctx.run``)."""

    async def execute(
        self,
        *,
        operation_id: DurableOperationId,
        name: str,
        body: Callable[[], Awaitable[object]],
        cache_key: tuple[object, ...],
        config: _Config,
    ) -> object:
        hosted = _current()
        # Inputs that replay recomputes exactly: a tool call's name and arguments (they come
        # from a journaled model response). Only their fingerprint is journaled; a replay that
        # calls another tool at this position stops as non-deterministic.
        inputs: tuple[object, ...] = ()
        if isinstance(operation_id, ToolsetCallToolId) and len(cache_key) >= 2:
            inputs = (str(cache_key[0]), to_json(cache_key[1], fallback=repr).decode())
        # The unit's body runs in the context of the graph task that asked for it (where
        # pydantic-ai keeps its run context), with the step's idempotency key beside it.
        unit = _Unit(hosted.ctx, body, contextvars.copy_context())
        if isinstance(operation_id, ModelRequestId):
            streaming = operation_id.streaming
            return await hosted.call(
                lambda: _model_request_step(hosted.ctx, unit, name, config, streaming)
            )
        return await hosted.call(lambda: hosted.ctx.run(unit, *inputs, name=name, retry=config))


class _Unit:
    """The body of one durable unit, run as a step's function: each call (attempt) runs it
    in a task of the graph's context, with the step's idempotency key (and, streamed, where
    its chunks go) beside it."""

    def __init__(
        self,
        ctx: actorflow.Context,
        body: Callable[[], Awaitable[object]],
        context: contextvars.Context,
    ) -> None:
        self.ctx = ctx
        self.body = body
        self.context = context

    def start(self, publish: Callable[[object], None] | None = None) -> asyncio.Task[object]:
        key = self.ctx.idempotency_key
        return asyncio.create_task(_keyed(key, self.body, publish), context=self.context)

    async def __call__(self, *_inputs: object) -> object:
        return await self.start()


async def _keyed(
    key: str, body: Callable[[], Awaitable[object]], publish: Callable[[object], None] | None
) -> object:
    _step_key.set(key)
    _publish.set(publish)
    return await body()


async def _model_request_step(
    ctx: actorflow.Context, unit: _Unit, name: str, retry: _Config, streaming: bool
) -> Any:
    """The one place a model request runs: a ``ctx.run`` step, or, when pydantic-ai streams
    the request, a ``ctx.stream`` step whose chunks are the model's events as
    `ActorflowDurability`'s ``stream_chunk`` maps them (published by
    ``ActorflowDurability._model_stream_event_handler``, inside the unit).

    Either way the journaled value is the unit's result, already reduced to JSON-compatible
    values by pydantic-ai's own type adapters (``JSON_CODEC``): it journals as plain msgspec
    values and is rebuilt by the same adapters on replay, which never streams."""
    if not streaming:
        return await ctx.run(unit, name=name, retry=retry)
    response: list[object] = []

    async def relay() -> AsyncIterator[object]:
        """One attempt: the chunks as the model's events come, then the response aside."""
        response.clear()
        chunks: asyncio.Queue[object] = asyncio.Queue()
        done = object()
        task = unit.start(chunks.put_nowait)
        task.add_done_callback(lambda _: chunks.put_nowait(done))
        try:
            while (chunk := await chunks.get()) is not done:
                yield chunk
            response.append(task.result())  # or the request's error, failing the attempt
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def collect(_chunks: list[object]) -> Any:
        return response[0]

    return await ctx.stream(relay, name=name, retry=retry, collect=collect)


_MODEL_EVENTS = (PartStartEvent, PartDeltaEvent, PartEndEvent, FinalResultEvent)
_RESPONSE_PART: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ModelResponsePart)


def stream_chunk(event: ModelResponseStreamEvent) -> object | None:
    """The default chunk a streamed model request publishes for one of the model's events
    (None: none). Text is streamed as it comes, as ``str`` chunks: a text part's first
    content, then each delta. Every other part (a tool call, thinking, ...) is one chunk
    once the model has finished it: the part as pydantic-ai's JSON form (a dict with
    ``part_kind``). Tool-call argument deltas and the other events make no chunk."""
    if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
        return event.part.content or None
    if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
        return event.delta.content_delta or None
    if isinstance(event, PartEndEvent) and not isinstance(event.part, TextPart):
        dumped: object = _RESPONSE_PART.dump_python(event.part, mode="json")
        return dumped
    return None


@dataclasses.dataclass(init=False, kw_only=True)
class ActorflowDurability(BaseDurabilityCapability[AgentDepsT]):
    """Makes a pydantic-ai agent durable inside an actorflow turn (see `run_agent`).

    Every model request and every tool call of a run hosted by `run_agent` is a journaled
    step named after the agent (``{name}__model.request``,
    ``{name}__function_toolset__{toolset id}.call_tool:{tool}``), so a turn replayed after
    a crash or a deploy hands back their results instead of calling the model or the tool
    again. Tool calls run one at a time (actorflow's steps of one turn
    are ordered). Outside `run_agent` the agent runs as usual.

    ``approval_event`` names the event (``ctx.wait_for``) that decides tool calls waiting for
    approval (``requires_approval=True``): its payload is a `ToolApproval`. None leaves them to
    the run's output, as pydantic-ai does by default (``DeferredToolRequests``).
    ``approval_timeout`` (seconds, durable) denies them when no decision came in time.
    ``model_retry`` and ``tool_retry`` are the steps' retry policies (default: the actor
    type's). ``models``, ``event_stream_handler`` and ``name`` are pydantic-ai's.

    A model request that pydantic-ai streams (with an ``event_stream_handler``, here or
    given to `run_agent`, or with ``stream=True``) is a ``ctx.stream`` step
    (``{name}__model.request_stream``): subscribers of the invocation's stream get
    ``stream_chunk(event)`` for each of the model's events (`stream_chunk` by default: text
    deltas as ``str``, other parts whole as JSON; None makes no chunk), and the step
    journals the same response a ``ctx.run`` step would. See docs/pydantic-ai.md.
    """

    engine_spec = DurabilityEngineSpec(
        engine_name="actorflow",
        durable_unit_noun="step",
        durable_unit_plural="steps",
        durable_container_noun="turn",
        codec=JSON_CODEC,
        wrapped_toolset_kinds=frozenset({"function", "mcp", "dynamic"}),
        toolset_lifecycles={
            "function": "enter-always",
            "mcp": "enter-in-durable-unit",
            "dynamic": "enter-never",
        },
        tool_call_result_upgrade_lenient=False,
        journal_discovery=True,
        sequential_tools_in_durable_context=True,
        tool_config_key=None,
    )

    def __init__(
        self,
        *,
        approval_event: str | None = "approval",
        approval_timeout: float | None = None,
        model_retry: actorflow.Retry | None = None,
        tool_retry: actorflow.Retry | None = None,
        models: Mapping[str, Model] | None = None,
        event_stream_handler: EventStreamHandler[AgentDepsT] | None = None,
        stream: bool = False,
        stream_chunk: Callable[[ModelResponseStreamEvent], object | None] = stream_chunk,
        name: str | None = None,
    ) -> None:
        super().__init__(models=models, event_stream_handler=event_stream_handler, name=name)
        self._approval_event = approval_event
        self._approval_timeout = approval_timeout
        self._model_retry = model_retry
        self._tool_retry = tool_retry
        self._stream = stream
        self._stream_chunk = stream_chunk

    @property
    def has_wrap_run_event_stream(self) -> bool:
        # What makes pydantic-ai stream each model request: with stream=True, inside
        # run_agent, whether or not an event_stream_handler wants the events.
        return (self._stream and self.in_durable_context) or super().has_wrap_run_event_stream

    def _model_stream_event_handler(self) -> EventStreamHandler[AgentDepsT] | None:
        # pydantic-ai's seam for the handler that consumes a streamed model request's live
        # events inside its durable unit (Temporal's integration publishes there too).
        # Inside a streaming step, each event is published as a chunk before the user's
        # handler sees it; whatever that handler leaves unconsumed is published as well.
        handler = super()._model_stream_event_handler()
        publish, chunk_of = _publish.get(), self._stream_chunk
        if publish is None:
            return handler

        async def publishing(
            ctx: RunContext[AgentDepsT], events: AsyncIterable[AgentStreamEvent]
        ) -> None:
            async def published() -> AsyncIterator[AgentStreamEvent]:
                async for event in events:
                    if isinstance(event, _MODEL_EVENTS):  # all of them, in a model request
                        chunk = chunk_of(event)
                        if chunk is not None:
                            publish(chunk)
                    yield event

            relayed = published()
            if handler is not None:
                await handler(ctx, relayed)
            async for _ in relayed:
                pass

        return publishing

    @property
    def in_durable_context(self) -> bool:
        # Inside a step (a tool running another agent, say) nothing more is journaled: the
        # inner run is part of the step, which journals only its result.
        return _hosted.get() is not None and _step_key.get(None) is None

    def get_durable_operation_backend(self) -> DurableOperationBackend[Any]:
        return _Backend(
            namer=JournalOperationNamer(
                self.name, default_model_id=self.default_model_id or "default"
            ),
            config=RoleBasedOperationConfig(
                model=self._model_retry,
                event=self._model_retry,
                capability=self._tool_retry,
                tool=self._tool_retry,
            ),
        )

    def get_default_run_id(self) -> str | None:
        hosted = _hosted.get()
        if hosted is None:
            return None
        hosted.runs += 1
        return f"{hosted.ctx.invocation}:{hosted.ctx.turn}:{hosted.runs}"

    def get_default_conversation_id(self, run_id: str) -> str | None:
        return conversation_id_from_run_id(run_id) if self.in_durable_context else None

    async def get_run_start_time(self, run_id: str) -> datetime.datetime | None:
        hosted = _hosted.get()
        if hosted is None:
            return None
        return datetime.datetime.fromtimestamp(hosted.ctx.now(), datetime.UTC)

    async def handle_deferred_tool_calls(
        self, ctx: RunContext[AgentDepsT], *, requests: DeferredToolRequests
    ) -> DeferredToolResults | None:
        hosted, event, timeout = _hosted.get(), self._approval_event, self._approval_timeout
        if hosted is None or event is None or not requests.approvals:
            return None
        return await hosted.call(lambda: _decide(hosted.ctx, event, timeout, requests))


async def _decide(
    ctx: actorflow.Context,
    event: str,
    timeout: float | None,
    requests: DeferredToolRequests,
) -> DeferredToolResults:
    """Journal the calls waiting for approval, wait for the decision, and apply it."""
    waiting = [
        ApprovalRequest(call.tool_call_id, call.tool_name, call.args_as_json_str())
        for call in requests.approvals
    ]

    def approval_requested() -> list[ApprovalRequest]:
        return waiting

    await ctx.run(approval_requested, name=f"approval-requested:{event}")
    try:
        decision: ToolApproval = await ctx.wait_for(event, timeout=timeout, type=ToolApproval)
    except TimeoutError:
        decision = ToolApproval(False, f"No decision arrived within {timeout:g} s.")
    results = DeferredToolResults()
    for call in waiting:
        approved = decision.approved
        if isinstance(approved, dict):
            approved = approved.get(call.tool_call_id, False)
        results.approvals[call.tool_call_id] = True if approved else ToolDenied(decision.message)
        if decision.by is not None:
            results.answered_by[call.tool_call_id] = decision.by
    return results


async def run_agent(
    ctx: actorflow.Context,
    agent: Agent[AgentDepsT, OutputT],
    user_prompt: str | None = None,
    *,
    message_history: Sequence[ModelMessage] | None = None,
    deps: AgentDepsT = None,  # type: ignore[assignment]
    **kwargs: Any,
) -> AgentRunResult[OutputT]:
    """Run ``agent`` inside the running turn: each model request and tool call is a step.

    ``ctx`` is the handler's ``self.ctx``; the agent must carry an `ActorflowDurability`
    capability. The other arguments are `Agent.run`'s. Call it from the handler itself (not
    inside a step): the agent's own code between steps is replayed after a crash, so it is
    deterministic as long as its model and tools run only as steps.
    """
    if ActorflowDurability.from_agent(agent) is None:
        raise actorflow.ActorflowError(
            f"agent {agent.name!r} has no ActorflowDurability capability: its model requests "
            "and tool calls would not be journaled. Build it with "
            "`Agent(..., capabilities=[ActorflowDurability()])`"
        )
    send, receive = anyio.create_memory_object_stream[_Request]()
    outcome: list[AgentRunResult[OutputT]] = []
    failure: list[Exception] = []

    async def run() -> None:
        try:
            async with send:
                outcome.append(
                    await agent.run(
                        user_prompt, message_history=message_history, deps=deps, **kwargs
                    )
                )
        except Exception as exc:
            failure.append(exc)

    stopped: list[BaseException] = []
    token = _hosted.set(_Hosted(ctx, send))
    try:
        async with anyio.create_task_group() as group, receive:
            group.start_soon(run)
            async for operation, done in receive:
                try:
                    result = await operation()
                except Exception as exc:
                    done.set_exception(exc)  # the step's error, for the agent to see
                except BaseException as exc:
                    # The turn stops here (at a step boundary, on a cancellation, on a
                    # journal failure): stop the agent's run with it, raise it as it is.
                    stopped.append(exc)
                    group.cancel_scope.cancel()
                    break
                else:
                    done.set_result(result)
    finally:
        _hosted.reset(token)
    if stopped:
        raise stopped[0]
    if failure:
        raise failure[0]
    return outcome[0]


def dump_messages(messages: Sequence[ModelMessage]) -> list[dict[str, Any]]:
    """A conversation as plain JSON-compatible values (pydantic-ai's own adapter), to keep
    in an actor's state or return from a handler."""
    dumped: list[dict[str, Any]] = ModelMessagesTypeAdapter.dump_python(list(messages), mode="json")
    return dumped


def load_messages(data: Sequence[Mapping[str, Any]]) -> list[ModelMessage]:
    """The conversation `dump_messages` returned, rebuilt as pydantic-ai messages."""
    return ModelMessagesTypeAdapter.validate_python(list(data))
