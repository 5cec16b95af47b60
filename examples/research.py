"""A research agent: plan, search each part of the plan, summarise, ask a human to approve.

Run it (journal in ``research.db``, fake calls logged in ``calls.log``)::

    python -m examples.research "solid-state batteries"

Kill it mid-run (Ctrl-C, or ``kill -9`` from another terminal) and run the same command
again: the agent continues at the step where it stopped. ``calls.log`` shows that no
completed LLM or search call ran twice (only a call that was in flight at the kill can run
again). The agent then waits for a human approval; this script plays the human and delivers
the ``approval`` event after a pause (``--approve-after 0`` to approve at once).
``ACTORFLOW_EXAMPLE_DELAY=0`` makes the fake calls instant.
"""

from __future__ import annotations

import argparse

import anyio
import msgspec

import actorflow
from examples import fake_llm
from journal import SqliteStore


class Notes(msgspec.Struct):
    """What the researcher remembers across jobs."""

    topics: list[str] = []


class Report(msgspec.Struct, frozen=True):
    """The outcome of one research job."""

    topic: str
    summary: str
    sources: int
    approved_by: str


class Researcher(actorflow.Actor, state=Notes):
    """Researches a topic with an LLM and a search tool, then asks for approval."""

    @actorflow.handler
    async def research(self, topic: str) -> Report:
        """Plan, search each part, summarise, and wait for a human's approval."""
        plan = await self.ctx.run(fake_llm.complete, f"plan: {topic}", name="plan")
        findings: list[str] = []
        for part in plan.splitlines():
            results = await self.ctx.run(fake_llm.search, part, name="search")
            findings.extend(results)
        prompt = "summarise:\n" + "\n".join(findings)
        summary = await self.ctx.run(fake_llm.complete, prompt, name="summarise")
        approval = await self.ctx.wait_for("approval", timeout=24 * 3600, type=dict[str, str])
        self.state.topics.append(topic)
        return Report(topic, summary, len(findings), approval.get("by", "?"))


async def main(topic: str, journal: str, approve_after: float) -> None:
    """Start (or resume) the research job on ``topic`` and print its report."""
    async with (
        await SqliteStore.open(journal) as store,
        actorflow.Runtime(store, [Researcher]) as runtime,
    ):
        agent = actorflow.ActorRef("Researcher", "job-1")
        invocation = await runtime.send(
            agent, "research", (topic,), idempotency_key=f"research:{topic}"
        )
        print(f"research job {invocation} accepted; journal: {journal}")
        await _approve_when_waiting(runtime, agent, approve_after)
        report = await runtime.result(invocation)
        print(msgspec.json.encode(report).decode())


async def _approve_when_waiting(
    runtime: actorflow.Runtime, agent: actorflow.ActorRef, after: float
) -> None:
    """Play the human: once the agent waits for approval, approve after a pause."""
    while True:
        status = await runtime.status(agent)
        if status.state == "waiting-event":
            break
        if status.state in ("completed", "stuck"):
            return
        await anyio.sleep(0.1)
    print(f"agent waits for approval; approving in {after:g} s")
    await anyio.sleep(after)
    await runtime.deliver(agent, "approval", {"by": "a human"})


def cli() -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("topic", nargs="?", default="solid-state batteries")
    parser.add_argument("--journal", default="research.db")
    parser.add_argument("--approve-after", type=float, default=2.0)
    args = parser.parse_args()
    anyio.run(main, args.topic, args.journal, args.approve_after)


if __name__ == "__main__":
    cli()
