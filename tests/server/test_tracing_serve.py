"""`actorflow serve --otel` (docs/tracing.md): a turn whose server is SIGKILLed resumes in
the next process in the trace of the HTTP request that sent its message, linked to the
span of its first run. Spans are read from the console exporter (OTEL_TRACES_EXPORTER)."""

from __future__ import annotations

import json
import pathlib
import signal
import time
from typing import Any

import anyio
import httpx
import msgspec

from actorflow import SyncClient
from actorflow._events import ACTOR_CODEC, TurnStarted
from journal import SqliteStore
from tests.server.processes import APP, clean_env, cli, free_port, served

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"


def console_spans(path: pathlib.Path) -> list[dict[str, Any]]:
    """The spans the console exporter wrote (one JSON object after another)."""
    text, spans, at = path.read_text(), [], 0
    decoder = json.JSONDecoder()
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return spans
        span, at = decoder.raw_decode(text, at)
        spans.append(span)


def first_turn(path: pathlib.Path) -> TurnStarted:
    async def read() -> TurnStarted:
        store = await SqliteStore.open(path)
        try:
            async for record in store.read("actor/Approval/a"):
                started = ACTOR_CODEC.decode(record)
                assert isinstance(started, TurnStarted)
                return started
        finally:
            await store.close()
        raise AssertionError("no turn was journaled")

    return anyio.run(read)


def test_a_turn_killed_under_serve_resumes_linked_in_the_senders_trace(
    tmp_path: pathlib.Path,
) -> None:
    env = clean_env(OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="actorflow-test")
    with served(tmp_path, "--otel", env=env) as first, SyncClient(first.url, timeout=10) as client:
        response = httpx.post(
            f"{first.url}/v1/actors/Approval/a/messages/request",
            json={"what": "deploy"},
            headers={"traceparent": TRACEPARENT},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        invocation = response.json()["invocation"]
        give_up = time.monotonic() + 10
        while client.status("Approval/a").state != "waiting-event":
            assert time.monotonic() < give_up, "the turn never waited for its event"
            time.sleep(0.02)
        first.process.send_signal(signal.SIGKILL)
        assert first.process.wait(timeout=10) == -signal.SIGKILL
    port = free_port()
    with served(tmp_path, "--otel", env=env, port=port) as second:
        with SyncClient(second.url, timeout=10) as client:
            client.deliver("Approval/a", "decision", {"by": "ops", "approved": True})
            assert client.result(invocation, timeout=10)["approved"] is True
        assert second.stop() == 0  # its spans are exported as it exits
    journaled = first_turn(tmp_path / "journal.db").trace
    assert not isinstance(journaled, msgspec.UnsetType)
    assert journaled.parent == TRACEPARENT
    (turn,) = [
        span
        for span in console_spans(tmp_path / f"serve-{port}.out")
        if span["name"] == "Approval.request"
    ]
    assert turn["context"]["trace_id"] == f"0x{TRACE_ID:032x}"
    assert turn["parent_id"] == f"0x{SPAN_ID:016x}"
    assert turn["attributes"]["actorflow.resumed"] is True
    assert turn["attributes"]["actorflow.attempt"] == 2
    assert turn["attributes"]["actorflow.outcome"] == "completed"
    assert turn["resource"]["attributes"]["service.name"] == "actorflow-test"
    first_span = journaled.span.split("-")[2]
    assert [link["context"]["span_id"] for link in turn["links"]] == [f"0x{first_span}"]


def test_serve_otel_refuses_an_exporter_it_does_not_know(tmp_path: pathlib.Path) -> None:
    env = clean_env(OTEL_TRACES_EXPORTER="zipkin")
    journal = str(tmp_path / "journal.db")
    done = cli("serve", APP, "--journal", journal, "--port", str(free_port()), "--otel", env=env)
    assert done.returncode == 1
    assert "OTEL_TRACES_EXPORTER names 'zipkin'" in done.stderr
    assert not (tmp_path / "journal.db").exists()  # refused before anything was opened
