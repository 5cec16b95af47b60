"""A busy actor's queue over real HTTP: 2,000 queued 100 KB messages do not sit in the
server's memory, and a send beyond the queue limit is a 429 with Retry-After that accepts
nothing."""

from __future__ import annotations

import pathlib

import httpx

from tests.server.processes import served

#: Bytes of the argument of each queued message.
PAYLOAD = 100_000


def rss(pid: int) -> int:
    """The resident memory of a process, in bytes (from /proc)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def waiting(client: httpx.Client) -> None:
    """Block Approval/busy in a turn that waits for a decision."""
    response = client.post("/v1/actors/Approval/busy/messages/request", json={"what": "block"})
    assert response.status_code == 202, response.text


def test_two_thousand_queued_100_kb_messages_stay_out_of_memory(tmp_path: pathlib.Path) -> None:
    count = 2000
    options = ("--durability", "normal", "--max-queued-messages", str(count))
    with served(tmp_path, *options) as server, httpx.Client(base_url=server.url) as client:
        waiting(client)
        body = {"what": "x" * PAYLOAD}
        path = "/v1/actors/Approval/busy/messages/request"
        for _ in range(50):  # warm the server's allocators and caches first
            assert client.post(path, json=body).status_code == 202
        before = rss(server.process.pid)
        for _ in range(count - 50):
            assert client.post(path, json=body).status_code == 202
        after = rss(server.process.pid)
        refused = client.post(path, json=body)
        status = client.get("/v1/actors/Approval/busy").json()
    held = (count - 50) * PAYLOAD
    assert after - before < held // 4, f"RSS grew {after - before:,} B for {held:,} B queued"
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["type"] == "too_many_queued_messages"
    assert refused.headers["Retry-After"]
    assert status["state"] == "waiting-event"
