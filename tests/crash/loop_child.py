"""Agents in long loops cut into segments with ``ctx.continue_as_new``, meant to be killed.

Run as ``python -m tests.crash.loop_child JOURNAL LEDGER RUN``. The child hosts `AGENTS`
agents (``Looper/l0`` ...) over the SQLite journal at JOURNAL, prints ``READY`` once its
runtime has started, sends each agent one ``loop`` message (idempotency key ``loop``, so a
restarted child gets the first send's invocation back) and prints ``ACK <agent>
<invocation>`` once it is durably accepted, then ``DONE <agent> <invocation> <result>``
for each result, and exits 0.

``Looper.loop`` applies `STEPS` effects to the ledger at LEDGER (the same outside system as
`tests.crash.runtime_child`'s: it dedupes by idempotency key and records every call), in
segments of `SEGMENT` steps, each ending with ``ctx.continue_as_new``. A segment that ran
again as a new turn after a kill would apply its effects under new keys, which the ledger
would count twice: the test checks each (agent, step) is applied once.
"""

from __future__ import annotations

import asyncio
import sys

import msgspec

import actorflow
from journal import SqliteStore
from tests.crash import runtime_child
from tests.crash.runtime_child import Ledger, amount_for, apply_effect

#: Agents in the child, each an actor ``Looper/lN``.
AGENTS = 8
#: Effect steps of each agent's loop, and steps per journal segment.
STEPS, SEGMENT = 60, 5


class Tally(msgspec.Struct):
    total: int = 0
    segments: int = 0


def expected_result(agent: str) -> int:
    """What ``Looper.loop`` returns for ``agent``: its amounts, weighted by place."""
    return sum((step + 1) * amount_for(agent, 0, step) for step in range(STEPS))


class Looper(actorflow.Actor, state=Tally):
    """Applies `STEPS` effects, `SEGMENT` per journal segment."""

    state: Tally

    @actorflow.handler
    async def loop(self, start: int) -> int:
        """Apply the steps from ``start`` to the end of this segment, then continue."""
        end = min(start + SEGMENT, STEPS)
        for step in range(start, end):
            amount = amount_for(self.key, 0, step)
            stored = await self.ctx.run(apply_effect, self.key, 0, step, amount, name="effect")
            if stored != amount:
                raise AssertionError(f"{self.key} step {step}: the ledger holds {stored}")
            self.state.total += (step + 1) * stored
        self.state.segments += 1
        if end < STEPS:
            await self.ctx.continue_as_new(self.loop, end)
        return self.state.total


def emit(line: str) -> None:
    """Print one line and flush it out at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run(journal_path: str, ledger_path: str, run_number: int) -> None:
    """Start the runtime, send every message (idempotently), and await every result."""
    runtime_child.LEDGER = Ledger(ledger_path, run_number)
    store = await SqliteStore.open(journal_path, durability="full")
    try:
        async with actorflow.Runtime(store, [Looper]) as runtime:
            emit("READY")

            async def one(agent: str) -> None:
                ref = actorflow.ActorRef("Looper", agent)
                invocation = await runtime.send(ref, "loop", (0,), idempotency_key="loop")
                emit(f"ACK {agent} {invocation}")
                emit(f"DONE {agent} {invocation} {await runtime.result(invocation)}")

            async with asyncio.TaskGroup() as tasks:
                for index in range(AGENTS):
                    tasks.create_task(one(f"l{index}"))
    finally:
        await store.close()
        runtime_child.LEDGER.close()


if __name__ == "__main__":
    journal, ledger, number = sys.argv[1:4]
    asyncio.run(run(journal, ledger, int(number)))
