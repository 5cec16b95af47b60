"""The app the deploy tests serve: `actorflow serve tests.deploy.app`.

Every side effect goes to an outside ledger, a SQLite file named by the environment
variable ``ACTORFLOW_DEPLOY_LEDGER`` that stands in for an API honouring idempotency keys:
in one transaction a call appends itself to ``attempts`` (every call, re-executions too,
with the server generation from ``ACTORFLOW_DEPLOY_GENERATION``) and inserts the effect
into ``applied`` unless its key is already there. The tests read the ledger from outside.

- `Agent` (strategy ``checkpoint``, the default): the rolling-deploy agent. ``run(run)``
  takes `AGENT_STEPS` effect steps with a durable nap between them; its result is
  `agent_result` of its key and input.
- `Keeper` (``checkpoint``) and `Drainer` (``drain``): ``work(steps, nap)`` takes ``steps``
  effect steps napping ``nap`` seconds between them; the result is `work_result`.
  ``Keeper.slow(seconds)`` takes three, the middle one answering after ``seconds``.
- `Saga` (``compensate``): ``book`` takes two compensated steps (``reserve``, ``charge``,
  each undone in ``undo_s`` seconds), then either naps ``hold_s`` seconds and confirms, or
  (``ship=True``) takes an irreversible ``ship`` step, naps ``after`` seconds and notifies.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time

import actorflow

#: Effect steps per `Agent` run.
AGENT_STEPS = 20
#: What a ledger call waits before its transaction (the request) and after (the response),
#: so that signals often land while a step is in flight.
REQUEST_LATENCY = 0.002
RESPONSE_LATENCY = 0.004

LEDGER_ENV = "ACTORFLOW_DEPLOY_LEDGER"
GENERATION_ENV = "ACTORFLOW_DEPLOY_GENERATION"

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS applied (
    key TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    name TEXT NOT NULL,
    step INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    actor TEXT NOT NULL,
    name TEXT NOT NULL,
    step INTEGER NOT NULL,
    generation INTEGER NOT NULL
);
"""


def amount_for(actor: str, step: int) -> int:
    """The amount step ``step`` of ``actor`` moves: 1 to 256."""
    digest = hashlib.blake2b(f"{actor}|{step}".encode(), digest_size=1).digest()
    return digest[0] + 1


def agent_nap(key: str, step: int) -> float:
    """The durable nap of `Agent` ``key`` after step ``step``: 0.3 to 0.45 s."""
    digest = hashlib.blake2b(f"{key}|nap|{step}".encode(), digest_size=1).digest()
    return 0.3 + 0.05 * (digest[0] % 4)


def agent_result(key: str, run: int) -> int:
    """What ``Agent/<key>.run(run)`` returns."""
    actor = f"Agent/{key}"
    weighted = sum((step + 1) * amount_for(actor, step) for step in range(AGENT_STEPS))
    return run * 1_000_000 + weighted


def work_result(actor: str, steps: int) -> int:
    """What ``work(steps, nap)`` of ``actor`` (``Type/key``) returns."""
    return sum((step + 1) * amount_for(actor, step) for step in range(steps))


def connect_ledger(path: str) -> sqlite3.Connection:
    """Open (creating if needed) the ledger in autocommit mode."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")  # survives a killed process, which is the point
    conn.executescript(LEDGER_SCHEMA)
    return conn


_ledger: sqlite3.Connection | None = None


def _apply(key: str, actor: str, name: str, step: int, amount: int) -> int:
    global _ledger
    if _ledger is None:
        _ledger = connect_ledger(os.environ[LEDGER_ENV])
    return _apply_on(_ledger, key, actor, name, step, amount)


def _apply_on(
    conn: sqlite3.Connection, key: str, actor: str, name: str, step: int, amount: int
) -> int:
    generation = int(os.environ.get(GENERATION_ENV, "0"))
    conn.execute("BEGIN IMMEDIATE")
    try:
        cursor = conn.execute(
            "INSERT INTO attempts (key, actor, name, step, generation) VALUES (?, ?, ?, ?, ?)",
            (key, actor, name, step, generation),
        )
        conn.execute(
            "INSERT OR IGNORE INTO applied (key, actor, name, step, amount, generation, seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, actor, name, step, amount, generation, cursor.lastrowid),
        )
        (stored,) = conn.execute("SELECT amount FROM applied WHERE key = ?", (key,)).fetchone()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return int(stored)


async def effect(actor: str, name: str, step: int, amount: int, *, idempotency_key: str) -> int:
    """One effect on the ledger under the step's idempotency key; returns the stored amount."""
    await asyncio.sleep(REQUEST_LATENCY)
    stored = _apply(idempotency_key, actor, name, step, amount)
    await asyncio.sleep(RESPONSE_LATENCY)
    return stored


async def slow_effect(
    actor: str, name: str, step: int, amount: int, seconds: float, *, idempotency_key: str
) -> int:
    """An effect whose response takes ``seconds`` (it is applied at once)."""
    stored = await effect(actor, name, step, amount, idempotency_key=idempotency_key)
    await asyncio.sleep(seconds)
    return stored


def slow_effect_sync(
    actor: str, name: str, step: int, amount: int, seconds: float, *, idempotency_key: str
) -> int:
    """`slow_effect` as a blocking function: it runs in a worker thread (on its own ledger
    connection), which a shutdown abandons when the budget ends."""
    conn = connect_ledger(os.environ[LEDGER_ENV])
    try:
        stored = _apply_on(conn, idempotency_key, actor, name, step, amount)
    finally:
        conn.close()
    time.sleep(seconds)
    return stored


async def hold(actor: str, name: str, undo_s: float, *, idempotency_key: str) -> str:
    """A compensable effect; its result tells its undo what to undo and how slowly."""
    await effect(actor, name, 0, 1, idempotency_key=idempotency_key)
    return f"{actor}|{name}|{undo_s}"


async def undo(token: str, *, idempotency_key: str) -> None:
    """The compensation of a `hold`: recorded in the ledger as ``undo <name>``, then
    ``undo_s`` seconds before it answers (a slow API)."""
    actor, name, undo_s = token.split("|")
    await effect(actor, f"undo {name}", 0, 1, idempotency_key=idempotency_key)
    await asyncio.sleep(float(undo_s))


async def _work(actor: actorflow.Actor, steps: int, nap: float) -> int:
    actor_id = f"{type(actor).__actorflow_name__}/{actor.key}"
    total = 0
    for step in range(steps):
        amount = amount_for(actor_id, step)
        stored = await actor.ctx.run(effect, actor_id, "effect", step, amount, name="effect")
        total += (step + 1) * stored
        if step < steps - 1 and nap:
            await actor.ctx.sleep(nap, name="nap")
    return total


class Agent(actorflow.Actor):
    """The rolling-deploy agent: a long run of effects and durable naps (checkpoints)."""

    @actorflow.handler
    async def run(self, run: int) -> int:
        """`AGENT_STEPS` effects with a nap between each; see `agent_result`."""
        actor_id = f"Agent/{self.key}"
        total = run * 1_000_000
        for step in range(AGENT_STEPS):
            amount = amount_for(actor_id, step)
            stored = await self.ctx.run(effect, actor_id, "effect", step, amount, name="effect")
            total += (step + 1) * stored
            if step < AGENT_STEPS - 1:
                await self.ctx.sleep(agent_nap(self.key, step), name="nap")
        return total


class Keeper(actorflow.Actor):
    """Checkpoints at shutdown (the default strategy)."""

    @actorflow.handler
    async def work(self, steps: int, nap: float) -> int:
        """``steps`` effects, napping ``nap`` s between them; see `work_result`."""
        return await _work(self, steps, nap)

    @actorflow.handler
    async def slow(self, seconds: float, blocking: bool = False) -> int:
        """Three effects, the middle one answering only after ``seconds`` (a blocking
        sync function when ``blocking``); see `work_result` (of 3 steps)."""
        actor_id = f"Keeper/{self.key}"
        total = 0
        for step in range(3):
            amount = amount_for(actor_id, step)
            if step == 1:
                args = (actor_id, "effect", step, amount, seconds)
                slow = slow_effect_sync if blocking else slow_effect
                stored = await self.ctx.run(slow, *args, name="slow")
            else:
                stored = await self.ctx.run(effect, actor_id, "effect", step, amount, name="effect")
            total += (step + 1) * stored
        return total


class Drainer(actorflow.Actor, shutdown="drain"):
    """Finishes its running turn at shutdown if it fits in the budget."""

    @actorflow.handler
    async def work(self, steps: int, nap: float) -> int:
        """``steps`` effects, napping ``nap`` s between them; see `work_result`."""
        return await _work(self, steps, nap)


class Saga(actorflow.Actor, shutdown="compensate"):
    """Compensates its running turn at shutdown, unless it is past its irreversible step."""

    @actorflow.handler
    async def book(
        self, hold_s: float = 0.0, ship: bool = False, after: float = 0.0, undo_s: float = 0.0
    ) -> str:
        """Reserve and charge (both compensable, each undo taking ``undo_s``), then nap and
        confirm, or ship (the point of no return), nap and notify."""
        actor_id = f"Saga/{self.key}"
        await self.ctx.run(hold, actor_id, "reserve", undo_s, name="reserve", compensate=undo)
        await self.ctx.run(hold, actor_id, "charge", undo_s, name="charge", compensate=undo)
        if not ship:
            await self.ctx.sleep(hold_s, name="hold")
            await self.ctx.run(effect, actor_id, "confirm", 0, 1, name="confirm")
            return "booked"
        await self.ctx.run(effect, actor_id, "ship", 0, 1, name="ship", irreversible=True)
        await self.ctx.sleep(after, name="after")
        await self.ctx.run(effect, actor_id, "notify", 0, 1, name="notify")
        return "shipped"


ACTORS = [Agent, Keeper, Drainer, Saga]
