"""The app the cluster tests serve: `actorflow serve tests.cluster.app --journal postgresql://...`.

Every side effect is a call to the outside ledger (`tests.cluster.ledger`, an HTTP server in
the test process at the URL in ``ACTORFLOW_CLUSTER_LEDGER``) under the step's idempotency
key. Each step returns which worker ran it (``ACTORFLOW_CLUSTER_WORKER``, the same name the
worker was given with ``--worker-id``) with the amount the ledger holds for its key, so the
journal itself says which worker wrote each step's result: the tests read it from
PostgreSQL to find appends that should have been fenced.

- `Agent` (``checkpoint``, ``upgrade``: the defaults): ``run(run, steps, nap, long)`` takes
  ``steps`` ledger steps with a durable nap of ``nap`` seconds between them and, after the
  middle step, one durable timer of ``long`` seconds; its result is `run_total` of its run
  with the worker of each step.
- `Quick`: ``once(n, nap)`` takes one ledger step and naps ``nap`` seconds (so that it stays
  active for a while and capacity matters); its result names the worker of its step.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request

import msgspec

import actorflow

LEDGER_ENV = "ACTORFLOW_CLUSTER_LEDGER"
WORKER_ENV = "ACTORFLOW_CLUSTER_WORKER"
#: Seconds a ledger call may take before the step fails (and is retried).
LEDGER_TIMEOUT = 30.0


class Done(msgspec.Struct, frozen=True):
    """What a ledger step returns (and the journal holds): the worker that ran it and the
    amount the ledger holds for its key."""

    worker: str
    amount: int


class RunResult(msgspec.Struct, frozen=True):
    """An `Agent` run's result: its total and the worker of each step, in step order."""

    total: int
    workers: list[str]


def amount_for(actor: str, step: int) -> int:
    """The amount step ``step`` of ``actor`` moves: 1 to 256."""
    digest = hashlib.blake2b(f"{actor}|{step}".encode(), digest_size=1).digest()
    return digest[0] + 1


def run_total(actor: str, run: int, steps: int) -> int:
    """The total of ``actor``'s run ``run`` of ``steps`` steps, when every amount is right."""
    return run * 1_000_000 + sum((step + 1) * amount_for(actor, step) for step in range(steps))


def call_ledger(actor: str, step: int, amount: int, *, idempotency_key: str) -> Done:
    """Apply one effect at the ledger under the step's idempotency key (a blocking call: it
    runs in a worker thread). The ledger answers the amount stored under the key."""
    worker = os.environ[WORKER_ENV]
    body = json.dumps(
        {"key": idempotency_key, "actor": actor, "step": step, "amount": amount, "worker": worker}
    ).encode()
    request = urllib.request.Request(
        os.environ[LEDGER_ENV] + "/apply",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=LEDGER_TIMEOUT) as response:
        stored = json.loads(response.read())
    return Done(worker, int(stored["amount"]))


class Agent(actorflow.Actor):
    """A long agent run: many ledger steps, short naps, and one long timer."""

    @actorflow.handler
    async def run(self, run: int, steps: int, nap: float, long: float) -> RunResult:
        """``steps`` ledger steps, ``nap`` s between them and ``long`` s after the middle
        one; see `run_total`."""
        actor = f"Agent/{self.key}"
        total = run * 1_000_000
        workers: list[str] = []
        for step in range(steps):
            amount = amount_for(actor, step)
            done = await self.ctx.run(call_ledger, actor, step, amount, name="effect")
            total += (step + 1) * done.amount
            workers.append(done.worker)
            if step == steps // 2:
                await self.ctx.sleep(long, name="long")
            elif step < steps - 1:
                await self.ctx.sleep(nap, name="nap")
        return RunResult(total, workers)


class Quick(actorflow.Actor):
    """A short agent: one ledger step, then a nap."""

    @actorflow.handler
    async def once(self, n: int, nap: float) -> Done:
        """One ledger step (amount ``n``), then ``nap`` s; the step's `Done`."""
        actor = f"Quick/{self.key}"
        done = await self.ctx.run(call_ledger, actor, 0, n, name="effect")
        await self.ctx.sleep(nap, name="nap")
        return done


ACTORS = [Agent, Quick]
