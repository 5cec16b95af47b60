"""A rolling deploy of a fleet of workers on one PostgreSQL journal, under load, with faults.

Real processes throughout: `actorflow serve tests.cluster.app --journal postgresql://...`
workers, a real PostgreSQL 15 (`tests.journal.postgres`), the outside ledger on threads of
this process (`tests.cluster.ledger`), and the seeded driver (`tests.cluster.driver`) sending
`RUNS` agent runs at a steady rate to any live worker. Each run takes `STEPS` ledger steps
with short durable naps and one durable timer of `LONG` seconds, over thirty times the grace
budget, so no run can drain in a SIGTERM's budget and every run in progress must be handed
over. The deploy, one worker at a time, each v2 worker started and ready before its v1
worker goes (new turns go to the newest version, so the v2 workers are the busy ones):

1. v2a starts; v1a gets SIGTERM (its actors are handed over at their step boundaries).
2. v2b starts; v1b gets SIGTERM.
3. v2a is SIGKILLed while one of its steps is certainly in flight (the ledger holds that
   call's answer): its actors are taken over once its leases expire. It is started again
   as v2d, as Kubernetes would restart a crashed pod.
4. PostgreSQL restarts with ``pg_ctl restart -m immediate``: every connection is cut.
5. v2b is SIGSTOPped (again mid-step) until another worker has taken over its held step,
   past its lease TTL, then SIGCONTed: it must be fenced, then serves on.
6. v2c starts; v1c gets SIGTERM. v2b, v2c and v2d finish every run.

Checked from outside once every run ended (see `check_*`): every acknowledged message
completed with its right result through any worker; every effect applied once at the
ledger, with the same amount on every call of its key, and exactly the effects expected; no
journal fork (each stream gapless, one turn per message, one end per turn, no step twice, one
outcome per invocation); no step result written by the paused worker after another worker
took its actor over, and its held step journaled by the worker that took it; every SIGTERMed
worker exited 0 within its grace budget holding no lease. Hand-off and take-over times are
printed (they are measured by the benchmarks, not asserted).
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.app import amount_for, run_total
from tests.cluster.driver import Driver, Finished, Message, finish
from tests.cluster.fleet import Fleet, Postgres, Worker, fleet
from tests.cluster.journal_check import (
    Database,
    journal_problems,
    read_journal,
    stale_appends,
    step_workers,
)
from tests.cluster.ledger import Attempt, Ledger, running_ledger

#: The SIGTERM budget. `actorflow serve` keeps half a second of it back for closing
#: connections, which leaves the turns a quarter of a second to reach a step boundary.
GRACE = 0.75
#: The durable timer in the middle of every run: over thirty times the grace budget (a
#: hundred times the turns' part of it), and as long as CI time allows.
LONG = 25.0
LEASE_TTL = 2.0
STEPS = 12
NAP = 0.15
RUNS = 100
#: Runs sent per second, from `SEED`.
RATE = 3.5
SEED = 11
#: Slack over the grace budget for a SIGTERM-to-exit measured from outside.
EXIT_SLACK = 0.5
#: Longest to wait for a held ledger call, and for a take-over after a lease expired.
HOLD_TIMEOUT = 15.0
TAKEOVER_TIMEOUT = LEASE_TTL + 15.0
#: A step a worker began this many seconds before its SIGTERM was in flight at it (the
#: ledger's steps take milliseconds).
IN_FLIGHT = 2.0
#: Longest every acknowledged run may take to end once all were sent.
FINISH_TIMEOUT = LONG + 45.0


def run_actor(run: int) -> str:
    return f"Agent/r{run:03d}"


def plan() -> list[Message]:
    args = {"steps": STEPS, "nap": NAP, "long": LONG}
    return [
        Message(run_actor(run), "run", {"run": run, **args}, f"roll-{run}") for run in range(RUNS)
    ]


class Deploy:
    """The running test: fleet, ledger, database, driver, and what it recorded."""

    def __init__(self, workers: Fleet, ledger: Ledger, db: Database, driver: Driver) -> None:
        self.fleet = workers
        self.ledger = ledger
        self.db = db
        self.driver = driver
        self.problems: list[str] = []
        self.figures: list[str] = []
        #: (worker, exit code, seconds from SIGTERM to exit) of every SIGTERM.
        self.terms: list[tuple[Worker, int, float]] = []
        #: Worker -> (Unix time of its SIGTERM, the actors it held then).
        self.handed: dict[str, tuple[float, list[str]]] = {}
        self.began = time.monotonic()

    def busy(self, worker: Worker, calls: int = 3) -> None:
        """Wait until ``worker`` has made ``calls`` more ledger calls (it has work)."""
        before = sum(a.worker == worker.name for a in self.ledger.snapshot()[0])
        self.ledger.wait_until(
            lambda attempts: sum(a.worker == worker.name for a in attempts) >= before + calls,
            f"{worker.name} to run steps",
            HOLD_TIMEOUT,
        )

    def progress(self, calls: int = 10) -> None:
        """Wait until the fleet made ``calls`` more ledger calls (it runs steps again)."""
        before = len(self.ledger.snapshot()[0])
        self.ledger.wait_until(
            lambda attempts: len(attempts) >= before + calls, "the fleet to run steps", 30.0
        )

    def mark(self, what: str) -> None:
        """Note in the figures when (seconds since the load began) ``what`` happens."""
        self.figures.append(f"{time.monotonic() - self.began:5.1f} s: {what}")

    def replace(self, name: str) -> Worker:
        """Start the v2 worker ``name`` and wait until it is ready and live."""
        (worker,) = self.fleet.start(name, build_id="v2")
        return worker

    def terminate(self, worker: Worker) -> None:
        """SIGTERM ``worker``; record its exit and how fast its leases were taken up."""
        held = self.db.actors_held(worker.name)
        self.handed[worker.name] = (time.time(), held)
        began = worker.signal(signal.SIGTERM)
        reowned: dict[str, float] = {}
        deadline = began + GRACE + 10.0
        exited_at: float | None = None
        while time.monotonic() < deadline:
            if exited_at is None and worker.proc.poll() is not None:
                exited_at = time.monotonic()
                self.fleet.remove(worker)
                # At once: leases it left behind would expire and move on within the TTL.
                left = self.db.leases_of(worker.name)
                if left:
                    self.problems.append(f"{worker.name} exited holding leases {left[:5]}")
            owners = self.db.owners(held) if held else {}
            for name, owner in owners.items():
                if owner not in ("", worker.name) and name not in reowned:
                    reowned[name] = time.monotonic() - began
            if exited_at is not None and (
                len(reowned) == len(held) or time.monotonic() > exited_at + 2.0
            ):
                break
            time.sleep(0.02)
        exit = worker.wait_exit(GRACE + 10.0)
        self.fleet.remove(worker)
        self.terms.append((worker, exit.code, exit.seconds))
        times = sorted(reowned.values())
        self.figures.append(
            f"SIGTERM {worker.name}: exit {exit.seconds:.2f} s; {len(held)} leases, "
            f"{len(times)} taken by another worker within 2 s of its exit"
            + (f" (p50 {statistics.median(times):.2f} s, max {times[-1]:.2f} s)" if times else "")
        )

    def terminate_all(self, workers: list[Worker]) -> None:
        """SIGTERM ``workers`` at once (the end of the test); record their exits."""
        for worker in workers:
            self.fleet.remove(worker)
            self.handed[worker.name] = (time.time(), [])
            worker.signal(signal.SIGTERM)
        for worker in workers:
            exit = worker.wait_exit(GRACE + 10.0)
            self.terms.append((worker, exit.code, exit.seconds))
            left = self.db.leases_of(worker.name)
            if left:
                self.problems.append(f"{worker.name} exited holding leases {left[:5]}")

    def abandoned(self, worker: Worker) -> int:
        """How many turns a SIGTERMed worker says it abandoned (cancelled at the end of
        its budget, mid-step); a problem unless it said so once."""
        reports = worker.events("stopped-turns")
        if len(reports) != 1:
            self.problems.append(f"{worker.name}: {len(reports)} event=stopped-turns lines")
            return 0
        self.figures.append(f"{worker.name} stopped turns: {reports[0]}")
        return int(reports[0].get("abandoned", "0"))

    def kill_mid_step(self, worker: Worker) -> Attempt:
        """SIGKILL ``worker`` while its ledger call is held; wait for the take-over."""
        hold = self.ledger.hold(worker.name)
        held = hold.wait_held(HOLD_TIMEOUT)
        killed_at = worker.signal(signal.SIGKILL)
        exit = worker.wait_exit(10.0)
        hold.release()
        if exit.code != -signal.SIGKILL:
            self.problems.append(f"{worker.name}: exit code {exit.code} after SIGKILL")
        self.await_takeover(held, worker)
        self.fleet.remove(worker)  # till now clients kept trying it, as behind a slow balancer
        self.figures.append(
            f"SIGKILL {worker.name} mid-step ({held.key}): taken over after "
            f"{time.monotonic() - killed_at:.2f} s (lease TTL {LEASE_TTL} s)"
        )
        return held

    def await_takeover(self, held: Attempt, worker: Worker) -> None:
        """Wait until another worker than ``worker`` ran the held step again."""
        self.ledger.wait_until(
            lambda attempts: any(a.key == held.key and a.worker != worker.name for a in attempts),
            f"another worker to run {held.key} (held by {worker.name}) again",
            TAKEOVER_TIMEOUT,
            lambda: self.explain(held.actor),
        )

    def explain(self, actor: str) -> str:
        """The fleet as the database and the ledger see it, and the workers' logs."""
        members = self.db.fetch(
            "SELECT member, round(extract(epoch FROM expires_at - now())::numeric, 2) "
            "FROM journal_members ORDER BY member"
        )
        leases = self.db.fetch(
            "SELECT owner, count(*), round(min(extract(epoch FROM expires_at - now()))::numeric, 2)"
            " FROM journal_leases GROUP BY owner ORDER BY owner"
        )
        sessions = self.db.fetch(
            "SELECT pid, state, wait_event_type, wait_event, "
            "round(extract(epoch FROM now() - xact_start)::numeric, 2), left(query, 60) "
            "FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
        )
        attempts, _ = self.ledger.snapshot()
        now = time.time()
        last = {a.worker: round(now - a.at, 2) for a in attempts}
        views = []
        for running in self.fleet.running():
            try:
                body = httpx.get(f"{running.url}/v1/actors/{actor}", timeout=2.0).text
                metrics = httpx.get(f"{running.url}/metrics", timeout=2.0).text
            except httpx.TransportError as exc:
                body, metrics = repr(exc), ""
            worker_lines = [line for line in metrics.splitlines() if "worker" in line]
            views.append(f"{running.name} says of {actor}: {body}\n  {worker_lines}")
        return (
            "\n".join(views) + "\n"
            f"sessions in a transaction (pid, state, waiting on, seconds, query): "
            f"{[tuple(row) for row in sessions]}\n"
            f"members (expires in): {[tuple(row) for row in members]}\n"
            f"leases (owner, count, soonest expiry): {[tuple(row) for row in leases]}\n"
            f"seconds since each worker's last ledger call: {last}\n{self.fleet.logs()}"
        )

    def pause_past_ttl(self, worker: Worker) -> tuple[Attempt, list[str], int]:
        """SIGSTOP ``worker`` mid-step until another worker took over its held step, then
        SIGCONT it. Returns the held call, the actors it held, and the journal's last
        global position once it was stopped."""
        hold = self.ledger.hold(worker.name)
        held = hold.wait_held(HOLD_TIMEOUT)
        stopped_at = worker.signal(signal.SIGSTOP)
        while not worker.stopped():
            time.sleep(0.005)
        mark = self.db.last_global()
        lost = self.db.actors_held(worker.name)
        hold.release()  # its answer waits in the socket until the worker runs again
        self.await_takeover(held, worker)
        taken = time.monotonic() - stopped_at
        # Till now clients kept sending to it: their sends time out and go to another worker
        # with the same key, while the stopped worker still holds them, to accept on waking.
        self.fleet.remove(worker)
        worker.signal(signal.SIGCONT)
        worker.wait_ready()
        self.fleet.add(worker)
        self.figures.append(
            f"SIGSTOP {worker.name} mid-step ({held.key}), {len(lost)} leases: taken over "
            f"after {taken:.2f} s, then SIGCONT"
        )
        return held, lost, mark


def check_results(driver: Driver, finished: Finished) -> list[str]:
    """Every run acknowledged, completed with its total, one step per worker entry, and a
    re-send with its key names the same invocation."""
    problems = []
    if len(driver.accepted) != RUNS:
        problems.append(f"only {len(driver.accepted)} of {RUNS} runs were acknowledged")
    for message in driver.plan:
        invocation = driver.accepted.get(message.key)
        if invocation is None:
            continue
        if not invocation.startswith(message.actor + "#"):
            problems.append(f"{message.key}: invocation {invocation} is another actor's")
        body: dict[str, Any] = finished.statuses.get(message.key, {})
        total = run_total(message.actor, message.args["run"], STEPS)
        result = body.get("result") or {}
        if body.get("state") != "completed" or result.get("total") != total:
            problems.append(f"{message.key} ({invocation}): {body}, expected a total of {total}")
        elif len(result.get("workers", [])) != STEPS:
            problems.append(f"{message.key}: result names {result['workers']}")
        if finished.resent.get(message.key) != (200, invocation):
            problems.append(
                f"{message.key}: a re-send with its key answered "
                f"{finished.resent.get(message.key)}, expected 200 and {invocation}"
            )
    return problems


def check_ledger(
    ledger: Ledger, runs: list[Message], sigterms: dict[str, tuple[float, int]]
) -> tuple[list[str], int]:
    """Exactly the expected effects, each applied once, every call of a key with one amount;
    and a step in flight at a SIGTERM ran again only if the worker said it abandoned it
    (``sigterms``: worker -> Unix time of its SIGTERM and the turns its log says it
    abandoned; a step that worker began up to `IN_FLIGHT` seconds before it counts). Also
    returns how many calls were re-runs."""
    problems = []
    attempts, applied = ledger.snapshot()
    expected = {(m.actor, step) for m in runs for step in range(STEPS)}
    effects = Counter((a.actor, a.step) for a in applied.values())
    doubled = sorted(effect for effect, count in effects.items() if count > 1)
    missing = sorted(expected - set(effects))
    extra = sorted(set(effects) - expected)
    if doubled or missing or extra:
        problems.append(
            f"ledger: effects applied under two keys: {doubled[:5]} ({len(doubled)}), never: "
            f"{missing[:5]} ({len(missing)}), unexpected: {extra[:5]} ({len(extra)})"
        )
    for attempt in attempts:
        first = applied[attempt.key]
        if attempt.amount != amount_for(attempt.actor, attempt.step) or (
            (attempt.actor, attempt.step) != (first.actor, first.step)
        ):
            problems.append(f"ledger: {attempt} differs from the key's first call {first}")
    reruns = [a for a in attempts if not a.applied]
    in_flight: dict[str, set[str]] = {}
    for rerun in reruns:
        first = applied[rerun.key]
        signalled = sigterms.get(first.worker)
        if signalled is not None and first.at >= signalled[0] - IN_FLIGHT:
            in_flight.setdefault(first.worker, set()).add(rerun.key)
    for worker, keys in sorted(in_flight.items()):
        if len(keys) > sigterms[worker][1]:
            problems.append(
                f"ledger: {sorted(keys)} ran on {worker} as it got SIGTERM and again "
                f"elsewhere, but it abandoned only {sigterms[worker][1]} turns: a SIGTERM "
                f"lets a step finish and journals it"
            )
    return problems, len(reruns)


def check_handoffs(deploy: Deploy, streams: Any) -> None:
    """Figures: how soon after a SIGTERM another worker took each handed-over actor's next
    step, counted from when that step was due (its nap's end) or the SIGTERM if later."""
    attempts, _ = deploy.ledger.snapshot()
    for name, (signalled, actors) in deploy.handed.items():
        delays = []
        for actor in actors:
            after = [a for a in attempts if a.actor == actor and a.at >= signalled]
            if not after or after[0].worker == name or after[0].step == 0:
                continue
            timers = [e.data for e in streams[f"actor/{actor}"].entries if e.type == "timer"]
            due = timers[after[0].step - 1]["fire_at"] if len(timers) >= after[0].step else 0
            delays.append(after[0].at - max(signalled, due))
        delays.sort()
        if delays:
            deploy.figures.append(
                f"hand-off after SIGTERM {name}: {len(delays)} actors' next step ran on "
                f"another worker {statistics.median(delays):.3f} s (p50), "
                f"{delays[-1]:.3f} s (max) after it was due"
            )


@pytest.mark.timeout(170)
def test_rolling_deploy_with_faults_loses_nothing(tmp_path: Path, postgres: Postgres) -> None:
    """v1 -> v2 one worker at a time under load, with a SIGKILL, a SIGSTOP past the lease
    TTL and a PostgreSQL restart on the way: nothing lost, doubled, forked or stale."""
    started = time.monotonic()
    options = {"grace": GRACE, "lease_ttl": LEASE_TTL}
    with running_ledger() as ledger, fleet(tmp_path, postgres.dsn, ledger.url, **options) as pool:
        db = Database(postgres.dsn)
        try:
            v1a, v1b, v1c = pool.start("v1a", "v1b", "v1c", build_id="v1")
            driver = Driver(pool.live_urls, plan(), rate=RATE, seed=SEED)
            deploy = Deploy(pool, ledger, db, driver)
            driver.start()
            try:
                for worker in (v1a, v1b, v1c):
                    deploy.busy(worker)
                deploy.mark("v2a starts, v1a gets SIGTERM")
                v2a = deploy.replace("v2a")
                deploy.terminate(v1a)
                deploy.mark("v2b starts, v1b gets SIGTERM")
                v2b = deploy.replace("v2b")
                deploy.terminate(v1b)

                # A new pod crashes mid-step (it is the busiest: new turns go to the newest
                # version), and is started again.
                deploy.mark("v2a is SIGKILLed mid-step")
                killed = deploy.kill_mid_step(v2a)
                deploy.replace("v2d")

                deploy.mark("PostgreSQL restarts")
                restarted = time.monotonic()
                postgres.restart()
                deploy.figures.append(
                    f"PostgreSQL restarted (-m immediate) in {time.monotonic() - restarted:.2f} s"
                )
                deploy.progress()

                deploy.mark("v2b is SIGSTOPped mid-step")
                paused, lost, mark = deploy.pause_past_ttl(v2b)
                deploy.mark("v2c starts, v1c gets SIGTERM")
                deploy.replace("v2c")
                deploy.terminate(v1c)
                driver.wait_sent(RUNS / RATE + 60.0)
                deploy.mark("every run was acknowledged")
            finally:
                driver.close()
            deploy.problems += driver.problems
            finished = asyncio.run(finish(driver, FINISH_TIMEOUT))
            deploy.problems += check_results(driver, finished)
            deploy.terminate_all(pool.running())
            for worker, code, seconds in deploy.terms:
                if code != 0 or seconds > GRACE + EXIT_SLACK:
                    deploy.problems.append(
                        f"{worker.name}: exit code {code} {seconds:.2f} s after SIGTERM; "
                        f"expected 0 within the grace budget of {GRACE} s (+{EXIT_SLACK} s)"
                    )

            streams = read_journal(db, ("actor/", "inbox/", "outcomes/"))
            accepted = {
                m.actor: driver.accepted[m.key] for m in driver.plan if m.key in driver.accepted
            }
            deploy.problems += journal_problems(streams, accepted)
            stale, taken = stale_appends(streams, paused.worker, lost, mark)
            deploy.problems += stale
            journaled = [worker for _, step, worker in step_workers(streams, paused.actor)]
            if paused.worker in journaled[paused.step : paused.step + 1]:
                deploy.problems.append(
                    f"{paused.key}: the result of the step held when {paused.worker} was "
                    f"paused was journaled by {paused.worker}, after another worker ran it"
                )
            sigterms = {
                worker.name: (deploy.handed[worker.name][0], deploy.abandoned(worker))
                for worker, _, _ in deploy.terms
            }
            ledger_problems, reruns = check_ledger(ledger, driver.plan, sigterms)
            deploy.problems += ledger_problems
            if not any(a.key == killed.key and not a.applied for a in ledger.snapshot()[0]):
                deploy.problems.append(f"{killed.key} (in flight at the SIGKILL) never ran again")
            check_handoffs(deploy, streams)
            if deploy.problems:
                shown = "\n  ".join(deploy.problems[:40])
                pytest.fail(
                    f"{len(deploy.problems)} problems:\n  {shown}\n{pool.logs()}", pytrace=False
                )
        finally:
            db.close()
    attempts, applied = ledger.snapshot()
    print(
        f"\n{len(driver.accepted)} runs, {len(applied)} effects applied once each from "
        f"{len(attempts)} calls ({reruns} re-runs); sends {dict(driver.outcomes)}, "
        f"{len(driver.ambiguous)} cut and retried; polls {dict(driver.polls)}; "
        f"{taken} of {len(lost)} actors of the paused worker written by others after it "
        f"stopped;\n  " + "\n  ".join(deploy.figures) + f"\n  {time.monotonic() - started:.1f} s"
    )
