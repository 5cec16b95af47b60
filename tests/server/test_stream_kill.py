"""A client streaming an answer while `actorflow serve` is SIGKILLed mid-stream and
restarted on the same SQLite journal gets every chunk once, in order, with a supersede
marker for the interrupted attempt, and ends with the final journaled value."""

from __future__ import annotations

import pathlib
import signal

import httpx

from actorflow import StreamEvent, SyncClient
from tests.server.processes import GRACE, clean_env, free_port, served

APP = "tests.server.stream_app"
WORDS = 8


def test_a_subscriber_survives_a_sigkill_of_the_server_mid_stream(tmp_path: pathlib.Path) -> None:
    env = clean_env(STREAM_MARKER=str(tmp_path / "streamed-once"))
    port = free_port()
    seen: list[StreamEvent] = []
    with (
        served(tmp_path, env=env, port=port, app=APP) as first,
        SyncClient(first.url, timeout=10) as client,
    ):
        invocation = client.send("Streamer/q", "answer", {"count": WORDS}).invocation
        events = client.stream(invocation, reconnect_for=30)
        for event in events:
            seen.append(event)
            if len(seen) == WORDS // 2:  # the first attempt stops here: kill the server
                first.process.send_signal(signal.SIGKILL)
                assert first.process.wait(timeout=10) == -signal.SIGKILL
                break
        with served(tmp_path, env=env, port=port, app=APP) as second:
            seen += events  # the same subscription: it reconnects to the new server
            result = client.result(invocation, timeout=10)
            assert second.stop() == 0
    half = [f"w{i} " for i in range(WORDS // 2)]
    whole = [f"w{i} " for i in range(WORDS)]
    assert [(e.kind, e.id, e.data) for e in seen] == [
        *(("chunk", f"1:{i + 1}", word) for i, word in enumerate(half)),
        ("superseded", "2:0", {"attempt": 1, "by": 2, "step": "words"}),
        *(("chunk", f"2:{i + 1}", word) for i, word in enumerate(whole)),
        ("result", f"2:{WORDS + 1}", {"step": "words", "attempt": 2, "value": "".join(whole)}),
        ("end", "end", {"state": "completed", "result": result}),
    ]
    assert result == "".join(whole).strip()


def test_a_sigterm_ends_open_streams_and_the_server_exits_within_its_grace(
    tmp_path: pathlib.Path,
) -> None:
    env = clean_env(STREAM_MARKER=str(tmp_path / "streamed-once"))
    with served(tmp_path, env=env, app=APP) as server, httpx.Client(base_url=server.url) as http:
        invocation = http.post("/v1/actors/Streamer/q/messages/answer", json={"count": 4})
        tail = invocation.json()["invocation"][-24:]
        path = f"/v1/actors/Streamer/q/invocations/{tail}/stream"
        lines: list[str] = []
        with http.stream("GET", path, timeout=30) as response:
            for line in response.iter_lines():
                lines.append(line)
                if line == "id: 1:2":  # the stream waits for good after it: stop the server
                    server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=GRACE + 10) == 0
    assert "id: end" not in lines  # the stream ended with the server, not the invocation
