"""OpenTelemetry traces (docs/tracing.md): spans of turns and steps, checked with the SDK's
in-memory exporter; trace context through sends, calls and a restart; nothing when off."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import actorflow
from actorflow._events import MessageAccepted, TraceContext, TurnStarted
from actorflow.runtime import _quarantine
from journal import MemoryStore
from tests.runtime.support import RELEASE, eventually, hold, run_to_hold, running, settles

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.anyio
FAST = actorflow.Retry(attempts=3, initial=0, jitter=0)


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    failures.clear()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = named(exporter, name)
    assert len(found) == 1, [span.name for span in exporter.get_finished_spans()]
    return found[0]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


failures: dict[str, int] = {}


def flaky(key: str, fails: int) -> str:
    """Fails its first ``fails`` calls for ``key``."""
    failures[key] = failures.get(key, 0) + 1
    if failures[key] <= fails:
        raise ConnectionError(f"attempt {failures[key]} of {key} failed")
    return "ok"


class Callee(actorflow.Actor):
    @actorflow.handler
    async def double(self, n: int) -> int:
        return int(await self.ctx.run(lambda: n * 2, name="multiply"))

    @actorflow.handler
    async def note(self, text: str) -> None:
        await self.ctx.run(lambda: text, name="write")


class Caller(actorflow.Actor):
    @actorflow.handler
    async def work(self, key: str, fails: int) -> str:
        result = str(await self.ctx.run(flaky, key, fails, name="fetch", retry=FAST))
        await self.ctx.sleep(0, name="pause")
        return result

    @actorflow.handler
    async def delegate(self, n: int) -> int:
        callee = self.ctx.ref(Callee, "c")
        await self.ctx.send(callee, Callee.note, "sent")
        return int(await self.ctx.call(callee, Callee.double, n))

    @actorflow.handler
    async def broken(self) -> None:
        await self.ctx.run(flaky, "broken", 99, name="fetch", retry=FAST)

    @actorflow.handler
    async def twice(self) -> str:
        await self.ctx.run(lambda: "before", name="before")
        await hold(self.ctx)
        await self.ctx.wait_for("second")
        return str(await self.ctx.run(lambda: "after", name="after"))

    @actorflow.handler
    async def held(self) -> str:
        await self.ctx.run(lambda: "before", name="before")
        await hold(self.ctx)
        return str(await self.ctx.run(lambda: "after", name="after"))


#: The tracer the step functions below make their own spans with (the test's provider's).
app_tracers: list[otel_trace.Tracer] = []


def traced_work(label: str) -> str:
    """A step function that makes a span of its own (as an instrumented library would)."""
    with app_tracers[-1].start_as_current_span(f"inner {label}"):
        return label


async def traced_async_work(label: str) -> str:
    with app_tracers[-1].start_as_current_span(f"inner {label}"):
        return label


class Nested(actorflow.Actor):
    @actorflow.handler
    async def fan(self) -> list[str]:
        first = await self.ctx.run(traced_work, "sync", name="sync")
        rest = await self.ctx.gather(
            self.ctx.run(traced_async_work, "left", name="left"),
            self.ctx.run(traced_work, "right", name="right"),
        )
        return [first, *rest]


ACTORS = [Caller, Callee, Nested]


async def test_a_turn_and_its_steps_are_spans_with_their_attributes(spans: Any) -> None:
    provider, exporter = spans
    async with actorflow.Runtime(
        MemoryStore(), ACTORS, tracer_provider=provider, version="v7"
    ) as runtime:
        handle = runtime.ref(Caller, "a")
        invocation = await handle.send(Caller.work, "plain", 0)
        assert await runtime.result(invocation) == "ok"
    turn = one(exporter, "Caller.work")
    assert dict(turn.attributes or {}) == {
        "actorflow.actor.type": "Caller",
        "actorflow.actor.key": "a",
        "actorflow.actor.id": "Caller/a",
        "actorflow.invocation": invocation,
        "actorflow.handler": "work",
        "actorflow.turn": 1,
        "actorflow.code_version": "v7",
        "actorflow.attempt": 1,
        "actorflow.resumed": False,
        "actorflow.outcome": "completed",
    }
    assert turn.kind == otel_trace.SpanKind.CONSUMER
    assert turn.status.status_code == StatusCode.UNSET
    step = one(exporter, "step fetch")
    assert parent_id(step) == turn.context.span_id
    assert step.context.trace_id == turn.context.trace_id
    assert dict(step.attributes or {}) == {
        "actorflow.step.name": "fetch",
        "actorflow.step.id": "1",
        "actorflow.step.attempts": 1,
        "actorflow.step.outcome": "completed",
    }
    assert [event.name for event in turn.events] == ["timer"]
    assert dict(turn.events[0].attributes or {})["actorflow.step.name"] == "pause"


async def test_spans_made_inside_a_step_are_children_of_the_steps_span(spans: Any) -> None:
    provider, exporter = spans
    app_tracers.append(provider.get_tracer("app"))
    async with actorflow.Runtime(MemoryStore(), ACTORS, tracer_provider=provider) as runtime:
        invocation = await runtime.ref(Nested, "n").send(Nested.fan)
        assert await runtime.result(invocation) == ["sync", "left", "right"]
    turn = one(exporter, "Nested.fan")
    for label in ("sync", "left", "right"):  # on the loop, in a thread, in gather branches
        step = one(exporter, f"step {label}")
        assert parent_id(step) == turn.context.span_id, label
        assert parent_id(one(exporter, f"inner {label}")) == step.context.span_id, label


async def test_each_retry_is_an_event_on_its_step_with_the_error(spans: Any) -> None:
    provider, exporter = spans
    async with actorflow.Runtime(MemoryStore(), ACTORS, tracer_provider=provider) as runtime:
        invocation = await runtime.ref(Caller, "a").send(Caller.work, "retried", 2)
        assert await runtime.result(invocation) == "ok"
    step = one(exporter, "step fetch")
    assert [event.name for event in step.events] == ["retry", "retry"]
    first, second = (dict(event.attributes or {}) for event in step.events)
    assert first["actorflow.step.attempt"] == 1
    assert first["exception.type"] == "builtins.ConnectionError"
    assert first["exception.message"] == "attempt 1 of retried failed"
    assert second["actorflow.step.attempt"] == 2
    assert dict(step.attributes or {})["actorflow.step.attempts"] == 3
    assert step.status.status_code == StatusCode.UNSET


async def test_a_failed_step_and_its_turn_have_error_status(spans: Any) -> None:
    provider, exporter = spans
    async with actorflow.Runtime(MemoryStore(), ACTORS, tracer_provider=provider) as runtime:
        invocation = await runtime.ref(Caller, "a").send(Caller.broken)
        with pytest.raises(actorflow.HandlerFailed):
            await runtime.result(invocation)
    step = one(exporter, "step fetch")
    assert step.status.status_code == StatusCode.ERROR
    assert "attempt 3 of broken failed" in (step.status.description or "")
    assert dict(step.attributes or {})["actorflow.step.outcome"] == "failed"
    turn = one(exporter, "Caller.broken")
    assert turn.status.status_code == StatusCode.ERROR
    assert dict(turn.attributes or {})["actorflow.outcome"] == "failed"


async def test_send_and_call_carry_the_trace_to_the_other_actor(spans: Any) -> None:
    provider, exporter = spans
    async with actorflow.Runtime(MemoryStore(), ACTORS, tracer_provider=provider) as runtime:
        invocation = await runtime.ref(Caller, "a").send(Caller.delegate, 21)
        assert await runtime.result(invocation) == 42
        await settles(runtime.ref(Callee, "c"))
    caller = one(exporter, "Caller.delegate")
    for name in ("Callee.note", "Callee.double"):  # the send, then the call
        callee = one(exporter, name)
        assert callee.context.trace_id == caller.context.trace_id, name
        assert parent_id(callee) == caller.context.span_id, name
    assert [event.name for event in caller.events] == ["send", "send", "reply"]


async def test_the_callers_current_span_is_the_parent_of_the_turn(spans: Any) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("test")
    async with actorflow.Runtime(MemoryStore(), ACTORS, tracer_provider=provider) as runtime:
        with tracer.start_as_current_span("request") as request:
            invocation = await runtime.ref(Caller, "a").send(Caller.work, "parented", 0)
        await runtime.result(invocation)
    turn = one(exporter, "Caller.work")
    assert turn.context.trace_id == request.get_span_context().trace_id
    assert parent_id(turn) == request.get_span_context().span_id


async def test_a_turn_resumed_after_a_restart_links_to_its_first_run(
    db: pathlib.Path, spans: Any
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("test")
    async with running(db, ACTORS, tracer_provider=provider) as runtime:
        handle = runtime.ref(Caller, "a")
        with tracer.start_as_current_span("request") as request:
            invocation = await run_to_hold(handle, Caller.held)
    first = one(exporter, "Caller.held")
    assert dict(first.attributes or {})["actorflow.outcome"] == "suspended"
    exporter.clear()
    async with running(db, ACTORS, tracer_provider=provider) as runtime:  # a restart
        await runtime.deliver(handle.ref, RELEASE)
        assert await runtime.result(invocation) == "after"
    resumed = one(exporter, "Caller.held")
    attributes = dict(resumed.attributes or {})
    assert attributes["actorflow.resumed"] is True
    assert attributes["actorflow.attempt"] == 2
    assert attributes["actorflow.outcome"] == "completed"
    # Still a child of the request that sent the message, journaled with it ...
    assert resumed.context.trace_id == request.get_span_context().trace_id
    assert parent_id(resumed) == request.get_span_context().span_id
    # ... linked to the span of the turn's first run, journaled when the turn started.
    assert [link.context.span_id for link in resumed.links] == [first.context.span_id]
    # The step handed back from the journal is not exported again as if it ran.
    assert named(exporter, "step before") == []
    assert len(named(exporter, "step after")) == 1


async def test_a_turn_resumed_twice_links_to_every_earlier_run_and_to_its_events_senders(
    db: pathlib.Path, spans: Any
) -> None:
    """Each resumed run journals its span on the first step outcome it writes, so the
    next run links to all of them; an event delivered under a span is linked from the
    turn's span that takes it."""
    provider, exporter = spans
    tracer = provider.get_tracer("test")
    async with running(db, ACTORS, tracer_provider=provider) as runtime:
        handle = runtime.ref(Caller, "a")
        invocation = await run_to_hold(handle, Caller.twice)
    first = one(exporter, "Caller.twice")
    exporter.clear()
    async with running(db, ACTORS, tracer_provider=provider) as runtime:  # run 2
        await runtime.deliver(handle.ref, RELEASE)

        async def released() -> bool:  # the event's step is journaled: run 2 stamped it
            records = [record async for record in runtime.store.read("actor/Caller/a")]
            return any(r.type == "step" and RELEASE.encode() in r.data for r in records)

        await eventually(released, "the release to be taken")
    second = one(exporter, "Caller.twice")
    assert [link.context.span_id for link in second.links] == [first.context.span_id]
    exporter.clear()
    async with running(db, ACTORS, tracer_provider=provider) as runtime:  # run 3
        with tracer.start_as_current_span("approver") as approver:
            await runtime.deliver(handle.ref, "second")
        assert await runtime.result(invocation) == "after"
    third = one(exporter, "Caller.twice")
    assert dict(third.attributes or {})["actorflow.attempt"] == 3
    assert [(link.context.span_id, dict(link.attributes or {})) for link in third.links] == [
        (first.context.span_id, {"actorflow.link": "earlier attempt"}),
        (second.context.span_id, {"actorflow.link": "earlier attempt"}),
        (approver.get_span_context().span_id, {"actorflow.link": "event"}),
    ]


async def test_a_turn_started_with_tracing_off_resumes_in_a_span_without_links(
    db: pathlib.Path, spans: Any
) -> None:
    provider, exporter = spans
    async with running(db, ACTORS) as runtime:
        handle = runtime.ref(Caller, "a")
        invocation = await run_to_hold(handle, Caller.held)
    async with running(db, ACTORS, tracer_provider=provider) as runtime:
        await runtime.deliver(handle.ref, RELEASE)
        assert await runtime.result(invocation) == "after"
    resumed = one(exporter, "Caller.held")
    assert resumed.links == ()
    assert parent_id(resumed) is None
    assert dict(resumed.attributes or {})["actorflow.resumed"] is True
    assert "actorflow.attempt" not in (resumed.attributes or {})


async def test_with_tracing_off_no_trace_is_journaled(db: pathlib.Path) -> None:
    async with running(db, ACTORS) as runtime:
        invocation = await runtime.ref(Caller, "a").send(Caller.work, "off", 0)
        await runtime.result(invocation)
        records = []
        for stream in ("actor/Caller/a", "inbox/Caller/a"):
            records += [record async for record in runtime.store.read(stream)]
    assert {record.type for record in records} >= {"message", "turn"}
    assert not [record for record in records if b"trace" in record.data]


async def test_the_readable_journal_and_export_show_a_trace_only_where_journaled(
    db: pathlib.Path, spans: Any
) -> None:
    provider, _ = spans
    async with running(db, ACTORS) as runtime:  # tracing off
        invocation = await runtime.ref(Caller, "a").send(Caller.work, "off", 0)
        await runtime.result(invocation)
    async with running(db, ACTORS, tracer_provider=provider) as runtime:
        handle = runtime.ref(Caller, "a")
        await runtime.result(await handle.send(Caller.work, "on", 0))
        journal = await runtime.journal(handle.ref)
        exported = [line async for line in _quarantine.export(runtime.store, handle.id)]
    untraced, traced = [entry.data for entry in journal if entry.type == "turn"]
    assert "trace" not in untraced
    assert traced["trace"]["span"].startswith("00-")
    assert msgspec.json.decode(msgspec.json.encode(journal))  # as the API answers it
    turns = [line.entry for line in exported if line.type == "turn"]
    assert [("trace" in turn) for turn in turns] == [False, True]
    assert msgspec.json.encode(exported)  # as actorflow export writes it


def test_records_without_a_trace_decode_and_older_code_ignores_one() -> None:
    # A record written before tracing (or with it off) has no field: UNSET.
    old = msgspec.msgpack.encode({"invocation": "i", "handler": "h", "args": None, "at": 1.0})
    assert msgspec.msgpack.decode(old, type=MessageAccepted).trace is msgspec.UNSET

    class OlderTurnStarted(msgspec.Struct):  # the record as code before tracing knew it
        turn: int
        invocation: str
        inbox: int
        handler: str
        args: msgspec.Raw
        at: float

    traced = TurnStarted(3, "i", 7, "h", msgspec.Raw(b"\xc0"), 1.0, trace=TraceContext("p"))
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(traced), type=OlderTurnStarted)
    assert (decoded.turn, decoded.inbox, decoded.handler) == (3, 7, "h")


UNTRACED = """
import sys, importlib.abc

class NoOpenTelemetry(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

if sys.argv[1] == "absent":
    sys.meta_path.insert(0, NoOpenTelemetry())

import anyio
import actorflow
from actorflow.runtime import _quarantine
from journal import MemoryStore

class Echo(actorflow.Actor):
    @actorflow.handler
    async def echo(self, text: str) -> str:
        return await self.ctx.run(lambda: text, name="echo")

async def main():
    async with actorflow.Runtime(MemoryStore(), [Echo]) as runtime:
        handle = runtime.ref(Echo, "e")
        print(await runtime.result(await handle.send(Echo.echo, "hi")))
    print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))

anyio.run(main)
"""


@pytest.mark.parametrize("opentelemetry", ["absent", "installed"])
def test_actorflow_runs_without_importing_opentelemetry_unless_tracing(opentelemetry: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", UNTRACED, opentelemetry],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["hi", "[]"]


def test_tracing_without_opentelemetry_installed_says_what_to_install() -> None:
    script = UNTRACED.split("import anyio")[0] + (
        "import actorflow\nfrom journal import MemoryStore\n"
        "try:\n    actorflow.Runtime(MemoryStore(), [], tracer_provider=object())\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "absent"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "install actorflow[otel]" in done.stdout
