"""Streaming steps (`Context.stream`): the step function that relays chunks as they come.

A streaming step is an ordinary step (`Context.run`) whose function iterates over what the
user's function yields, hands each chunk to a `ChunkSink` (the runtime's: it appends chunks
to the invocation's chunk stream in batches, off the step's path), and returns the complete
value, which the turn journals like any step result. Everything here is the same for every
attempt: which attempt it is, and what it supersedes, is the sink's business.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec

from actorflow._context import current_step_key
from actorflow._errors import ActorflowError, ContextMisuseError


class StreamEvent(msgspec.Struct, frozen=True):
    """One event of an invocation's stream, as subscribers get it.

    ``kind`` is ``chunk`` (``data``: the chunk, as JSON), ``superseded`` (``data``:
    ``{"attempt", "by", "step"}``: drop what attempt ``attempt`` streamed), ``result``
    (``{"step", "attempt", "value"}``: a streaming step's complete value), ``failed``
    (``{"step", "attempt", "error"}``: that attempt failed; another may follow) or ``end``
    (the invocation ended: ``{"state", "result"}``, and ``"error"`` if it failed).
    ``id`` is ``"<attempt>:<seq>"`` (``"end"`` for the end): resume after it.
    """

    kind: str
    id: str
    data: Any = None

    @property
    def attempt(self) -> int:
        """The attempt this event belongs to (0 for the end)."""
        head = self.id.partition(":")[0]
        return int(head) if head.isdigit() else 0


class StreamAttempt(Protocol):
    """One attempt of a streaming step, as its sink records it."""

    attempt: int

    def chunk(self, value: Any) -> None:
        """Queue one chunk (a JSON-able value) for the chunk stream; never waits."""
        ...

    async def finish(self, value: Any) -> None:
        """Write the queued chunks and the attempt's complete value (JSON-able), durably."""
        ...

    async def fail(self, error: BaseException) -> None:
        """Write the queued chunks and that the attempt failed with ``error``, durably."""
        ...


class ChunkSink(Protocol):
    """Where the streaming steps of a turn send their chunks (the runtime implements it)."""

    async def begin(self, invocation: str, step_key: str, name: str) -> StreamAttempt:
        """Start a new attempt of the streaming step ``step_key`` of ``invocation``:
        number it above every attempt the chunk stream holds, and record which earlier
        attempt of the same step it supersedes, durably, before any of its chunks."""
        ...


def to_json(value: Any) -> Any:
    """A chunk or a result as JSON-able builtins: pydantic models (the chunk types of the
    OpenAI and Anthropic SDKs) through their ``model_dump(mode="json")``, anything else
    msgspec can encode (Structs, dataclasses, dicts, lists, ...) through msgspec."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    return msgspec.to_builtins(value, enc_hook=_enc_hook)


def _enc_hook(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    raise TypeError(f"a {type(value).__name__} chunk cannot be streamed as JSON")


def join_chunks(chunks: Sequence[Any]) -> Any:
    """The default complete value of a streaming step: its chunks joined when they are all
    ``str`` (tokens), else the list of their JSON forms."""
    if all(isinstance(chunk, str) for chunk in chunks):
        return "".join(chunks)
    return [to_json(chunk) for chunk in chunks]


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """What `Context.stream` was asked: the function and how to build the complete value."""

    fn: Callable[..., Any]
    collect: Callable[[list[Any]], Any] | None
    name: str
    invocation: str
    sink: ChunkSink | None


def takes_key(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` accepts a keyword argument ``idempotency_key``."""
    try:
        return "idempotency_key" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def function_name(fn: Callable[..., Any]) -> str:
    """The name of the function ``fn`` calls (through partials and bound methods)."""
    while hasattr(fn, "func"):
        fn = fn.func
    name = getattr(getattr(fn, "__func__", fn), "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__


async def stream_attempt(spec: StreamSpec, *args: Any) -> Any:
    """One attempt of a streaming step (the function `Context.stream` runs as a step):
    relay each chunk to the sink as it comes, then return the complete value."""
    key = current_step_key.get()
    if spec.sink is None:
        raise ActorflowError("ctx.stream needs a runtime that records chunk streams")
    attempt = await spec.sink.begin(spec.invocation, key, spec.name)
    chunks: list[Any] = []
    try:
        produced = spec.fn(*args, idempotency_key=key) if takes_key(spec.fn) else spec.fn(*args)
        if inspect.isawaitable(produced):
            produced = await produced
        if not hasattr(produced, "__aiter__"):  # not retried: another try fails the same
            raise ContextMisuseError(
                f"ctx.stream({spec.name}): the function must be an async generator or "
                f"return an async iterable of chunks, got {type(produced).__name__}"
            )
        aclose = getattr(produced, "aclose", None)
        async with contextlib.AsyncExitStack() as stack:
            if callable(aclose):
                stack.push_async_callback(aclose)
            async for chunk in produced:
                chunks.append(chunk)
                attempt.chunk(to_json(chunk))
        value = spec.collect(chunks) if spec.collect is not None else join_chunks(chunks)
        final = to_json(value)
    except Exception as exc:
        await attempt.fail(exc)
        raise
    await attempt.finish(final)
    return value
