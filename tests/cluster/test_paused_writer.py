"""A worker stopped in the middle of a write transaction does not stop the others writing.

Writers of a PostgreSQL journal lock one row (``journal_meta``) first in every transaction.
A worker process stopped (SIGSTOP, a paused VM) inside one keeps its session idle in that
transaction; the server must end that session so that the other workers' writes go on.

Two real workers under a steady load of short messages; one is stopped again and again
until the database shows its session idle inside a transaction (at most `TRIALS` times).
While it stays stopped, the other worker must accept a new message and complete it.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.cluster.fleet import Postgres, Worker, fleet
from tests.cluster.journal_check import Database
from tests.cluster.ledger import running_ledger

#: Stop-and-look attempts before giving up on catching the worker inside a transaction.
TRIALS = 60
#: How long the stopped worker stays stopped while the other is checked: well under the
#: journal's statement timeout (30 s), after which blocked writers would fail anyway.
CHECK_WAIT = 10.0

IDLE_IN_TRANSACTION = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND state LIKE 'idle in transaction%' AND now() - state_change > interval '0.2 s'"
)


def load(workers: list[Worker], stop: threading.Event) -> None:
    """Short messages to both workers, each to a new actor, until ``stop``."""
    numbers = itertools.count()
    with httpx.Client(timeout=0.5) as client:
        while not stop.is_set():
            n = next(numbers)
            url = workers[n % 2].url
            # (the stopped worker does not answer: that is the point)
            with contextlib.suppress(httpx.TransportError):
                client.post(
                    f"{url}/v1/actors/Quick/load{n}/messages/once", json={"n": 1, "nap": 0.0}
                )


@pytest.mark.timeout(120)
def test_a_worker_stopped_inside_a_transaction_does_not_stall_the_others(
    tmp_path: Path, postgres: Postgres
) -> None:
    with (
        running_ledger() as ledger,
        fleet(tmp_path, postgres.dsn, ledger.url, lease_ttl=2) as pool,
    ):
        paused, healthy = pool.start("paused", "healthy", build_id="v1")
        db = Database(postgres.dsn)
        stop = threading.Event()
        senders = [
            threading.Thread(target=load, args=([paused, healthy], stop), daemon=True)
            for _ in range(4)
        ]
        try:
            for sender in senders:
                sender.start()
            tries = 0
            for tries in range(1, TRIALS + 1):  # noqa: B007 (printed below)
                paused.signal(signal.SIGSTOP)
                time.sleep(0.3)
                if db.fetch(IDLE_IN_TRANSACTION)[0][0]:
                    break
                paused.signal(signal.SIGCONT)
                time.sleep(0.1)
            else:
                pytest.fail(
                    f"the worker was never stopped inside a transaction in {TRIALS} tries",
                    pytrace=False,
                )
            began = time.monotonic()
            with httpx.Client(base_url=healthy.url, timeout=CHECK_WAIT + 5.0) as client:
                try:
                    sent = client.post(
                        "/v1/actors/Quick/probe/messages/once",
                        json={"n": 7, "nap": 0.0},
                        timeout=CHECK_WAIT,
                    )
                except httpx.TimeoutException:
                    pytest.fail(
                        f"with a worker stopped inside a transaction, the other did not "
                        f"accept a message within {CHECK_WAIT} s",
                        pytrace=False,
                    )
                assert sent.status_code == 202, sent.text
                tail = sent.json()["invocation"].rpartition("#")[2]
                left = max(0.0, CHECK_WAIT - (time.monotonic() - began))
                body = client.get(
                    f"/v1/actors/Quick/probe/invocations/{tail}", params={"wait": f"{left:.2f}"}
                ).json()
            assert body["state"] == "completed", body
            assert body["result"] == {"worker": "healthy", "amount": 7}
            print(
                f"\nstopped inside a transaction at try {tries}; the other worker "
                f"completed a message {time.monotonic() - began:.2f} s later"
            )
        finally:
            stop.set()
            paused.signal(signal.SIGCONT)
            for sender in senders:
                sender.join(5.0)
            db.close()
