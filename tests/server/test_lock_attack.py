"""The single writer is really single: deleting the `.lock` file beside a journal (as a
clean-up of "stale" lock files does) does not let a second `actorflow serve` open it.

Before the lock moved onto the journal file itself, the second server opened the journal,
both hosted the same actors, and sends failed with 500 `UNIQUE constraint failed`. Both
servers here are real processes on one real SQLite file.
"""

from __future__ import annotations

import pathlib
import re

import httpx

from tests.server.processes import Server, cli, free_port, served
from tests.server.test_journal_lock import is_ready, poll, waiting_reason


def greet(server: Server, key: str, name: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/actors/Greeter/{key}/messages/greet",
        json={"name": name},
        params={"wait": "5"},
        timeout=10,
    )


def test_a_second_server_waits_for_the_journal_even_with_its_lock_file_deleted(
    tmp_path: pathlib.Path,
) -> None:
    journal = tmp_path / "journal.db"
    with served(tmp_path) as first:
        assert greet(first, "k", "before").status_code == 200
        pathlib.Path(f"{journal}.lock").unlink()

        with served(tmp_path, until="/livez") as second:
            reason = poll(second, "it waits for the journal lock", lambda: waiting_reason(second))
            assert reason == f"waiting for the journal lock on {journal}, held by another process"
            refused = greet(second, "k", "through the second")
            assert (refused.status_code, refused.json()["error"]["type"]) == (503, "starting")

            during = greet(first, "k", "during")  # the owner goes on, alone
            assert during.status_code == 200, during.text
            assert during.json()["result"] == "hello during"
            assert waiting_reason(second) == reason

            assert first.stop() == 0
            poll(second, "/readyz answers 200", lambda: is_ready(second))
            after = greet(second, "k", "after")
            assert after.status_code == 200, after.text
            listed = cli("invocations", "Greeter/k", "--json", "--url", second.url)
            assert second.stop() == 0
            logged = second.logged()

    assert listed.returncode == 0, listed.stderr
    assert '"hello before"' in listed.stdout
    assert '"hello during"' in listed.stdout
    assert '"hello through the second"' not in listed.stdout  # the 503 accepted nothing
    events = re.findall(r"\bevent=([\w-]+)", logged)
    assert events[:3] == ["listening", "waiting-for-journal", "start"], events
    assert "UNIQUE constraint" not in first.logged() + logged


def test_a_second_server_with_its_lock_file_deleted_gives_up_saying_why(
    tmp_path: pathlib.Path,
) -> None:
    journal = tmp_path / "journal.db"
    with served(tmp_path) as first:
        pathlib.Path(f"{journal}.lock").unlink()
        done = cli(
            "serve",
            "tests.server.app_under_test",
            "--journal",
            str(journal),
            "--port",
            str(free_port()),
            "--lock-wait",
            "0.5",
        )
        assert greet(first, "k", "still mine").status_code == 200
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"Error: {journal} is still held by another process after 0.5 s" in done.stderr
    assert "event=start" not in done.stderr
