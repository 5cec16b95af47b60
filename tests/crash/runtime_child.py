"""An actor runtime with many agents applying effects to an outside ledger, meant to be killed.

Run as ``python -m tests.crash.runtime_child JOURNAL LEDGER RUN [--loop uvloop]``. The
child hosts `AGENTS` agents (``Agent/a00`` ...) in an `actorflow.Runtime` over the SQLite
journal at JOURNAL. It prints ``OPEN`` once the journal is open, just before the runtime
starts (and recovers every agent with unfinished work), and ``READY`` once it has started.
It then sends each agent `MESSAGES` messages (``run(job)`` for job 0, 1, ...: job 0 to every
agent at once, then job 1, ...), each with the idempotency key ``job-<job>`` so that a
restarted child re-sending them gets the first send's invocation back, and prints, once each
send has returned (the message is durably accepted)::

    ACK <agent> <job> <invocation>

It then awaits every invocation's result and prints ``DONE <agent> <job> <invocation>
<result>`` for each, and exits 0 once all are done.

A turn of ``Agent.run`` takes 8 to 12 effect steps (`steps_for`) through ``ctx.run``, with
a durable ``ctx.sleep`` of a few milliseconds after some of them. Each step applies an effect
to the ledger at LEDGER, a separate SQLite file standing in for an outside API that honours
idempotency keys: in one short transaction it appends the call to ``attempts`` (every call,
duplicates too, with the child's RUN number) and inserts the effect into ``applied`` unless
that key is already there, and it answers with the amount the ledger holds for the key. The
call waits a little before the transaction (the request in flight) and after it (the
response in flight), so a kill often lands after the effect was applied but before the step
was journaled: exactly the step the runtime must run again, and the ledger must dedupe.

Each agent's state is its log: a 1,500-byte entry per effect applied (`log_entry`), so that
from its second turn on the state is checkpointed in parts (see
``actorflow/runtime/_state_parts.py``). A turn first checks that the state it starts from
holds exactly the entries of the jobs before it (`expected_log`): a state restored wrongly
after a kill fails the turn.

The result of a turn is a deterministic function of the agent, the job and the amounts
(`expected_result`), so whoever reads the output can check it. Any surprise ends the
process with a traceback and a non-zero status, which the crash test reports.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sqlite3
import sys
from collections.abc import Sequence

import msgspec

import actorflow
from journal import SqliteStore

#: Agents in the child, each an actor ``Agent/aNN``.
AGENTS = 60
#: Messages (turns) per agent, each with its own idempotency key.
MESSAGES = 4
#: Effect steps per turn: from 8 to 12, by agent and job (see `steps_for`), so that the agents
#: do not all finish their turns at the same moment.
MIN_STEPS, MAX_STEPS = 8, 12
#: Seconds the ledger call waits before its transaction (request) and after it (response).
REQUEST_LATENCY = 0.001
RESPONSE_LATENCY = 0.003

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS applied (
    key TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    job INTEGER NOT NULL,
    step INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    run INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    agent TEXT NOT NULL,
    job INTEGER NOT NULL,
    step INTEGER NOT NULL,
    run INTEGER NOT NULL
);
"""


def agent_keys(count: int = AGENTS) -> list[str]:
    """The keys of the child's agents."""
    return [f"a{index:02d}" for index in range(count)]


def steps_for(agent: str, job: int) -> int:
    """How many effect steps job ``job`` of ``agent`` takes."""
    return MIN_STEPS + (int(agent[1:]) + job) % (MAX_STEPS - MIN_STEPS + 1)


def naps_after(step: int) -> bool:
    """Whether a turn sleeps (durably, a few milliseconds) after step number ``step``."""
    return step % 3 == 1


def amount_for(agent: str, job: int, step: int) -> int:
    """The amount that step ``step`` of job ``job`` of ``agent`` moves: 1 to 256."""
    digest = hashlib.blake2b(f"{agent}|{job}|{step}".encode(), digest_size=2).digest()
    return digest[0] + 1


def expected_result(agent: str, job: int) -> int:
    """What ``Agent.run(job)`` returns for ``agent``: each step's amount, weighted by place."""
    steps = range(steps_for(agent, job))
    return job * 1_000_000 + sum((step + 1) * amount_for(agent, job, step) for step in steps)


def log_entry(agent: str, job: int, step: int) -> str:
    """The entry that step ``step`` of job ``job`` adds to ``agent``'s log: 1,500 bytes."""
    return (f"{agent}/{job}/{step};" * 150)[:1500]


def expected_log(agent: str, jobs: int) -> list[str]:
    """``agent``'s log once its jobs before ``jobs`` are done."""
    return [
        log_entry(agent, job, step) for job in range(jobs) for step in range(steps_for(agent, job))
    ]


class Log(msgspec.Struct):
    """An agent's state: an entry per effect applied."""

    entries: list[str] = []


def connect_ledger(path: str) -> sqlite3.Connection:
    """Open (creating if needed) the ledger database in autocommit mode."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(LEDGER_SCHEMA)
    return conn


class Ledger:
    """The outside system the agents' steps act on: it dedupes effects by idempotency key."""

    def __init__(self, path: str, run: int) -> None:
        self.conn = connect_ledger(path)
        self.run = run

    def apply(self, key: str, agent: str, job: int, step: int, amount: int) -> int:
        """Record the call, apply the effect unless ``key`` was applied; return its amount."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO attempts (key, agent, job, step, run) VALUES (?, ?, ?, ?, ?)",
                (key, agent, job, step, self.run),
            )
            conn.execute(
                "INSERT OR IGNORE INTO applied (key, agent, job, step, amount, run)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key, agent, job, step, amount, self.run),
            )
            (stored,) = conn.execute("SELECT amount FROM applied WHERE key = ?", (key,)).fetchone()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return int(stored)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


#: The ledger of this process (set by `run` before the runtime starts).
LEDGER: Ledger | None = None


async def apply_effect(
    agent: str, job: int, step: int, amount: int, *, idempotency_key: str
) -> int:
    """One effect step: a call to the ledger with the step's idempotency key."""
    assert LEDGER is not None, "the ledger is opened before the runtime starts"
    await asyncio.sleep(REQUEST_LATENCY)
    stored = LEDGER.apply(idempotency_key, agent, job, step, amount)
    await asyncio.sleep(RESPONSE_LATENCY)
    return stored


class Agent(actorflow.Actor, state=Log):
    """An agent whose every turn moves a few amounts through the ledger, napping between."""

    state: Log

    @actorflow.handler
    async def run(self, job: int) -> int:
        """Apply this job's effects one step at a time; return their weighted sum."""
        if self.state.entries != expected_log(self.key, job):
            raise AssertionError(
                f"{self.key} job {job} starts from a log of {len(self.state.entries)} entries, "
                f"expected {len(expected_log(self.key, job))}"
            )
        total = job * 1_000_000
        for step in range(steps_for(self.key, job)):
            amount = amount_for(self.key, job, step)
            stored = await self.ctx.run(apply_effect, self.key, job, step, amount, name="effect")
            if stored != amount:
                raise AssertionError(f"{self.key} job {job} step {step}: ledger holds {stored}")
            total += (step + 1) * stored
            self.state.entries.append(log_entry(self.key, job, step))
            if naps_after(step):
                await self.ctx.sleep(0.002 * (1 + step % 4), name="nap")  # 2 to 8 ms
        return total


def emit(line: str) -> None:
    """Print one line and flush it out at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run(journal_path: str, ledger_path: str, run_number: int) -> None:
    """Start the runtime, send every message (idempotently), and await every result."""
    global LEDGER
    LEDGER = Ledger(ledger_path, run_number)
    store = await SqliteStore.open(journal_path, durability="full")
    try:
        emit("OPEN")
        async with actorflow.Runtime(store, [Agent]) as runtime:
            emit("READY")
            sent: list[tuple[str, int, str]] = []

            async def send(agent: str, job: int) -> None:
                target = actorflow.ActorRef("Agent", agent)
                invocation = await runtime.send(target, "run", (job,), idempotency_key=f"job-{job}")
                emit(f"ACK {agent} {job} {invocation}")
                sent.append((agent, job, invocation))

            for job in range(MESSAGES):  # job 0 to every agent, then job 1, ...
                async with asyncio.TaskGroup() as tasks:
                    for agent in agent_keys():
                        tasks.create_task(send(agent, job))

            async def finish(agent: str, job: int, invocation: str) -> None:
                result = await runtime.result(invocation)
                emit(f"DONE {agent} {job} {invocation} {result}")

            async with asyncio.TaskGroup() as tasks:
                for agent, job, invocation in sent:
                    tasks.create_task(finish(agent, job, invocation))
    finally:
        await store.close()
        LEDGER.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run until every agent is done (or the process is killed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("journal", help="the SQLite journal file")
    parser.add_argument("ledger", help="the SQLite ledger file (the outside effects)")
    parser.add_argument("run", type=int, help="this run's number, recorded with every call")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(run(args.journal, args.ledger, args.run))
    else:
        asyncio.run(run(args.journal, args.ledger, args.run))


if __name__ == "__main__":
    main()
