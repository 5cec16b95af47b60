"""The W3C ``traceparent`` of an HTTP send becomes the parent of the turn's span, and is
journaled with the message (docs/tracing.md)."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import actorflow
from actorflow._events import EventDelivered, MessageAccepted, TraceContext
from journal import MemoryStore
from tests.server.support import serving

pytestmark = pytest.mark.anyio

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"


class Traced(actorflow.Actor):
    @actorflow.handler
    async def greet(self, name: str) -> str:
        return str(await self.ctx.run(lambda: f"hello {name}", name="compose"))


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    provider = TracerProvider()
    yield provider
    provider.shutdown()


@pytest.fixture
def exporter(provider: TracerProvider) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_an_http_traceparent_is_the_parent_of_the_turn_and_journaled(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    store = MemoryStore()
    options = {"tracer_provider": provider}
    async with serving(store, actors=[Traced], runtime_options=options) as api:
        headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=abc"}
        response = await api.send("Traced/t", "greet", {"name": "ada"}, headers=headers)
        assert response.status_code == 202, response.text
        assert await api.runtime.result(response.json()["invocation"]) == "hello ada"
        inbox = [record async for record in store.read("inbox/Traced/t")]
    (turn,) = [span for span in exporter.get_finished_spans() if span.name == "Traced.greet"]
    assert turn.context.trace_id == TRACE_ID
    assert turn.parent is not None
    assert turn.parent.span_id == SPAN_ID
    assert turn.parent.is_remote
    assert turn.parent.trace_state.to_header() == "vendor=abc"
    message = msgspec.msgpack.decode(inbox[0].data, type=MessageAccepted)
    assert message.trace == TraceContext(TRACEPARENT, "vendor=abc")


async def test_without_a_traceparent_the_turn_starts_its_own_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    options = {"tracer_provider": provider}
    async with serving(actors=[Traced], runtime_options=options) as api:
        response = await api.send("Traced/t", "greet", {"name": "bob"})
        assert await api.runtime.result(response.json()["invocation"]) == "hello bob"
    (turn,) = [span for span in exporter.get_finished_spans() if span.name == "Traced.greet"]
    assert turn.parent is None


class Waiting(actorflow.Actor):
    @actorflow.handler
    async def wait(self) -> str:
        return str(await self.ctx.wait_for("decision", type=str))


async def test_an_events_traceparent_is_journaled_and_linked_from_the_turn_that_takes_it(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    store = MemoryStore()
    options = {"tracer_provider": provider}
    async with serving(store, actors=[Waiting], runtime_options=options) as api:
        response = await api.send("Waiting/w", "wait", {})
        invocation = response.json()["invocation"]
        delivered = await api.http.post(
            "/v1/actors/Waiting/w/events/decision",
            json="yes",
            headers={"traceparent": TRACEPARENT},
        )
        assert delivered.status_code == 202, delivered.text
        assert await api.runtime.result(invocation) == "yes"
        inbox = [record async for record in store.read("inbox/Waiting/w")]
    (turn,) = [span for span in exporter.get_finished_spans() if span.name == "Waiting.wait"]
    assert [(link.context.trace_id, link.context.span_id) for link in turn.links] == [
        (TRACE_ID, SPAN_ID)
    ]
    (event,) = [record for record in inbox if record.type == "event"]
    assert msgspec.msgpack.decode(event.data, type=EventDelivered).trace == TraceContext(
        TRACEPARENT, ""
    )
