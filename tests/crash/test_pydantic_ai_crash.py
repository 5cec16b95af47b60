"""A pydantic-ai agent with tools, hosted by `actorflow serve` on a real SQLite file, is
SIGKILLed twice mid-run (once while a tool runs, once while the approved booking runs) and
restarted: it finishes with every model request and tool call that was journaled before a
kill made exactly once, counted where they happen: at the fake OpenAI server (a separate
process) and in the tools' ledger. Only the call in flight at each kill runs again, under
the same idempotency key, and the booking is applied once.

The agent streams its model requests: a client following the invocation's stream while
the server is SIGKILLed mid-answer and restarted gets every chunk once, in order, with a
supersede marker for the interrupted attempt."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from actorflow import StreamEvent, SyncClient
from examples.llm_tools import weather_in
from tests.server.processes import ACTORFLOW, ROOT, clean_env, free_port

pytestmark = pytest.mark.crash

#: Seconds each fake completion and each tool call takes: long enough to kill one mid-way.
DELAY = "0.25"
#: Longest any wait of this test lasts.
DEADLINE = 30.0
ACTOR = "/v1/actors/Concierge/ana"
QUESTION = "dinner in Lyon"


def wait_until(what: str, check: Callable[[], Any]) -> Any:
    """Poll ``check`` until it returns something true; fail after `DEADLINE` seconds."""
    give_up = time.monotonic() + DEADLINE
    while time.monotonic() < give_up:
        with contextlib.suppress(httpx.TransportError, sqlite3.OperationalError):
            value = check()
            if value:
                return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def fake_openai(workdir: Path, *options: str) -> Iterator[str]:
    """The fake OpenAI server in a process of its own; its base URL."""
    log = str(workdir / "openai-calls.log")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "examples.fake_openai",
            *("--port", "0", "--delay", DELAY),
            *("--log", log, "--exit-after", "120", *options),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "fake OpenAI server on http://127.0.0.1:PORT/v1"
        assert "http://127.0.0.1:" in line, line
        yield line.split()[-1]
    finally:
        process.kill()
        process.wait(10)
        assert process.stdout is not None
        process.stdout.close()


class Serving:
    """`actorflow serve examples.pydantic_agent` on the test's journal, restartable."""

    def __init__(
        self, workdir: Path, base_url: str, delay: str = DELAY, port: int | None = None
    ) -> None:
        self.workdir = workdir
        self.env = clean_env(
            ACTORFLOW_OPENAI_BASE_URL=base_url,
            ACTORFLOW_TOOL_LEDGER=str(workdir / "tools.db"),
            ACTORFLOW_EXAMPLE_DELAY=delay,
            PYTHONPATH=str(ROOT),
        )
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.clients: list[httpx.Client] = []
        self.starts = 0

    def start(self) -> httpx.Client:
        self.starts += 1
        port = self.port or free_port()
        log = self.workdir / f"serve-{self.starts}.log"
        command = [ACTORFLOW, "serve", "examples.pydantic_agent", "--port", str(port)]
        command += ["--journal", str(self.workdir / "journal.db")]
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=DEADLINE)
        self.clients.append(client)
        wait_until("the server to be ready", lambda: client.get("/readyz").status_code == 200)
        return client

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def journaled_steps(self) -> list[str]:
        """The step names of the actor's journal, read from the file (server down)."""
        out = self.workdir / f"export-{self.starts}.jsonl"
        command = [ACTORFLOW, "journal", "export", "Concierge/ana", "--out", str(out)]
        subprocess.run(
            [*command, "--journal", str(self.workdir / "journal.db")],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=DEADLINE,
        )
        records = [json.loads(line) for line in out.read_text().splitlines()]
        return [
            r["entry"]["name"] for r in records if r["kind"] == "record" and r["type"] == "step"
        ]

    def close(self) -> None:
        for client in self.clients:
            client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def attempts(workdir: Path) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(workdir / "tools.db")) as conn:
        return conn.execute("SELECT tool, key FROM attempts ORDER BY n").fetchall()


def bookings(workdir: Path) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(workdir / "tools.db")) as conn:
        return conn.execute("SELECT key, detail FROM bookings").fetchall()


def answers(workdir: Path) -> list[tuple[str, str]]:
    """The digest of each request the fake server answered, with what it answered."""
    log = workdir / "openai-calls.log"
    lines = [line.split("\t") for line in log.read_text().splitlines()]
    return [(digest, what.removesuffix(" (stream)")) for _, digest, what in lines]


def answered(workdir: Path) -> list[str]:
    """The digest of each request the fake server answered, in order."""
    log = workdir / "openai-calls.log"
    return [line.split("\t")[1] for line in log.read_text().splitlines()] if log.exists() else []


MODEL = "concierge__model.request_stream"
WEATHER = "concierge__function_toolset__<agent>.call_tool:get_weather"
BOOK = "concierge__function_toolset__<agent>.call_tool:book_table"


def test_a_pydantic_ai_agent_resumes_after_sigkill_with_no_completed_call_repeated(
    tmp_path: Path,
) -> None:
    with (
        fake_openai(tmp_path) as base_url,
        contextlib.closing(Serving(tmp_path, base_url)) as serving,
    ):
        # Run 1: killed while get_weather runs (its model request was journaled first).
        client = serving.start()
        sent = client.post(f"{ACTOR}/messages/ask", json={"question": QUESTION})
        assert sent.status_code == 202, sent.text
        invocation = sent.json()["invocation"].rpartition("#")[2]
        wait_until("the weather tool to start", lambda: attempts(tmp_path))
        serving.kill()
        at_first_kill = serving.journaled_steps()

        # Run 2: replays to the approval; killed while the approved booking runs.
        client = serving.start()
        wait_until(
            "the approval wait", lambda: client.get(ACTOR).json()["state"] == "waiting-event"
        )
        delivered = client.post(f"{ACTOR}/events/approval", json={"approved": True})
        assert delivered.status_code == 202, delivered.text
        wait_until(
            "the booking to start",
            lambda: any(tool == "book_table" for tool, _ in attempts(tmp_path)),
        )
        serving.kill()
        at_second_kill = serving.journaled_steps()

        # Run 3: replays to the booking, runs it again under its key, and answers.
        client = serving.start()
        done = client.get(f"{ACTOR}/invocations/{invocation}", params={"wait": 20}).json()

    assert done["state"] == "completed", done
    ((key, detail),) = bookings(tmp_path)  # one booking, however often it was attempted
    assert detail == f"table in {QUESTION}"
    reference = hashlib.sha256(key.encode()).hexdigest()[:8]
    assert done["result"] == (
        f"Answer to {QUESTION!r}: get_weather said {weather_in(QUESTION)}; "
        f"book_table said table booked ({reference})."
    )
    # The fake server: three different requests, each journaled one answered exactly once.
    # Both kills came while a tool ran, after the model request before it was journaled,
    # so no model request was in flight at a kill (unless get_weather had already finished
    # at the first kill, when the next request may have been).
    digests = answered(tmp_path)
    counts = Counter(digests)
    assert len(counts) == 3
    journaled = max(at_first_kill.count(MODEL), at_second_kill.count(MODEL))
    assert [counts[d] for d in list(dict.fromkeys(digests))[:journaled]] == [1] * journaled
    assert len(digests) - len(counts) <= (1 if WEATHER in at_first_kill else 0)

    # The tools: a call journaled before a kill ran once; the booking in flight at the
    # second kill ran again under the same key, and was applied once.
    tried = Counter(tool for tool, _ in attempts(tmp_path))
    assert tried["get_weather"] == (1 if WEATHER in at_first_kill else 2)
    assert tried["book_table"] == 2
    assert {k for tool, k in attempts(tmp_path) if tool == "book_table"} == {key}

    # Where the kills came: after the first model request, and during the booking.
    assert at_first_kill[0] == MODEL
    assert at_second_kill[:5] == [MODEL, WEATHER, MODEL, "approval-requested:approval", "approval"]
    assert BOOK not in at_second_kill


def test_a_client_streaming_the_agent_s_answer_survives_a_sigkill_of_the_server(
    tmp_path: Path,
) -> None:
    """The fake model hangs its first answer in text after the first word (--hold-once):
    the server is SIGKILLed there, with a client following the invocation's stream, and
    restarted on the same port; the client resumes by itself."""
    port = free_port()
    seen: list[StreamEvent] = []
    with (
        fake_openai(tmp_path, "--hold-once") as base_url,
        contextlib.closing(Serving(tmp_path, base_url, delay="0", port=port)) as serving,
    ):
        client = serving.start()
        sent = client.post(f"{ACTOR}/messages/ask", json={"question": QUESTION})
        assert sent.status_code == 202, sent.text
        invocation = sent.json()["invocation"]
        wait_until(
            "the approval wait", lambda: client.get(ACTOR).json()["state"] == "waiting-event"
        )
        assert client.post(f"{ACTOR}/events/approval", json={"approved": True}).status_code == 202
        with SyncClient(f"http://127.0.0.1:{port}", timeout=DEADLINE) as subscriber:
            events = subscriber.stream(invocation, reconnect_for=DEADLINE)
            for event in events:
                seen.append(event)
                if isinstance(event.data, str):  # the answer's first word: the model hangs
                    serving.kill()
                    break
            else:
                raise AssertionError(f"the invocation ended before its answer streamed: {seen}")
            at_kill = serving.journaled_steps()
            serving.start()
            seen += events  # the same subscription, reconnected to the restarted server
            result = subscriber.result(invocation, timeout=DEADLINE)

    ((key, _),) = bookings(tmp_path)
    reference = hashlib.sha256(key.encode()).hexdigest()[:8]
    answer = (
        f"Answer to {QUESTION!r}: get_weather said {weather_in(QUESTION)}; "
        f"book_table said table booked ({reference})."
    )
    assert result == answer
    words = answer.split(" ")
    words = [words[0], *(f" {word}" for word in words[1:])]

    def shown(event: StreamEvent) -> tuple[str, str, Any]:
        data = event.data
        if event.kind == "chunk" and isinstance(data, dict):
            data = data["tool_name"]  # a tool call, whole
        elif event.kind == "result":
            data = [part["part_kind"] for part in data["value"]["parts"]]
        elif event.kind == "end":
            data = data["state"]
        return (event.kind, event.id, data)

    # Every chunk once, in order: the interrupted attempt (3) is superseded before the
    # attempt that made the request again (4) streams the whole answer.
    assert [shown(event) for event in seen] == [
        ("chunk", "1:1", "get_weather"),
        ("result", "1:2", ["tool-call"]),
        ("chunk", "2:1", "book_table"),
        ("result", "2:2", ["tool-call"]),
        ("chunk", "3:1", words[0]),
        ("superseded", "4:0", {"attempt": 3, "by": 4, "step": MODEL}),
        *(("chunk", f"4:{i + 1}", word) for i, word in enumerate(words)),
        ("result", f"4:{len(words) + 1}", ["text"]),
        ("end", "end", "completed"),
    ]
    # At the fake server: the two requests journaled before the kill were answered once
    # each; the request that hung was never answered, and its remake was, once.
    assert at_kill.count(MODEL) == 2
    assert [answer for _, answer in answers(tmp_path)] == ["get_weather", "book_table", "text"]
    assert len(set(answered(tmp_path))) == 3
