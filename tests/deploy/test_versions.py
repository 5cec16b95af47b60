"""Through real servers: runs start on version A, SIGTERM, the same journal is served by
version B, and every run completes exactly once.

- The example research agent (an ``upgrade`` type) gets a step behind
  ``ctx.patched``: the turn that was in flight under A, past the patch point, replays
  under B on its old path; a turn started under B takes the new one.
- A ``pinned`` type whose B code would diverge from A's turn in flight is held under B
  (its status and /metrics say so, new messages are accepted and wait), and finishes
  when A serves the journal again. Another held actor is reset to its last turn boundary
  over HTTP and runs its message again under B.

Counted from outside: the example's fake calls (``calls.log``) and the effects log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.support import (
    CLIENT_TIMEOUT,
    REPO_ROOT,
    actorflow_command,
    free_port,
    send,
    wait_for,
)
from tests.deploy.versions_app import LOG_ENV, VERSION_ENV

#: Longest one run waits for an invocation to end, and a server for its exit.
RUN_TIMEOUT = 15.0


def poll(check: Callable[[], bool], what: str, timeout: float) -> None:
    """Call ``check`` until it holds; fail the test past ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(0.02)


class VersionServer:
    """`actorflow serve tests.deploy.versions_app --build-id V`, for version V."""

    def __init__(self, workdir: Path, version: str, generation: int) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = workdir / f"server-{generation}-{version}.log"
        env = dict(os.environ)
        env.pop("ACTORFLOW_TOKEN", None)
        env.pop("ACTORFLOW_BUILD_ID", None)
        env[VERSION_ENV] = version
        env[LOG_ENV] = str(workdir / "effects.log")
        env["ACTORFLOW_EXAMPLE_LOG"] = str(workdir / "calls.log")
        env["ACTORFLOW_EXAMPLE_DELAY"] = "0"
        command = [
            actorflow_command(),
            "serve",
            "tests.deploy.versions_app",
            "--journal",
            str(workdir / "journal.db"),
            "--port",
            self.url.rpartition(":")[2],
            "--build-id",
            version,
            "--grace",
            "5",
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.client = httpx.Client(base_url=self.url, timeout=CLIENT_TIMEOUT)

    def ready(self) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                return self.client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        poll(up, "the server to be ready", timeout=20.0)

    def state(self, actor: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/actors/{actor}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def reaches(self, actor: str, state: str) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def there() -> bool:
            found.update(self.state(actor))
            return found["state"] == state

        poll(there, f"{actor} to be {state}", timeout=RUN_TIMEOUT)
        return found

    def deliver(self, actor: str, name: str, payload: Any = None) -> None:
        response = self.client.post(f"/v1/actors/{actor}/events/{name}", json=payload)
        assert response.status_code == 202, response.text

    def metric(self, name: str) -> float:
        text = self.client.get("/metrics").text
        (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
        return float(line.split()[1])

    def terminate(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(RUN_TIMEOUT) == 0, self.log_path.read_text()[-3000:]

    def kill(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(RUN_TIMEOUT)


@pytest.fixture
def start(tmp_path: Path) -> Any:
    started: list[VersionServer] = []

    def run(version: str) -> VersionServer:
        server = VersionServer(tmp_path, version, len(started))
        started.append(server)
        server.ready()
        return server

    yield run
    for server in started:
        server.kill()


def counted(path: Path) -> Counter[str]:
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def test_runs_started_on_a_finish_exactly_once_on_b(tmp_path: Path, start: Any) -> None:
    # Version A: a research job waits for its approval (past where B adds its step);
    # two bookings wait for "go" after reserving.
    a = start("A")
    r1 = send(a.client, "Researcher/r1", "research", {"topic": "batteries"})
    p1 = send(a.client, "Booker/p1", "book", {"item": "x"})
    p3 = send(a.client, "Booker/p3", "book", {"item": "z"})
    for actor in ("Researcher/r1", "Booker/p1", "Booker/p3"):
        assert a.reaches(actor, "waiting-event")["version"] == "A"
    a.terminate()

    b = start("B")
    # The upgrade type moves on at once: A's turn replays on its old path.
    b.reaches("Researcher/r1", "waiting-event")
    b.deliver("Researcher/r1", "approval", {"by": "ops"})
    assert wait_for(b.client, r1, RUN_TIMEOUT)["state"] == "completed"
    r2 = send(b.client, "Researcher/r2", "research", {"topic": "tides"})
    b.reaches("Researcher/r2", "waiting-event")
    b.deliver("Researcher/r2", "approval", {"by": "ops"})
    assert wait_for(b.client, r2, RUN_TIMEOUT)["state"] == "completed"

    # The pinned type is held, says why, and keeps accepting messages.
    held = b.reaches("Booker/p1", "held")
    assert "turn 1 was started by code version 'A'" in held["error"]
    assert "this process runs 'B'" in held["error"]
    assert "run step 'reserve' (step id 1)" in held["error"]
    assert "run step 'quote' (step id 1)" in held["error"]
    assert held["diverged_at"] == 2  # its reserve step
    shown = subprocess.run(
        [actorflow_command(), "journal", "Booker/p1", "--url", b.url],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    assert "Booker/p1 is held: actor Booker/p1 is held (versioning='pinned')" in shown.stderr
    (marked,) = [line for line in shown.stdout.splitlines() if "diverged here" in line]
    assert marked.startswith("actor     2 ")
    listed = subprocess.run(
        [actorflow_command(), "list", "--state", "held", "--url", b.url],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    assert "Booker/p1" in listed.stdout
    b.reaches("Booker/p3", "held")
    assert b.metric("actorflow_actors_held") == 2
    assert b.metric("actorflow_actors_stuck") == 0
    p1_next = send(b.client, "Booker/p1", "book", {"item": "y"})
    assert (
        b.client.get(f"/v1/actors/Booker/p1/invocations/{p1_next.rpartition('#')[2]}").json()[
            "state"
        ]
        == "queued"
    )

    # Booker/p3 is reset to its last turn boundary: its message runs again under B.
    stale = b.client.post("/v1/actors/Booker/p3/reset", json={"discard_turn": 2})
    assert stale.status_code == 409, stale.text
    assert stale.json()["error"]["type"] == "reset_refused"
    # Through the CLI (which posts {"discard_turn": 1}, its status's turns), to a file.
    out = tmp_path / "p3-turn-1.jsonl"
    command = ["reset", "Booker/p3", "--to-last-turn", "--url", b.url, "--yes", "--out"]
    subprocess.run([actorflow_command(), *command, str(out)], timeout=RUN_TIMEOUT, check=True)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(line["type"], line["entry"].get("name")) for line in lines] == [
        ("turn", None),
        ("step", "reserve"),
    ]
    assert (lines[0]["entry"]["invocation"], lines[0]["entry"]["version"]) == (p3, "A")
    b.reaches("Booker/p3", "waiting-event")
    b.deliver("Booker/p3", "go")
    assert wait_for(b.client, p3, RUN_TIMEOUT)["result"] == "charge z"
    assert b.metric("actorflow_actors_held") == 1
    b.terminate()

    # Version A again: the held turn finishes where it started, then the queued message.
    a = start("A")
    a.reaches("Booker/p1", "waiting-event")
    a.deliver("Booker/p1", "go")
    assert wait_for(a.client, p1, RUN_TIMEOUT)["result"] == "charge x"
    a.reaches("Booker/p1", "waiting-event")
    a.deliver("Booker/p1", "go")
    assert wait_for(a.client, p1_next, RUN_TIMEOUT)["result"] == "charge y"
    a.terminate()

    calls = counted(tmp_path / "calls.log")
    for topic in ("batteries", "tides"):
        assert calls[f"llm\tplan: {topic}"] == 1
        searched = [line for line in calls if line.startswith(f"search\t{topic} ")]
        assert sorted(calls[line] for line in searched) == [1, 1, 1]
    assert sum(n for line, n in calls.items() if line.startswith("llm\tsummarise:")) == 2
    # Old turn, old path; new turn, new path.
    assert calls["llm\tfact-check: batteries"] == 0
    assert calls["llm\tfact-check: tides"] == 1
    effects = counted(tmp_path / "effects.log")
    assert effects == {
        "Booker/p1 reserve x A": 1,
        "Booker/p1 charge x A": 1,
        "Booker/p1 reserve y A": 1,
        "Booker/p1 charge y A": 1,
        # p3's completed step ran again after the reset, as documented.
        "Booker/p3 reserve z A": 1,
        "Booker/p3 quote z B": 1,
        "Booker/p3 reserve z B": 1,
        "Booker/p3 charge z B": 1,
    }
