"""Cancellation and deadlines through the HTTP API of a real `actorflow serve` process.

- ``POST .../invocations/{id}/cancel`` on a running saga: it ends ``cancelled``, its
  compensations run in reverse order, exactly once, and its status lists them.
- A send with ``?deadline=0.5`` to a turn that naps longer: it ends ``cancelled`` with an
  error naming the deadline (with or without compensations to run).

The next server on the same journal shows the same outcomes and runs nothing again; it is
stopped with SIGINT (Ctrl-C), which must stop it as SIGTERM does.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.support import (
    CLIENT_TIMEOUT,
    effects_of,
    free_port,
    invocation_path,
    read_ledger,
    send,
    servers,
    status,
    wait_for,
    wait_for_ledger,
)

pytestmark = pytest.mark.deploy

GRACE = 3.0


def _ended(body: dict[str, Any]) -> tuple[str, list[str]]:
    return body["state"], body["compensated"]


@pytest.mark.timeout(60)
def test_cancel_and_deadlines_compensate_through_the_api(tmp_path: Path) -> None:
    port = free_port()
    with servers(tmp_path) as pool:
        server = pool.start(port, GRACE)
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
            cancelled = send(client, "Saga/x1", "book", {"hold_s": 30.0})
            timed_saga = send(client, "Saga/x2", "book", {"hold_s": 5.0}, deadline=0.5)
            timed_plain = send(client, "Keeper/x3", "work", {"steps": 3, "nap": 2.0}, deadline=0.5)
            wait_for_ledger(pool.ledger, {"Saga/x1": ["charge"]})
            assert status(client, cancelled)["state"] == "running"
            answer = client.post(invocation_path(cancelled) + "/cancel")
            assert answer.status_code == 202, answer.text
            finals = {
                "Saga/x1": wait_for(client, cancelled, 5.0),
                "Saga/x2": wait_for(client, timed_saga, 5.0),
                "Keeper/x3": wait_for(client, timed_plain, 5.0),
            }
        server.signal(signal.SIGTERM)
        assert server.wait_exit(GRACE + 10.0).code == 0, pool.logs()
        before_restart = read_ledger(pool.ledger)[0]

        server = pool.start(port, GRACE)
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
            again = {
                "Saga/x1": status(client, cancelled),
                "Saga/x2": status(client, timed_saga),
                "Keeper/x3": status(client, timed_plain),
            }
        server.signal(signal.SIGINT)  # Ctrl-C stops it as SIGTERM does
        assert server.wait_exit(GRACE + 10.0).code == 0, pool.logs()
        assert [e["signal"] for e in server.events("draining")] == ["SIGINT"], pool.logs()
        applied, attempts = read_ledger(pool.ledger)
        logs = pool.logs()

    x1, x2, x3 = finals["Saga/x1"], finals["Saga/x2"], finals["Keeper/x3"]
    assert _ended(x1) == ("cancelled", ["charge", "reserve"]), (x1, logs)
    assert "request" in (x1["error"] or ""), x1
    assert _ended(x2) == ("cancelled", ["charge", "reserve"]), (x2, logs)
    assert "deadline" in (x2["error"] or ""), x2
    assert _ended(x3) == ("cancelled", []), (x3, logs)
    assert "deadline" in (x3["error"] or ""), x3

    undone = ["reserve", "charge", "undo charge", "undo reserve"]
    assert effects_of(applied, "Saga/x1") == undone, logs
    assert effects_of(applied, "Saga/x2") == undone, logs
    assert effects_of(applied, "Keeper/x3") == ["effect 0"], logs
    # The restart showed the same outcomes and ran nothing again.
    for actor, body in again.items():
        assert _ended(body) == _ended(finals[actor]), (actor, body, finals[actor])
    assert applied == before_restart
    assert len(attempts) == len(applied), attempts
