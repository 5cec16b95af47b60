"""One damaged record takes down one actor, not the server.

A real `actorflow serve` runs a fleet of fifty agents, each halfway through its work
(waiting for a human's "go"); it is stopped, one byte of one agent's last journal record is
flipped in the SQLite file, and it is started again. Checked from outside, over HTTP, the
CLI and the file: the server starts, the damaged agent says ``corrupt`` with the stream and
position of the damage and refuses all work with 409 ``actor_corrupt`` (accepting nothing),
every other agent finishes its work, `/metrics` counts the quarantined agent, the operator
exports its journal beside the running server (the damaged record's bytes in base64) and,
once the server is stopped, resets it, after which it works afresh.
"""

from __future__ import annotations

import base64
import contextlib
import json
import pathlib
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.crash.fleet_app import DAMAGED, agent_keys, expected_result, marker
from tests.server.processes import ACTORFLOW, ROOT, clean_env, cli, free_port

pytestmark = pytest.mark.crash

APP = "tests.crash.fleet_app"
#: Longest a server may take to be ready, or the fleet to reach a state.
DEADLINE = 30.0
DAMAGED_STREAM = f"actor/Agent/{DAMAGED}"


class Fleet:
    """One `actorflow serve` process of the fleet app on ``journal``."""

    def __init__(self, journal: pathlib.Path, log: pathlib.Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [ACTORFLOW, "serve", APP, "--journal", str(journal), "--port", str(self.port)]
        with log.open("wb") as err:
            self.process = subprocess.Popen(
                [*command, "--grace", "5"], cwd=ROOT, env=clean_env(), stderr=err
            )
        self.http = httpx.Client(base_url=self.url, timeout=20)

    def logged(self) -> str:
        return self.log.read_text()

    def until(self, what: str, check: Any) -> Any:
        """Poll ``check()`` until it answers (not None); fail past the deadline."""
        give_up = time.monotonic() + DEADLINE
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"actorflow serve exited while {what}:\n{self.logged()}")
            with contextlib.suppress(httpx.TransportError):
                found = check()
                if found is not None:
                    return found
            if time.monotonic() > give_up:
                raise AssertionError(f"timed out waiting until {what}:\n{self.logged()}")
            time.sleep(0.05)

    def ready(self) -> None:
        self.until("it is ready", lambda: self.http.get("/readyz").status_code == 200 or None)

    def stop(self) -> None:
        self.process.terminate()
        assert self.process.wait(timeout=20) == 0, self.logged()
        self.http.close()

    def until_waiting(self, actors: list[str]) -> None:
        """Return once every one of ``actors`` waits for an event."""

        def waiting() -> bool | None:
            return set(actors) <= set(self.in_state("waiting-event")) or None

        self.until(f"{len(actors)} agents wait for go", waiting)

    def in_state(self, state: str) -> list[str]:
        listed = self.http.get("/v1/actors", params={"type": "Agent", "state": state})
        assert listed.status_code == 200, listed.text
        return sorted(actor["actor"] for actor in listed.json())


@contextlib.contextmanager
def fleet(journal: pathlib.Path, name: str) -> Iterator[Fleet]:
    server = Fleet(journal, journal.parent / f"{name}.log")
    try:
        server.ready()
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
        server.process.wait(timeout=10)


def flip_last_record(journal: pathlib.Path) -> int:
    """Flip one byte of the damaged agent's last journal record, in the file itself;
    return the record's position (checked from the file first)."""
    with contextlib.closing(sqlite3.connect(journal, isolation_level=None)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file
        position, data = conn.execute(
            "SELECT r.position, r.data FROM records r JOIN streams s ON s.id = r.stream_id "
            "WHERE s.name = ? ORDER BY r.position DESC LIMIT 1",
            (DAMAGED_STREAM,),
        ).fetchone()
    signature = marker(DAMAGED, "first").encode()
    assert signature in data  # the record to damage is the agent's last
    content = bytearray(journal.read_bytes())
    at = content.find(signature)
    assert at >= 0
    assert content.find(signature, at + 1) == -1
    content[at + 20] ^= 0x01
    journal.write_bytes(bytes(content))
    return int(position)


def test_a_flipped_byte_quarantines_one_agent_and_the_fleet_goes_on(
    tmp_path: pathlib.Path,
) -> None:
    journal = tmp_path / "journal.db"
    keys = agent_keys()
    invocations: dict[str, str] = {}
    with fleet(journal, "first") as server:
        for key in keys:
            sent = server.http.post(f"/v1/actors/Agent/{key}/messages/work")
            assert sent.status_code == 202, sent.text
            invocations[key] = sent.json()["invocation"]
        server.until_waiting([f"Agent/{key}" for key in keys])
        server.stop()
    position = flip_last_record(journal)

    with fleet(journal, "second") as server:
        damaged = server.http.get(f"/v1/actors/Agent/{DAMAGED}").json()
        assert damaged["state"] == "corrupt", damaged
        assert damaged["damage"] == {
            "stream": DAMAGED_STREAM,
            "position": position,
            "detail": "checksum mismatch",
        }
        assert f"stream '{DAMAGED_STREAM}' position {position}" in damaged["error"]
        assert f"actorflow export Agent/{DAMAGED} --out FILE" in damaged["error"]
        assert server.in_state("corrupt") == [f"Agent/{DAMAGED}"]
        assert f"actor Agent/{DAMAGED} is quarantined" in server.logged()
        assert re.search(r"^actorflow_actors_corrupt 1$", server.http.get("/metrics").text, re.M)
        listed = cli("list", "--state", "corrupt", "--url", server.url)
        assert listed.stdout.split()[:2] == [f"Agent/{DAMAGED}", "corrupt"], listed.stderr

        refusals = refused_requests(server, invocations[DAMAGED])
        assert all(code == 409 and kind == "actor_corrupt" for code, kind in refusals), refusals

        for key in keys:
            if key != DAMAGED:
                go = server.http.post(f"/v1/actors/Agent/{key}/events/go", json=None)
                assert go.status_code == 202, go.text
        for key in keys:
            if key != DAMAGED:
                assert finished(server, invocations[key]) == expected_result(key)

        export = tmp_path / "export.jsonl"
        on_journal = ("--journal", str(journal))
        exported = cli("export", f"Agent/{DAMAGED}", "--out", str(export), *on_journal)
        busy = cli("reset", f"Agent/{DAMAGED}", "--yes", *on_journal)
        server.stop()

    assert exported.returncode == 0, exported.stderr
    assert f"damaged: stream '{DAMAGED_STREAM}' position {position}" in exported.stderr
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    [bad] = [line for line in lines if line["damage"] is not None]
    assert (bad["stream"], bad["position"], bad["damage"]) == (
        DAMAGED_STREAM,
        position,
        "checksum mismatch",
    )
    flipped = bytearray(marker(DAMAGED, "first").encode())
    flipped[20] ^= 0x01
    assert bytes(flipped) in base64.b64decode(bad["data"])
    [message] = [line for line in lines if line["stream"] == f"inbox/Agent/{DAMAGED}"]
    assert message["entry"]["handler"] == "work"  # the only one: the refusals took nothing
    assert busy.returncode == 1
    assert "open in a running server" in busy.stderr

    refused = cli("reset", f"Agent/{DAMAGED}", "--journal", str(journal))
    assert refused.returncode == 1
    assert "refusing to reset" in refused.stderr
    reset = cli("reset", f"Agent/{DAMAGED}", "--yes", "--journal", str(journal))
    assert reset.returncode == 0, reset.stderr
    assert DAMAGED_STREAM in reset.stdout

    with fleet(journal, "third") as server:
        afresh = server.http.get(f"/v1/actors/Agent/{DAMAGED}").json()
        assert (afresh["state"], afresh["turns"], afresh.get("damage")) == ("idle", 0, None)
        sent = server.http.post(f"/v1/actors/Agent/{DAMAGED}/messages/work")
        assert sent.status_code == 202, sent.text
        server.until_waiting([f"Agent/{DAMAGED}"])
        assert server.http.post(f"/v1/actors/Agent/{DAMAGED}/events/go").status_code == 202
        assert finished(server, sent.json()["invocation"]) == expected_result(DAMAGED)
        server.stop()


def refused_requests(server: Fleet, invocation: str) -> list[tuple[int, str]]:
    """What the damaged agent answers to a message, an event, a cancel and a result wait."""
    tail = invocation.rpartition("#")[2]
    answers = [
        server.http.post(f"/v1/actors/Agent/{DAMAGED}/messages/work"),
        server.http.post(f"/v1/actors/Agent/{DAMAGED}/events/go"),
        server.http.post(f"/v1/actors/Agent/{DAMAGED}/invocations/{tail}/cancel"),
        server.http.get(f"/v1/actors/Agent/{DAMAGED}/invocations/{tail}", params={"wait": "1"}),
    ]
    return [(a.status_code, a.json()["error"]["type"]) for a in answers]


def finished(server: Fleet, invocation: str) -> Any:
    """The result of ``invocation``, once it completed."""
    actor, _, tail = invocation.rpartition("#")
    path = f"/v1/actors/{actor}/invocations/{tail}"

    def completed() -> Any:
        status = server.http.get(path, params={"wait": "5"}).json()
        return status["result"] if status["state"] == "completed" else None

    return server.until(f"{invocation} completes", completed)
