"""`actorflow serve --journal postgresql://...`: two worker processes on one PostgreSQL
journal (a real server the test session starts). Any worker accepts any request, and
shows who hosts what. Crashes and rolling deploys across workers: tests/cluster/."""

from __future__ import annotations

import contextlib
import pathlib
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from actorflow import SyncClient
from tests.server.processes import APP, Server, cli, free_port, served
from tests.server.test_cli import ok


@pytest.fixture
def fleet(tmp_path: pathlib.Path, postgres_dsn: str) -> Iterator[tuple[Server, Server]]:
    with contextlib.ExitStack() as stack:
        workers = [
            stack.enter_context(
                served(tmp_path, "--worker-id", name, "--lease-ttl", "3", journal=postgres_dsn)
            )
            for name in ("w1", "w2")
        ]
        yield workers[0], workers[1]


def hosting_worker(client: SyncClient, actor: str) -> str:
    """Wait until some worker hosts ``actor``; its name, as ``client``'s server says."""
    give_up = time.monotonic() + 20
    while (owner := client.status(actor).owner) is None:
        assert time.monotonic() < give_up, f"no worker took {actor} on"
        time.sleep(0.05)
    return owner


def test_any_worker_accepts_any_request_and_says_who_hosts_what(
    fleet: tuple[Server, Server],
) -> None:
    one, two = fleet
    with SyncClient(one.url) as first, SyncClient(two.url) as second:
        sent = first.send("Approval/a1", "request", {"what": "deploy"})
        owner = hosting_worker(second, "Approval/a1")
        give_up = time.monotonic() + 20
        assert owner in ("w1", "w2")
        assert first.status("Approval/a1").owner == owner  # the same answer everywhere
        hosting = first if owner == "w1" else second
        while hosting.status("Approval/a1").state != "waiting-event":
            assert time.monotonic() < give_up, "the turn never reached its wait"
            time.sleep(0.05)

        second.deliver("Approval/a1", "decision", {"by": "ann", "approved": True})
        done = first.invocation(sent.invocation, wait=20)  # waits across workers
        assert done.state == "completed"
        assert done.result == {"what": "deploy", "by": "ann", "approved": True}

        workers = first.workers()
        assert sorted(w.worker for w in workers) == ["w1", "w2"]
        assert all(w.capacity == 1000 for w in workers)

    listed = ok("list", "--url", one.url).split()
    assert "Approval/a1" in listed
    assert owner in listed
    shown = ok("workers", "--url", two.url)
    assert "w1" in shown
    assert "w2" in shown
    ready = httpx.get(f"{one.url}/readyz").json()
    assert ready == {"status": "ready", "worker": "w1", "actors": int(owner == "w1")}
    metrics = httpx.get(f"{one.url}/metrics").text
    assert 'actorflow_worker_capacity{worker="w1"} 1000' in metrics


def test_a_password_in_the_journal_url_is_never_logged(
    tmp_path: pathlib.Path, postgres_dsn: str
) -> None:
    with_password = postgres_dsn.replace("postgres@", "postgres:s3cret-pw@", 1)
    with served(tmp_path, "--worker-id", "w1", journal=with_password) as worker:
        logged = worker.logged()
    assert "s3cret-pw" not in logged
    assert "postgresql://postgres@" in logged


def test_a_killed_workers_actor_is_taken_over_after_its_lease_expires(
    fleet: tuple[Server, Server],
) -> None:
    one, two = fleet
    with SyncClient(one.url) as first, SyncClient(two.url) as second:
        sent = second.send("Approval/k1", "request", {"what": "rollback"})
        owner = hosting_worker(second, "Approval/k1")
        doomed, survivor, client = (one, two, second) if owner == "w1" else (two, one, first)
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(10)
        killed_at = time.monotonic()
        while client.status("Approval/k1").owner != ("w2" if owner == "w1" else "w1"):
            assert time.monotonic() < killed_at + 20, "the lease was never taken over"
            time.sleep(0.05)
        client.deliver("Approval/k1", "decision", {"by": "bo", "approved": False})
        done = client.invocation(sent.invocation, wait=20)
        assert done.state == "completed"
        assert done.result == {"what": "rollback", "by": "bo", "approved": False}
    assert survivor.process.poll() is None


def test_a_second_worker_with_a_live_workers_id_is_refused(
    tmp_path: pathlib.Path, postgres_dsn: str
) -> None:
    with served(tmp_path, "--worker-id", "twin", "--lease-ttl", "1", journal=postgres_dsn):
        done = cli(
            "serve", APP, "--journal", postgres_dsn, "--worker-id", "twin", "--lease-ttl", "1",
            "--port", str(free_port()),
        )  # fmt: skip
    assert done.returncode == 1
    assert "worker id 'twin' belongs to a live worker on this journal" in done.stderr
