"""What clients see while `actorflow serve` shuts down, and a second signal.

- During a drain, ``/readyz`` answers 503 at once, sends and event deliveries get 503 with
  Retry-After (and are not accepted), status reads and ``/livez`` still work, while the
  process is still up; it then exits 0 with the drained turn finished.
- A second SIGTERM during a long drain exits at once, well before the budget; the next
  server finishes everything that was acknowledged, every effect once.
"""

from __future__ import annotations

import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest

from tests.deploy.app import work_result
from tests.deploy.support import (
    CLIENT_TIMEOUT,
    EXIT_SLACK,
    Attempt,
    effects_of,
    free_port,
    journal,
    journal_problems,
    message_path,
    read_ledger,
    send,
    servers,
    status,
    wait_for,
    wait_for_ledger,
)

pytestmark = pytest.mark.deploy


def _until_not_ready(client: httpx.Client, timeout: float = 2.0) -> float:
    """Poll /readyz until it answers 503; how long that took after the call."""
    began = time.monotonic()
    while True:
        response = client.get("/readyz")
        if response.status_code == 503:
            return time.monotonic() - began
        assert response.status_code == 200, response.text
        if time.monotonic() - began > timeout:
            pytest.fail(f"/readyz still answered 200 {timeout} s after SIGTERM", pytrace=False)
        time.sleep(0.005)


@pytest.mark.timeout(60)
def test_readiness_fails_and_sends_get_503_during_the_drain(tmp_path: Path) -> None:
    grace, steps, nap = 5.0, 7, 0.25  # a drain turn of about 1.5 s
    actor = "Drainer/d2"
    port = free_port()
    with servers(tmp_path) as pool:
        server = pool.start(port, grace)
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
            assert client.get("/readyz").status_code == 200
            invocation = send(client, actor, "work", {"steps": steps, "nap": nap})
            wait_for_ledger(pool.ledger, {actor: 1})
            server.signal(signal.SIGTERM)
            flipped = _until_not_ready(client)

            refused = client.post(
                message_path("Drainer/late", "work"),
                json={"steps": 1, "nap": 0},
                headers={"Idempotency-Key": "late-1"},
            )
            delivered = client.post("/v1/actors/Drainer/late/events/go", json={"x": 1})
            again = client.get("/readyz")
            alive = client.get("/livez")
            during = status(client, invocation)
            still_up = server.proc.poll() is None

        stopped = server.wait_exit(grace + 10.0)
        logs = pool.logs()
        assert flipped < 1.0, logs
        for response in (refused, delivered):
            assert response.status_code == 503, (response.text, logs)
            assert response.headers.get("retry-after", "").isdigit(), (response.headers, logs)
            assert response.json()["error"]["type"] == "shutting_down", response.text
        assert again.status_code == 503, again.text
        assert alive.status_code == 200, alive.text
        assert during["state"] == "running", (during, logs)
        assert still_up, f"the server had exited before the 503s were checked\n{logs}"
        assert stopped.code == 0, logs
        assert stopped.seconds <= grace + EXIT_SLACK, (stopped, logs)
        report = server.events("stopped-turns")
        assert [(r["running"], r["finished"], r["abandoned"]) for r in report] == [
            ("1", "1", "0")
        ], logs

        # The next server: the drained turn had finished, the refused send left nothing.
        server = pool.start(port, grace)
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
            done = wait_for(client, invocation, 5.0)
            late = journal(client, "Drainer/late")
        server.signal(signal.SIGTERM)
        assert server.wait_exit(grace + 10.0).code == 0, pool.logs()
        applied, _ = read_ledger(pool.ledger)
    assert (done["state"], done["result"]) == ("completed", work_result(actor, steps)), done
    assert effects_of([r for r in applied if r.generation == 0], actor) == [
        f"effect {step}" for step in range(steps)
    ]
    assert late == [], f"a send refused with 503 was journaled: {late}"


def _reexecution_problems(attempts: list[Attempt], stopped_at_once: int) -> list[str]:
    """A step may run again only if it was its actor's last call in the generation that
    exited at once (the step in flight then), and only once."""
    problems = []
    calls: dict[str, list[Attempt]] = defaultdict(list)
    last: dict[tuple[int, str], Attempt] = {}
    for call in attempts:
        calls[call.key].append(call)
        last[(call.generation, call.actor)] = call
    for key, key_calls in calls.items():
        for call in key_calls[:-1]:
            if (
                call.generation != stopped_at_once
                or last[(call.generation, call.actor)] is not call
            ):
                problems.append(f"{key} ran again: {key_calls}")
    return problems


@pytest.mark.timeout(60)
def test_a_second_sigterm_exits_at_once_and_loses_nothing(tmp_path: Path) -> None:
    grace = 10.0
    drain_steps, drain_nap = 10, 0.5  # a drain turn of about 4.5 s, too long to wait for
    keep_steps, keep_nap = 8, 0.2
    port = free_port()
    with servers(tmp_path) as pool:
        server = pool.start(port, grace)
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
            messages = [
                ("Drainer/d3", drain_steps, drain_nap),
                ("Drainer/d3", 2, 0.05),  # two more for it, queued behind the long turn
                ("Drainer/d3", 3, 0.05),
                ("Keeper/k3", keep_steps, keep_nap),
            ]
            sent = [
                (actor, steps, send(client, actor, "work", {"steps": steps, "nap": nap}))
                for actor, steps, nap in messages
            ]
            wait_for_ledger(pool.ledger, {"Drainer/d3": 1, "Keeper/k3": 1})
            server.signal(signal.SIGTERM)
            _until_not_ready(client)
        time.sleep(0.3)  # the drain is under way
        assert server.proc.poll() is None, pool.logs()
        second = time.monotonic()
        server.signal(signal.SIGTERM)
        stopped = server.wait_exit(grace + 10.0)
        after_second = time.monotonic() - second
        logs = pool.logs()
        assert after_second < 1.0, f"{after_second:.2f} s from the second SIGTERM to exit\n{logs}"
        assert stopped.seconds < grace / 2, (stopped, logs)
        assert server.events("exit-now"), logs
        assert not server.events("stopped-turns"), f"the drain had already ended\n{logs}"

        server = pool.start(port, grace)
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
            finals = [(actor, steps, wait_for(client, inv, 20.0)) for actor, steps, inv in sent]
            journals = {actor: journal(client, actor) for actor in ("Drainer/d3", "Keeper/k3")}
        server.signal(signal.SIGTERM)
        assert server.wait_exit(grace + 10.0).code == 0, pool.logs()
        applied, attempts = read_ledger(pool.ledger)

    logs = pool.logs()
    for actor, steps, body in finals:
        assert (body["state"], body["result"]) == ("completed", work_result(actor, steps)), (
            body,
            logs,
        )
    assert journal_problems(journals["Drainer/d3"], "Drainer/d3", turns=3) == [], logs
    assert journal_problems(journals["Keeper/k3"], "Keeper/k3") == [], logs
    # Every effect of every acknowledged message applied once.
    by_turn = Counter((r.actor, r.key.split("/")[2], r.step) for r in applied)
    expected = Counter(
        [("Drainer/d3", "t1", s) for s in range(drain_steps)]
        + [("Drainer/d3", "t2", s) for s in range(2)]
        + [("Drainer/d3", "t3", s) for s in range(3)]
        + [("Keeper/k3", "t1", s) for s in range(keep_steps)]
    )
    assert by_turn == expected, (by_turn, logs)
    assert _reexecution_problems(attempts, stopped_at_once=0) == [], logs


@pytest.mark.timeout(60)
@pytest.mark.parametrize("blocking", [False, True], ids=["async-step", "sync-step-in-a-thread"])
def test_a_step_still_running_when_the_budget_ends_is_abandoned_and_run_again(
    tmp_path: Path, blocking: bool
) -> None:
    """A checkpointing turn stuck in a step slower than the budget: the process still exits
    0 inside the budget (a sync step's worker thread is left behind, not waited for); the
    next server runs that step again under the same idempotency key (the ledger applies it
    once) and finishes the turn."""
    grace, seconds = 2.0, 3.0
    actor = "Keeper/slow"
    port = free_port()
    with servers(tmp_path) as pool:
        server = pool.start(port, grace)
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
            invocation = send(client, actor, "slow", {"seconds": seconds, "blocking": blocking})
        wait_for_ledger(pool.ledger, {actor: ["effect 1"]})  # the slow step is in flight
        server.signal(signal.SIGTERM)
        stopped = server.wait_exit(grace + 10.0)
        first = server
        server = pool.start(port, grace)
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
            done = wait_for(client, invocation, seconds + 10.0)
            entries = journal(client, actor)
        server.signal(signal.SIGTERM)
        last = server.wait_exit(grace + 10.0)
        applied, attempts = read_ledger(pool.ledger)
        logs = pool.logs()

    calls = [(r.step, r.generation) for r in attempts if r.actor == actor]
    slow_keys = {r.key for r in attempts if r.actor == actor and r.step == 1}
    report = [(r["running"], r["abandoned"]) for r in first.events("stopped-turns")]
    outcome = (done["state"], done["result"])
    effects = effects_of(applied, actor)
    in_journal = journal_problems(entries, actor)
    checks = [
        (stopped.code == 0, f"exit code {stopped.code} after SIGTERM, expected 0"),
        (stopped.seconds <= grace + EXIT_SLACK, f"exit {stopped.seconds:.2f} s after SIGTERM"),
        (report == [("1", "1")], f"event=stopped-turns (running, abandoned): {report}"),
        (bool(first.events("exit")), "no event=exit line"),
        (last.code == 0, f"the last server exited {last.code}"),
        (outcome == ("completed", work_result(actor, 3)), f"invocation {done}"),
        (not in_journal, f"journal: {in_journal}"),
        (effects == ["effect 0", "effect 1", "effect 2"], f"effects applied {effects}"),
        (calls == [(0, 0), (1, 0), (1, 1), (2, 1)], f"(step, generation) of the calls {calls}"),
        (len(slow_keys) == 1, f"the slow step ran under keys {slow_keys}"),
    ]
    problems = [problem for ok, problem in checks if not ok]
    assert not problems, "\n".join(problems) + f"\n{logs}"
