"""Tracing hooks: where the engine tells OpenTelemetry what happens, importing none of it.

Tracing is optional (the ``actorflow[otel]`` extra) and off unless a runtime is given a
tracer provider (`Runtime(tracer_provider=...)`, ``actorflow serve --otel``). The spans
are made in `actorflow._otel`, imported only then; with tracing off each hook here is a
context-variable lookup, and nothing of OpenTelemetry is imported. See docs/tracing.md.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

if TYPE_CHECKING:
    from actorflow._events import ActorEntry, TraceContext
    from actorflow._otel import Tracing


class TurnTrace(Protocol):
    """The spans of the turn that runs in this context."""

    def step_began(self, step: str, name: str) -> None:
        """A step starts running live (not handed back from the journal)."""
        ...

    def journaled(self, host: object, entries: Sequence[ActorEntry]) -> None:
        """``host`` journaled ``entries`` (step outcomes, retries, timers...)."""
        ...

    def stamped(self, host: object, entries: Sequence[ActorEntry]) -> Sequence[ActorEntry]:
        """``entries`` as ``host`` is to journal them (see `stamped`)."""
        ...

    def event_taken(self, host: object, sent: TraceContext) -> None:
        """``host``'s turn took an event delivered with the trace context ``sent``."""
        ...


#: The trace of the turn running in this context (None: tracing is off, or no turn runs).
current: contextvars.ContextVar[TurnTrace | None] = contextvars.ContextVar(
    "actorflow_turn_trace", default=None
)


def step_began(step: str, name: str) -> None:
    """Called by the replay core as a step starts running live."""
    trace = current.get()
    if trace is not None:
        trace.step_began(step, name)


def journaled(host: object, entries: Sequence[ActorEntry]) -> None:
    """Called by an actor's host once ``entries`` are in its journal."""
    trace = current.get()
    if trace is not None:
        trace.journaled(host, entries)


def stamped(host: object, entries: Sequence[ActorEntry]) -> Sequence[ActorEntry]:
    """``entries`` about to be journaled by ``host``, the first step outcome of a resumed
    run carrying that run's span (so a later run links to it)."""
    trace = current.get()
    return entries if trace is None else trace.stamped(host, entries)


def event_taken(host: object, sent: TraceContext | msgspec.UnsetType) -> None:
    """Called by an actor's host as its running turn takes an event delivered with the
    trace context ``sent``."""
    trace = current.get()
    if trace is not None and not isinstance(sent, msgspec.UnsetType):
        trace.event_taken(host, sent)


def enable(tracer_provider: Any) -> Tracing | None:
    """The tracing of a runtime given ``tracer_provider`` (None: tracing off)."""
    if tracer_provider is None:
        return None
    try:
        from actorflow._otel import Tracing
    except ImportError as exc:
        raise ImportError(
            f"tracing needs OpenTelemetry ({exc}); install actorflow[otel] "
            f"(opentelemetry-api and opentelemetry-sdk)"
        ) from exc
    return Tracing(tracer_provider)


@contextlib.contextmanager
def incoming(runtime: Any, headers: Mapping[str, str]) -> Iterator[None]:
    """While an HTTP request is served: make the trace context of its ``traceparent`` (and
    ``tracestate``) header current, so that a message it sends carries it (when
    ``runtime``, which may be None before it is ready, traces)."""
    tracing = getattr(runtime, "tracing", None)
    if tracing is None or "traceparent" not in headers:
        yield
        return
    with tracing.incoming(headers):
        yield
