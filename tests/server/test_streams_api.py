"""GET .../invocations/{id}/stream: server-sent events, resuming by Last-Event-ID or
?offset=, refusals; `Client.stream` and `actorflow watch` against a real server."""

from __future__ import annotations

import io
import pathlib

import pytest

from actorflow import Client, StreamEvent
from actorflow.cli._watch import print_events
from tests.server.processes import clean_env, cli, served
from tests.server.stream_app import Streamer
from tests.server.support import serving

APP = "tests.server.stream_app"
WHOLE = "".join(f"w{i} " for i in range(3))
EXPECTED = (
    "retry: 1000\n\n"
    'id: 1:1\nevent: chunk\ndata: "w0 "\n\n'
    'id: 1:2\nevent: chunk\ndata: "w1 "\n\n'
    'id: 1:3\nevent: chunk\ndata: "w2 "\n\n'
    f'id: 1:4\nevent: result\ndata: {{"step":"words","attempt":1,"value":"{WHOLE}"}}\n\n'
    f'id: end\nevent: end\ndata: {{"state":"completed","result":"{WHOLE.strip()}"}}\n\n'
)


@pytest.fixture
def streamed_before(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The app's marker is there already: its answers stream whole at once."""
    marker = tmp_path / "streamed-once"
    marker.touch()
    monkeypatch.setenv("STREAM_MARKER", str(marker))
    return clean_env(STREAM_MARKER=str(marker))


@pytest.mark.anyio
async def test_the_stream_is_served_as_server_sent_events(streamed_before: object) -> None:
    async with serving(actors=[Streamer]) as api:
        sent = (await api.send("Streamer/q", "answer", {"count": 3}, params={"wait": 5})).json()
        path = f"/v1/actors/Streamer/q/invocations/{sent['invocation'][-24:]}/stream"
        response = await api.http.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.text == EXPECTED
        tail = EXPECTED.split("id: 1:3")[1].partition("\n\n")[2]
        resumed = await api.http.get(path, headers={"Last-Event-ID": "1:3"})
        assert resumed.text == "retry: 1000\n\n" + tail
        assert (await api.http.get(path, params={"offset": "1:3"})).text == resumed.text
        refusals = {
            path + "?offset=x": (400, "invalid_offset"),
            path + "?offset=9:9": (400, "invalid_offset"),
            path.replace(sent["invocation"][-24:], "0" * 24): (404, "unknown_invocation"),
            path.replace("Streamer", "Nobody"): (404, "unknown_actor_type"),
        }
        for url, (status, kind) in refusals.items():
            refused = await api.http.get(url)
            assert (refused.status_code, refused.json()["error"]["type"]) == (status, kind), url


@pytest.mark.anyio
async def test_the_async_client_and_watch_follow_a_real_server(
    tmp_path: pathlib.Path, streamed_before: dict[str, str]
) -> None:
    with served(tmp_path, env=streamed_before, app=APP) as server:
        async with Client(server.url) as client:
            invocation = (await client.send("Streamer/q", "answer", {"count": 3})).invocation
            events = [event async for event in client.stream(invocation)]
            assert [e.kind for e in events] == ["chunk"] * 3 + ["result", "end"]
            resumed = [event async for event in client.stream(invocation, after="1:2")]
            assert resumed == events[2:]
        watched = cli("watch", invocation, "--url", server.url, env=streamed_before)
        assert (watched.returncode, watched.stdout) == (0, WHOLE + "\n")
        assert server.stop() == 0


def test_watch_prints_text_and_tells_of_superseded_and_failed_attempts() -> None:
    gone = {"type": "builtins.OSError", "message": "gone"}
    events = [
        StreamEvent("chunk", "1:1", "Hel"),
        StreamEvent("superseded", "2:0", {"attempt": 1, "by": 2, "step": "llm"}),
        StreamEvent("chunk", "2:1", "Hello"),
        StreamEvent("chunk", "2:2", {"tool": "x"}),
        StreamEvent("failed", "2:3", {"attempt": 2, "step": "llm", "error": gone}),
        StreamEvent("end", "end", {"state": "failed", "result": None, "error": gone}),
    ]
    out, err = io.StringIO(), io.StringIO()
    assert print_events(events, out, err, as_json=False) == 1
    assert out.getvalue() == 'Hel\nHello\n{"tool": "x"}\n'
    assert err.getvalue().splitlines() == [
        "[attempt 1 of llm superseded by attempt 2: discard its output above]",
        "[attempt 2 of llm failed: builtins.OSError: gone]",
        "[invocation failed: builtins.OSError: gone]",
    ]
