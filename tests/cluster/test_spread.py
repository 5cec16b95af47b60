"""Two workers with a small capacity and a thousand agents: the load spreads, nobody starves.

Real `actorflow serve tests.cluster.app` workers on a real PostgreSQL, ``--capacity``
`CAPACITY` each. The seeded driver sends `AGENTS` `Quick` agents one message each, to either
worker at random; each agent takes one ledger step (which names the worker that ran it) and
a short durable nap, so it holds a place of its worker's capacity for a while. Checked from
outside: every acknowledged message completes within the test's bound with the right
result; each worker ran at least `FAIR_SHARE` of them (counted from the results); every
effect was applied once at the ledger; and no worker ever reported more actors active than
its capacity in ``GET /v1/workers`` (sampled throughout).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.cluster.driver import Driver, Message, finish
from tests.cluster.fleet import Postgres, fleet
from tests.cluster.journal_check import Database, journal_problems, read_journal
from tests.cluster.ledger import running_ledger

AGENTS = 1000
CAPACITY = 20
NAP = 0.05
#: Messages sent per second (faster than two workers of this capacity get through them).
RATE = 500.0
SEED = 7
#: Least fraction of the agents each worker must have run.
FAIR_SHARE = 0.3
#: Longest every acknowledged message may take to end once all were sent.
FINISH_TIMEOUT = 40.0


def agent(n: int) -> str:
    return f"Quick/q{n:04d}"


class Sampler:
    """Reads ``GET /v1/workers`` from each worker every 50 ms on a thread; keeps the
    highest load each worker reported and what was wrong."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.peak: Counter[str] = Counter()
        self.capacity: dict[str, int] = {}
        self.reads = 0
        self.problems: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=2.0) as client:
            while not self.stop.wait(0.05):
                for url in self.urls:
                    try:
                        response = client.get(url + "/v1/workers")
                    except httpx.TransportError as exc:
                        self.problems.append(f"{url}/v1/workers: {exc!r}")
                        continue
                    if response.status_code != 200:
                        self.problems.append(f"{url}/v1/workers: {response.status_code}")
                        continue
                    self.reads += 1
                    body = response.json()  # the live workers (the brief said {"items": [...]})
                    for item in body["items"] if isinstance(body, dict) else body:
                        self.peak[item["worker"]] = max(self.peak[item["worker"]], item["load"])
                        self.capacity[item["worker"]] = item["capacity"]

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10.0)


@pytest.mark.timeout(120)
def test_load_spreads_over_two_workers_and_nothing_starves(
    tmp_path: Path, postgres: Postgres
) -> None:
    started = time.monotonic()
    plan = [Message(agent(n), "once", {"n": n, "nap": NAP}, f"spread-{n}") for n in range(AGENTS)]
    with (
        running_ledger() as ledger,
        fleet(tmp_path, postgres.dsn, ledger.url, capacity=CAPACITY) as pool,
    ):
        workers = pool.start("wa", "wb", build_id="v1")
        driver = Driver(pool.live_urls, plan, rate=RATE, seed=SEED, senders=16, watchers=2)
        with Sampler([worker.url for worker in workers]) as sampler:
            driver.start()
            try:
                driver.wait_sent(60.0)
            finally:
                driver.close()
            sent = time.monotonic()
            finished = asyncio.run(finish(driver, FINISH_TIMEOUT, resend=False))
            drained = time.monotonic() - sent
        problems = list(driver.problems)
        if len(driver.accepted) != AGENTS:
            problems.append(f"only {len(driver.accepted)} of {AGENTS} messages acknowledged")
        ran: Counter[str] = Counter()
        for message in plan:
            body = finished.statuses.get(message.key, {})
            result = body.get("result") or {}
            if body.get("state") != "completed" or result.get("amount") != message.args["n"]:
                problems.append(f"{message.key}: {body}")
                continue
            ran[result["worker"]] += 1
        for worker in workers:
            if ran[worker.name] < FAIR_SHARE * AGENTS:
                problems.append(
                    f"{worker.name} ran {ran[worker.name]} of {AGENTS} agents, fewer than "
                    f"{FAIR_SHARE:.0%}: {dict(ran)}"
                )
            if sampler.capacity.get(worker.name) != CAPACITY:
                problems.append(
                    f"/v1/workers said {worker.name}'s capacity is "
                    f"{sampler.capacity.get(worker.name)}, expected {CAPACITY}"
                )
            if sampler.peak[worker.name] > CAPACITY:
                problems.append(
                    f"/v1/workers said {worker.name} had {sampler.peak[worker.name]} actors "
                    f"active, more than its capacity of {CAPACITY}"
                )
        problems += sampler.problems[:5]
        attempts, applied = ledger.snapshot()
        if sorted(a.actor for a in applied.values()) != sorted(m.actor for m in plan):
            problems.append(f"ledger: {len(applied)} effects applied, expected one per agent")
        db = Database(postgres.dsn)
        try:
            streams = read_journal(db, ("actor/Quick/", "inbox/Quick/", "outcomes/Quick/"))
        finally:
            db.close()
        accepted = {m.actor: driver.accepted[m.key] for m in plan if m.key in driver.accepted}
        problems += journal_problems(streams, accepted)
        if problems:
            shown = "\n  ".join(problems[:30])
            pytest.fail(f"{len(problems)} problems:\n  {shown}\n{pool.logs()}", pytrace=False)
    print(
        f"\n{AGENTS} agents on 2 workers of capacity {CAPACITY}: ran {dict(ran)}; all ended "
        f"{drained:.1f} s after the last was acknowledged; peak load {dict(sampler.peak)} "
        f"({sampler.reads} reads); {len(attempts)} ledger calls; sends "
        f"{dict(driver.outcomes)}; {time.monotonic() - started:.1f} s"
    )
