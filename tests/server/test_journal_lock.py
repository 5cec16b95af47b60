"""A new server waits for the journal while the previous process still holds it, and
answers health checks meanwhile.

The lock is held from this process (a `SqliteStore` open on the file, as the previous
server would hold it); the server under test is a real `actorflow serve` process.
"""

from __future__ import annotations

import contextlib
import pathlib
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.from_thread
import httpx
import pytest

from actorflow.server import ServeConfig, ServeError, ServerState
from actorflow.server._serve import _open_journal
from journal import SqliteStore
from tests.server.processes import START_DEADLINE, Server, cli, free_port, served
from tests.server.support import eventually


class HeldJournal:
    """The journal file opened for writing by this process, as a previous server holds it."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, path: pathlib.Path) -> None:
        self._portal = portal
        self._store: SqliteStore | None = portal.call(SqliteStore.open, path)

    def release(self) -> None:
        """Close it, as the previous server does when it exits."""
        if self._store is not None:
            self._portal.call(self._store.close)
            self._store = None


@contextlib.contextmanager
def held(path: pathlib.Path) -> Iterator[HeldJournal]:
    """The journal at ``path`` held open until released (or the block ends)."""
    with anyio.from_thread.start_blocking_portal() as portal:
        journal = HeldJournal(portal, path)
        try:
            yield journal
        finally:
            journal.release()


def poll(server: Server, what: str, check: Any) -> Any:
    """Poll ``check()`` (None: not yet) until it answers; fail past the deadline."""
    give_up = time.monotonic() + START_DEADLINE
    while True:
        if server.process.poll() is not None:
            raise AssertionError(f"actorflow serve exited while {what}:\n{server.logged()}")
        found = check()
        if found is not None:
            return found
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting until {what}:\n{server.logged()}")
        time.sleep(0.02)


def waiting_reason(server: Server) -> str | None:
    """What /readyz says the server waits for, once it waits for the journal lock."""
    ready = httpx.get(f"{server.url}/readyz", timeout=5)
    assert ready.status_code == 503, ready.text
    body = ready.json()
    assert body["status"] == "starting", body
    reason: str = body["reason"]
    return reason if reason.startswith("waiting for the journal lock") else None


def is_ready(server: Server) -> bool | None:
    """True once /readyz answers 200."""
    return httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200 or None


def test_a_server_waiting_for_the_journal_answers_health_checks_then_serves(
    tmp_path: pathlib.Path,
) -> None:
    journal = tmp_path / "journal.db"
    with held(journal) as previous, served(tmp_path, until="/livez") as server:
        assert httpx.get(f"{server.url}/livez", timeout=5).status_code == 200
        reason = poll(server, "it waits for the journal lock", lambda: waiting_reason(server))
        assert reason == f"waiting for the journal lock on {journal}, held by another process"

        send = httpx.post(
            f"{server.url}/v1/actors/Greeter/early/messages/greet", json={"name": "a"}, timeout=5
        )
        assert send.status_code == 503
        assert send.headers["retry-after"] == "5"
        error = send.json()["error"]
        assert error["type"] == "starting"
        assert reason in error["message"]
        assert "/readyz" in error["message"]
        for path in ("/v1/actors", "/metrics", "/openapi.json"):
            refused = httpx.get(f"{server.url}{path}", timeout=5)
            assert (refused.status_code, refused.json()["error"]["type"]) == (503, "starting")
        listed = cli("list", "--url", server.url)
        assert listed.returncode == 1
        assert "Traceback" not in listed.stderr
        assert "not ready yet (waiting for the journal lock" in listed.stderr
        assert "HTTP 503, starting" in listed.stderr

        previous.release()
        poll(server, "/readyz answers 200", lambda: is_ready(server))
        sent = httpx.post(
            f"{server.url}/v1/actors/Greeter/late/messages/greet",
            json={"name": "b"},
            params={"wait": "5"},
            timeout=10,
        )
        assert sent.status_code == 200, sent.text
        assert sent.json()["result"] == "hello b"
        actors = httpx.get(f"{server.url}/v1/actors", timeout=5).json()
        assert [actor["actor"] for actor in actors] == ["Greeter/late"]  # the 503 took nothing
        assert server.stop() == 0
        logged = server.logged()
    events = re.findall(r"\bevent=([\w-]+)", logged)
    assert events[:3] == ["listening", "waiting-for-journal", "start"], events
    assert re.search(r"event=exit code=0\b", logged)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_waiting_for_the_journal_exits_0_without_waiting_more(
    tmp_path: pathlib.Path, signum: signal.Signals
) -> None:
    journal = tmp_path / "journal.db"
    with held(journal), served(tmp_path, "--lock-wait", "600", until="/livez") as server:
        poll(server, "it waits for the journal lock", lambda: waiting_reason(server))
        # Held for the whole test and a --lock-wait far beyond `stop`'s deadline: only the
        # signal can end the wait in time.
        assert server.stop(signum) == 0
        logged = server.logged()
    assert f"event=stopped-waiting signal={signum.name}" in logged
    assert "event=start" not in logged
    assert "Traceback" not in logged
    assert re.search(r"event=exit code=0\b", logged)


def test_a_journal_held_past_the_lock_wait_exits_1_saying_what_to_do(
    tmp_path: pathlib.Path,
) -> None:
    journal = tmp_path / "journal.db"
    with held(journal):
        done = cli(
            "serve",
            "tests.server.app_under_test",
            "--journal",
            str(journal),
            "--port",
            str(free_port()),
            "--lock-wait",
            "0.3",
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "event=waiting-for-journal" in done.stderr
    assert (
        f"Error: {journal} is still held by another process after 0.3 s (--lock-wait); stop "
        f"that process, wait longer with a larger --lock-wait, or point --journal elsewhere"
    ) in done.stderr
    assert "event=start" not in done.stderr


# -- the wait itself, in process ---------------------------------------------------------------


@pytest.mark.anyio
async def test_a_held_journal_is_waited_for_until_it_is_released(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "journal.db"
    config = ServeConfig("unused", journal=str(path), lock_wait=10.0)
    state = ServerState()
    previous = await SqliteStore.open(path)
    opened: list[SqliteStore | None] = []

    async def next_server() -> None:
        opened.append(await _open_journal(config, state, anyio.Event()))

    async with anyio.create_task_group() as group:
        group.start_soon(next_server)

        async def waiting() -> bool:
            return state.starting.startswith("waiting")

        await eventually(waiting, "the wait for the journal lock")
        assert opened == []
        assert state.starting.endswith(f"{path}, held by another process")
        await previous.close()
    [store] = opened
    assert store is not None
    await store.close()


@pytest.mark.anyio
async def test_a_stop_while_waiting_gives_up_the_wait(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "journal.db"
    config = ServeConfig("unused", journal=str(path), lock_wait=600.0)
    previous = await SqliteStore.open(path)
    stop = anyio.Event()
    try:
        stop.set()
        with anyio.fail_after(5):
            assert await _open_journal(config, ServerState(), stop) is None
    finally:
        await previous.close()


@pytest.mark.anyio
async def test_a_journal_held_past_the_wait_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "journal.db"
    previous = await SqliteStore.open(path)
    try:
        refused = re.escape("still held by another process after 0.2 s (--lock-wait)")
        config = ServeConfig("unused", journal=str(path), lock_wait=0.2)
        with pytest.raises(ServeError, match=refused):
            await _open_journal(config, ServerState(), anyio.Event())
    finally:
        await previous.close()
