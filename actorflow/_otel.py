"""OpenTelemetry spans of turns and steps (imported only when tracing is enabled).

See docs/tracing.md for what is traced, with which attributes, and how trace context
travels with messages and across restarts. The engine reaches this module through the
hooks of `actorflow._tracing` only.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from actorflow import _tracing
from actorflow._errors import ContinuedAsNew, JournalFailure, NonDeterminismError, Suspended
from actorflow._events import (
    ActorEntry,
    Reply,
    StepCompleted,
    StepFailed,
    StepRetrying,
    TimerStarted,
    TraceContext,
    TurnCancelling,
    TurnStarted,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span, SpanContext, Tracer

_PROPAGATOR = TraceContextTextMapPropagator()
_PREFIX = "actorflow."
_REPLY = "\x00reply:"  # the event a ctx.call awaits (see actorflow.replay._turn)


def _version() -> str:
    try:
        return metadata.version("actorflow")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return ""


def _context_of(parent: str, state: str) -> otel_context.Context:
    """A context whose span is the remote one a traceparent names (empty if it names none)."""
    if not parent:
        return otel_context.Context()
    carrier = {"traceparent": parent, "tracestate": state} if state else {"traceparent": parent}
    return _PROPAGATOR.extract(carrier, context=otel_context.Context())


def _traceparent(span_context: SpanContext) -> str:
    """``span_context`` as a W3C traceparent ("" for an invalid one)."""
    if not span_context.is_valid:
        return ""
    flags = int(span_context.trace_flags)
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags:02x}"


def _span_context(traceparent: str) -> SpanContext | None:
    span = otel_trace.get_current_span(_context_of(traceparent, ""))
    context = span.get_span_context()
    return context if context.is_valid else None


class Tracing:
    """A runtime's tracing: its tracer, and the spans of turns about to start."""

    def __init__(self, tracer_provider: Any) -> None:
        self.tracer: Tracer = tracer_provider.get_tracer("actorflow", _version())
        #: The span of each host's turn that `begin` started and `run_turn` has not taken.
        self._fresh: weakref.WeakKeyDictionary[Any, Span] = weakref.WeakKeyDictionary()

    # -- messages -------------------------------------------------------------------------

    def message_trace(self) -> TraceContext | msgspec.UnsetType:
        """The current span's trace context, to journal with a message (UNSET: none)."""
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        parent = carrier.get("traceparent")
        if not parent:
            return msgspec.UNSET
        return TraceContext(parent, carrier.get("tracestate", ""))

    @contextlib.contextmanager
    def incoming(self, headers: Mapping[str, str]) -> Iterator[None]:
        """Make the trace context of an HTTP request's ``traceparent``/``tracestate``
        headers current (the messages the request sends carry it)."""
        token = otel_context.attach(_PROPAGATOR.extract(headers, context=otel_context.Context()))
        try:
            yield
        finally:
            otel_context.detach(token)

    # -- turns ----------------------------------------------------------------------------

    def begin(
        self, host: Any, started: TurnStarted, sent: TraceContext | msgspec.UnsetType
    ) -> TurnStarted:
        """Start the span of the turn ``host`` is about to journal (``started``), for a
        message whose sender's trace context is ``sent``; return ``started`` with what it
        journals of that span."""
        parent, state = (
            ("", "") if isinstance(sent, msgspec.UnsetType) else (sent.parent, sent.state)
        )
        name = f"{host.type_name}.{started.handler}"
        span = self.tracer.start_span(name, _context_of(parent, state), SpanKind.CONSUMER)
        self._fresh[host] = span
        first = _traceparent(span.get_span_context())
        trace = TraceContext(parent, state, first, host._epoch)
        return msgspec.structs.replace(started, trace=trace)

    async def run_turn(
        self,
        host: Any,
        started: TurnStarted,
        run: Awaitable[Reply],
        earlier: Sequence[TraceContext] = (),
    ) -> Reply:
        """Run a turn (await ``run``) inside its span: the one `begin` started, or for a
        turn resumed after a restart a new one linked to the spans of its earlier runs
        (its first run's, and ``earlier``: those resumed runs journaled)."""
        span = self._fresh.pop(host, None)
        resumed = span is None
        attributes: dict[str, Any] = {
            _PREFIX + "actor.type": host.type_name,
            _PREFIX + "actor.key": host.key,
            _PREFIX + "actor.id": host.actor_id,
            _PREFIX + "invocation": started.invocation,
            _PREFIX + "handler": started.handler,
            _PREFIX + "turn": started.turn,
            _PREFIX + "code_version": started.version,
        }
        if started.key_turn:
            attributes[_PREFIX + "retry_of_turn"] = started.key_turn
        if span is not None:
            attributes[_PREFIX + "attempt"] = 1
            attributes[_PREFIX + "resumed"] = False
        else:
            span = self._resumed(host, started, attributes, earlier)
        span.set_attributes(attributes)
        trace = _TurnTrace(self.tracer, host, span, resumed)
        token = _tracing.current.set(trace)
        outcome = "interrupted"
        try:
            with otel_trace.use_span(span, record_exception=False, set_status_on_exception=False):
                reply = await run
            if reply.ok:
                outcome = "completed"
            else:
                outcome = "cancelled" if reply.cancelled else "failed"
                error = reply.error
                message = f"{error.type}: {error.message}" if error is not None else "failed"
                span.set_status(Status(StatusCode.ERROR, message))
            return reply
        except ContinuedAsNew:
            outcome = "continued"
            raise
        except Suspended:
            outcome = "suspended"
            raise
        except (NonDeterminismError, JournalFailure) as exc:
            outcome = "stuck" if isinstance(exc, NonDeterminismError) else "journal-failed"
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            raise
        finally:
            _tracing.current.reset(token)
            trace.close()
            span.set_attribute(_PREFIX + "outcome", outcome)
            span.end()

    def _resumed(
        self,
        host: Any,
        started: TurnStarted,
        attributes: dict[str, Any],
        earlier: Sequence[TraceContext],
    ) -> Span:
        """The span of a turn run again after a restart, crash or hand-off (or of a turn
        started with tracing off: then without a link)."""
        attributes[_PREFIX + "resumed"] = True
        journaled = started.trace
        if isinstance(journaled, msgspec.UnsetType):
            return self.tracer.start_span(
                f"{host.type_name}.{started.handler}", otel_context.Context(), SpanKind.CONSUMER
            )
        links = []
        first = _span_context(journaled.span)
        for context in [first, *(_span_context(e.span) for e in earlier)]:
            if context is not None:
                links.append(Link(context, {_PREFIX + "link": "earlier attempt"}))
        if journaled.epoch:
            attributes[_PREFIX + "attempt"] = host._epoch - journaled.epoch + 1
        return self.tracer.start_span(
            f"{host.type_name}.{started.handler}",
            _context_of(journaled.parent, journaled.state),
            SpanKind.CONSUMER,
            links=links,
        )


class _TurnTrace:
    """The spans of one run of one turn: its own, and those of its live steps."""

    def __init__(self, tracer: Tracer, host: Any, span: Span, resumed: bool = False) -> None:
        self._tracer = tracer
        self._host = host
        self._span = span
        #: A resumed run's span, journaled on the first step outcome it writes (then None).
        self._stamp = (
            TraceContext(span=_traceparent(span.get_span_context()), epoch=host._epoch)
            if resumed
            else None
        )
        self._context = otel_trace.set_span_in_context(span, otel_context.Context())
        self._steps: dict[str, Span] = {}
        self._tokens: dict[str, contextvars.Token[otel_context.Context]] = {}

    def step_began(self, step: str, name: str) -> None:
        attributes = {_PREFIX + "step.name": name, _PREFIX + "step.id": step}
        span = self._tracer.start_span(f"step {name}", self._context, SpanKind.INTERNAL, attributes)
        self._steps[step] = span
        # Current while the step runs (in this task, and in the worker thread of a sync
        # step function, which copies the context): spans the step's own code makes, or the
        # libraries it calls, are its children. Detached when its outcome is journaled, in
        # the same task; if the run stops first, leaving the turn's span resets it.
        self._tokens[step] = otel_context.attach(otel_trace.set_span_in_context(span))

    def stamped(self, host: object, entries: Sequence[ActorEntry]) -> Sequence[ActorEntry]:
        if host is not self._host or self._stamp is None:
            return entries
        for i, entry in enumerate(entries):
            if isinstance(entry, StepCompleted | StepFailed):
                stamp, self._stamp = self._stamp, None
                return [
                    *entries[:i],
                    msgspec.structs.replace(entry, trace=stamp),
                    *entries[i + 1 :],
                ]
        return entries

    def event_taken(self, host: object, sent: TraceContext) -> None:
        context = _span_context(sent.parent) if host is self._host else None
        if context is not None:
            self._span.add_link(context, {_PREFIX + "link": "event"})

    def journaled(self, host: object, entries: Sequence[ActorEntry]) -> None:
        if host is not self._host:
            return  # another actor's host, started from this turn's context
        for entry in entries:
            if isinstance(entry, StepRetrying):
                target = self._steps.get(entry.step, self._span)
                target.add_event(
                    "retry",
                    {
                        _PREFIX + "step.name": entry.name,
                        _PREFIX + "step.attempt": entry.attempt,
                        _PREFIX + "step.retry_at": entry.retry_at,
                        "exception.type": entry.error.type,
                        "exception.message": entry.error.message,
                    },
                )
            elif isinstance(entry, StepCompleted | StepFailed):
                self._ended(entry)
            elif isinstance(entry, TimerStarted):
                self._span.add_event(
                    "timer",
                    {
                        _PREFIX + "step.name": entry.name,
                        _PREFIX + "timer.kind": entry.kind,
                        _PREFIX + "timer.fire_at": entry.fire_at,
                    },
                )
            elif isinstance(entry, TurnCancelling):
                self._span.add_event("cancelling", {_PREFIX + "reason": entry.reason})

    def _ended(self, entry: StepCompleted | StepFailed) -> None:
        failed = isinstance(entry, StepFailed)
        span = self._steps.pop(entry.step, None)
        token = self._tokens.pop(entry.step, None)
        if token is not None:
            otel_context.detach(token)
        if span is None:  # an event taken, a message sent, a patch marker, a compensation
            kind, name = entry.kind, entry.name
            if kind == "event" and name.startswith(_REPLY):  # the reply to a ctx.call
                kind, name = "reply", name.removeprefix(_REPLY)
            attributes: dict[str, Any] = {
                _PREFIX + "step.name": name,
                _PREFIX + "step.id": entry.step,
                _PREFIX + "step.outcome": "failed" if failed else "completed",
            }
            if isinstance(entry, StepFailed):
                attributes["exception.type"] = entry.error.type
                attributes["exception.message"] = entry.error.message
            self._span.add_event(kind, attributes)
            return
        span.set_attribute(_PREFIX + "step.attempts", entry.attempts)
        span.set_attribute(_PREFIX + "step.outcome", "failed" if failed else "completed")
        if isinstance(entry, StepFailed):
            message = f"{entry.error.type}: {entry.error.message}"
            span.set_status(Status(StatusCode.ERROR, message))
        span.end()

    def close(self) -> None:
        """End the spans of steps the run left unfinished (it stopped while they ran)."""
        for span in self._steps.values():
            span.set_attribute(_PREFIX + "step.outcome", "interrupted")
            span.end()
        self._steps.clear()
        self._tokens.clear()
