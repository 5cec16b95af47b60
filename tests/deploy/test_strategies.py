"""Each shutdown strategy in a real `actorflow serve` process, stopped with SIGTERM.

One server runs five turns at once, each caught mid-way by the SIGTERM (grace `GRACE`):

- ``Drainer/d1`` (``drain``), a turn of about 1.4 s: it finishes during the shutdown;
- ``Keeper/c1`` (``checkpoint``), a turn of about 3 s: it stops at its next step boundary,
  and the next server resumes it at exactly that step;
- ``Saga/s1`` (``compensate``), two compensated steps then a 30 s nap: it is cancelled and
  its two compensations run in reverse order, exactly once;
- ``Saga/s2`` (``compensate``) already past its irreversible step, a short nap before its
  last step: it finishes instead of compensating;
- ``Saga/s3`` (``compensate``) past its irreversible step, a nap longer than the budget:
  it is checkpointed near the end of the budget, and finishes on the next server;
- ``Drainer/d4`` (``drain``), a turn longer than the budget: it goes on during the
  shutdown, is checkpointed near the end of the budget, and finishes on the next server.

The scenario runs once (a module fixture); each test checks one strategy's outcome. A last
test, on servers of its own, has a ``compensate`` turn whose undos outlast the budget.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.app import work_result
from tests.deploy.support import (
    CLIENT_TIMEOUT,
    EXIT_SLACK,
    TERMINAL,
    Applied,
    Attempt,
    Exit,
    effects_of,
    free_port,
    invocation_path,
    journal,
    journal_problems,
    read_ledger,
    send,
    servers,
    status,
    wait_for,
    wait_for_ledger,
)

pytestmark = pytest.mark.deploy

GRACE = 4.0
DRAIN_STEPS, DRAIN_NAP = 8, 0.2
KEEP_STEPS, KEEP_NAP = 10, 0.3
LONG_AFTER = 6.0
LONG_DRAIN_STEPS, LONG_DRAIN_NAP = 12, 0.4

MESSAGES: dict[str, tuple[str, dict[str, Any]]] = {
    "Drainer/d1": ("work", {"steps": DRAIN_STEPS, "nap": DRAIN_NAP}),
    "Keeper/c1": ("work", {"steps": KEEP_STEPS, "nap": KEEP_NAP}),
    "Saga/s1": ("book", {"hold_s": 30.0}),
    "Saga/s2": ("book", {"ship": True, "after": 1.2}),
    "Saga/s3": ("book", {"ship": True, "after": LONG_AFTER}),
    "Drainer/d4": ("work", {"steps": LONG_DRAIN_STEPS, "nap": LONG_DRAIN_NAP}),
}
#: How far each turn must have got before the SIGTERM.
READY = {
    "Drainer/d1": 1,
    "Keeper/c1": 2,
    "Saga/s1": ["reserve", "charge"],
    "Saga/s2": ["ship"],
    "Saga/s3": ["ship"],
    "Drainer/d4": 1,
}


@dataclasses.dataclass
class Outcome:
    """What the scenario left: the first server's exit and log, the invocations' final
    statuses (read from the second server), the journals, and the ledger."""

    exit: Exit
    report: dict[str, str]
    #: The effects applied when the SIGTERM was sent.
    at_signal: list[Applied]
    invocations: dict[str, str]
    statuses: dict[str, dict[str, Any]]
    journals: dict[str, list[dict[str, Any]]]
    applied: list[Applied]
    attempts: list[Attempt]
    logs: str

    def effects(self, actor: str, generation: int | None = None) -> list[str]:
        rows = [r for r in self.applied if generation is None or r.generation == generation]
        return effects_of(rows, actor)

    def fail(self, message: str) -> str:
        return f"{message}\n{self.logs}"


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    """Run the scenario once for every test of this module."""
    workdir = tmp_path_factory.mktemp("strategies")
    port = free_port()
    with servers(workdir) as pool:
        first = pool.start(port, GRACE)
        with httpx.Client(base_url=first.url, timeout=CLIENT_TIMEOUT) as client:
            invocations = {
                actor: send(client, actor, handler, args)
                for actor, (handler, args) in MESSAGES.items()
            }
        wait_for_ledger(pool.ledger, READY)
        at_signal, _ = read_ledger(pool.ledger)
        first.signal(signal.SIGTERM)
        stopped = first.wait_exit(GRACE + 10.0)
        reports = first.events("stopped-turns")
        second = pool.start(port, GRACE)
        with httpx.Client(base_url=second.url, timeout=CLIENT_TIMEOUT) as client:
            statuses = {
                actor: wait_for(client, invocation, 20.0)
                for actor, invocation in invocations.items()
            }
            journals = {actor: journal(client, actor) for actor in MESSAGES}
        second.signal(signal.SIGTERM)
        assert second.wait_exit(GRACE + 10.0).code == 0, pool.logs()
        applied, attempts = read_ledger(pool.ledger)
        yield Outcome(
            stopped,
            reports[0] if len(reports) == 1 else {"lines": str(reports)},
            at_signal,
            invocations,
            statuses,
            journals,
            applied,
            attempts,
            pool.logs(),
        )


def test_sigterm_exits_zero_within_the_budget(outcome: Outcome) -> None:
    assert outcome.exit.code == 0, outcome.fail("the first server did not exit 0")
    assert outcome.exit.seconds <= GRACE + EXIT_SLACK, outcome.fail(
        f"exit {outcome.exit.seconds:.2f} s after SIGTERM; the budget is {GRACE} s"
    )


def test_the_log_counts_each_turn_by_what_became_of_it(outcome: Outcome) -> None:
    # d1 and s2 finished, c1, s3 and d4 were checkpointed, s1 was compensated.
    expected = {
        "running": "6",
        "checkpointed": "3",
        "finished": "2",
        "compensated": "1",
        "abandoned": "0",
    }
    report = {key: outcome.report.get(key) for key in expected}
    assert report == expected, outcome.fail(f"event=stopped-turns said {outcome.report}")


def test_every_effect_applied_once_and_no_step_journaled_twice(outcome: Outcome) -> None:
    keys = Counter(row.key for row in outcome.attempts)
    assert [key for key, count in keys.items() if count > 1] == [], outcome.fail("re-executed")
    problems = [p for a, entries in outcome.journals.items() for p in journal_problems(entries, a)]
    assert problems == [], outcome.fail("journal problems")


def test_drain_turn_finishes_during_shutdown(outcome: Outcome) -> None:
    actor = "Drainer/d1"
    status = outcome.statuses[actor]
    assert status["state"] == "completed", outcome.fail(f"{actor}: {status}")
    assert status["result"] == work_result(actor, DRAIN_STEPS)
    # Every one of its effects was applied by the first server: it finished there.
    done = [f"effect {step}" for step in range(DRAIN_STEPS)]
    assert outcome.effects(actor, generation=0) == done, outcome.fail(
        f"{actor}: effects by the first server {outcome.effects(actor, 0)}, "
        f"by the second {outcome.effects(actor, 1)}"
    )
    assert int(outcome.report.get("finished", "0")) >= 1, outcome.fail("no turn finished")


def test_checkpoint_turn_resumes_at_the_exact_step(outcome: Outcome) -> None:
    actor = "Keeper/c1"
    status = outcome.statuses[actor]
    assert status["state"] == "completed", outcome.fail(f"{actor}: {status}")
    assert status["result"] == work_result(actor, KEEP_STEPS)
    before = [r.step for r in outcome.attempts if r.actor == actor and r.generation == 0]
    after = [r.step for r in outcome.attempts if r.actor == actor and r.generation == 1]
    # Stopped at a step boundary mid-turn, resumed at the next step: no step run twice,
    # none skipped, and all of it one turn.
    assert 2 <= len(before) < KEEP_STEPS, outcome.fail(f"{actor}: first server ran {before}")
    assert before + after == list(range(KEEP_STEPS)), outcome.fail(
        f"{actor}: steps run by the first server {before}, by the second {after}"
    )
    turns = {r.key.split("/")[2] for r in outcome.attempts if r.actor == actor}
    assert turns == {"t1"}, outcome.fail(f"{actor}: effects keyed by turns {turns}")
    # It stopped at once: at most the step in flight at the signal finished after it.
    signalled = len(effects_of(outcome.at_signal, actor))
    assert len(before) <= signalled + 1, outcome.fail(
        f"{actor}: {signalled} steps done at the SIGTERM, {len(before)} by the exit"
    )


def test_drain_turn_too_long_for_the_budget_is_checkpointed(outcome: Outcome) -> None:
    actor = "Drainer/d4"
    status = outcome.statuses[actor]
    assert status["state"] == "completed", outcome.fail(f"{actor}: {status}")
    assert status["result"] == work_result(actor, LONG_DRAIN_STEPS)
    before = [r.step for r in outcome.attempts if r.actor == actor and r.generation == 0]
    after = [r.step for r in outcome.attempts if r.actor == actor and r.generation == 1]
    signalled = len(effects_of(outcome.at_signal, actor))
    # It went on draining after the SIGTERM, was checkpointed before the end of the budget,
    # and the next server resumed it at the next step.
    assert signalled + 2 <= len(before) < LONG_DRAIN_STEPS, outcome.fail(
        f"{actor}: {signalled} steps done at the SIGTERM, {len(before)} by the exit"
    )
    assert before + after == list(range(LONG_DRAIN_STEPS)), outcome.fail(
        f"{actor}: steps run by the first server {before}, by the second {after}"
    )


def test_compensate_turn_is_undone_in_reverse_order_exactly_once(outcome: Outcome) -> None:
    actor = "Saga/s1"
    status = outcome.statuses[actor]
    assert status["state"] == "cancelled", outcome.fail(f"{actor}: {status}")
    assert status["compensated"] == ["charge", "reserve"], outcome.fail(f"{actor}: {status}")
    assert "shutdown" in (status["error"] or ""), outcome.fail(f"{actor}: {status}")
    # Compensated by the first server, during the shutdown, newest step first.
    expected = ["reserve", "charge", "undo charge", "undo reserve"]
    assert outcome.effects(actor) == expected, outcome.fail(f"{actor}: {outcome.effects(actor)}")
    assert outcome.effects(actor, generation=1) == [], outcome.fail(f"{actor} ran on restart")
    undone = [
        e for e in outcome.journals[actor] if e["type"] == "step" and "~undo" in e["data"]["step"]
    ]
    assert [e["data"]["name"] for e in undone] == ["charge", "reserve"], outcome.fail(
        f"{actor}: undo entries {undone}"
    )


def test_compensate_turn_past_its_irreversible_step_finishes(outcome: Outcome) -> None:
    actor = "Saga/s2"
    status = outcome.statuses[actor]
    assert (status["state"], status["result"]) == ("completed", "shipped"), outcome.fail(
        f"{actor}: {status}"
    )
    assert status["compensated"] == []
    # It finished on the first server, during the shutdown, and undid nothing.
    expected = ["reserve", "charge", "ship", "notify"]
    assert outcome.effects(actor, generation=0) == expected, outcome.fail(
        f"{actor}: first server {outcome.effects(actor, 0)}, second {outcome.effects(actor, 1)}"
    )


def test_compensate_turn_past_its_irreversible_step_checkpoints_if_too_long(
    outcome: Outcome,
) -> None:
    actor = "Saga/s3"
    status = outcome.statuses[actor]
    assert (status["state"], status["result"]) == ("completed", "shipped"), outcome.fail(
        f"{actor}: {status}"
    )
    assert status["compensated"] == []
    # Its nap outlasted the budget: checkpointed, then finished by the second server.
    assert outcome.effects(actor, generation=0) == ["reserve", "charge", "ship"], outcome.fail(
        f"{actor}: first server {outcome.effects(actor, 0)}"
    )
    assert outcome.effects(actor, generation=1) == ["notify"], outcome.fail(
        f"{actor}: second server {outcome.effects(actor, 1)}"
    )
    # The next server re-armed its nap with the time that was left, not a fresh one.
    entries = outcome.journals[actor]
    (fire_at,) = [e["data"]["fire_at"] for e in entries if e["type"] == "timer"]
    (notified,) = [
        e["at"] for e in entries if e["type"] == "step" and e["data"]["name"] == "notify"
    ]
    assert fire_at <= notified < fire_at + 1.0, outcome.fail(
        f"{actor}: its nap was to end at {fire_at}, the step after it ran at {notified}"
    )


@pytest.mark.timeout(60)
def test_compensation_longer_than_the_budget_goes_on_in_the_next_server(
    tmp_path: Path,
) -> None:
    """A ``compensate`` turn whose undos outlast the budget: the shutdown cannot finish
    compensating, so the next server must. The turn was cancelled; it must not resume
    forward (its nap ending, then ``confirm``) past undos already applied."""
    # The budget is 3.5 s (grace 4 less the server's 0.5 s exit margin), and what still runs
    # 0.7 s before its end is checkpointed: the first undo ends in between (so no step is in
    # flight when the budget ends), and the second would not fit.
    grace, undo_s = 4.0, 3.15
    actor = "Saga/s5"
    port = free_port()
    with servers(tmp_path) as pool:
        first = pool.start(port, grace)
        with httpx.Client(base_url=first.url, timeout=CLIENT_TIMEOUT) as client:
            invocation = send(client, actor, "book", {"hold_s": 5.0, "undo_s": undo_s})
        wait_for_ledger(pool.ledger, {actor: ["charge"]})
        first.signal(signal.SIGTERM)
        stopped = first.wait_exit(grace + 10.0)
        second = pool.start(port, grace)
        with httpx.Client(base_url=second.url, timeout=CLIENT_TIMEOUT) as client:
            final = status(client, invocation)
            deadline = time.monotonic() + 15.0
            actor_status = client.get(f"/v1/actors/{actor}").json()
            while final["state"] not in TERMINAL and time.monotonic() < deadline:
                if actor_status["state"] == "stuck":
                    break
                response = client.get(invocation_path(invocation), params={"wait": "1"})
                final = response.json()
                actor_status = client.get(f"/v1/actors/{actor}").json()
            entries = journal(client, actor)
        second.signal(signal.SIGTERM)
        second.wait_exit(grace + 10.0)
        applied, _ = read_ledger(pool.ledger)
        logs = pool.logs()

    assert stopped.code == 0, logs
    assert stopped.seconds <= grace + EXIT_SLACK, (stopped, logs)
    effects = effects_of(applied, actor)
    steps = [
        f"{e['type']} {e['data'].get('step')} {e['data'].get('name')}"
        for e in entries
        if e["stream"] == "actor"
    ]
    details = (
        f"\ninvocation: {final}\nactor: {actor_status}\nledger: {effects}\njournal: {steps}\n{logs}"
    )
    assert "confirm" not in effects, f"the cancelled saga went on after its undos{details}"
    assert effects == ["reserve", "charge", "undo charge", "undo reserve"], details
    assert final["state"] == "cancelled", details
    assert final["compensated"] == ["charge", "reserve"], details
