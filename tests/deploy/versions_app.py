"""Two versions of one app, for the A -> B deploy test: `actorflow serve
tests.deploy.versions_app --build-id A` (or B), the version chosen by the environment
variable ``ACTORFLOW_APP_VERSION`` ("A" or "B").

- ``Researcher``: version A is the example agent as shipped (`examples.research`); version
  B adds a fact-check step between the searches and the summary, behind
  ``ctx.patched("fact-check")``. It is an ``upgrade`` type (the default).
- ``Booker`` (``versioning="pinned"``): ``book(item)`` reserves, waits for the event
  ``go``, and charges. Version B asks for a quote before reserving, without a patch, so
  the replay of a turn that version A started diverges at its first step.

Every effect of ``Booker`` is a line appended to the file named by
``ACTORFLOW_VERSIONS_LOG``: ``<actor> <effect> <item> <version>``; the example agent's
fake LLM and search calls go to ``ACTORFLOW_EXAMPLE_LOG`` (see `examples.fake_llm`).
"""

from __future__ import annotations

import os

import actorflow
from examples import fake_llm, research
from examples.research import Notes, Report

VERSION = os.environ.get("ACTORFLOW_APP_VERSION", "A")
VERSION_ENV = "ACTORFLOW_APP_VERSION"
LOG_ENV = "ACTORFLOW_VERSIONS_LOG"


def effect(actor: str, name: str, item: str) -> str:
    """Record one side effect in the log the test reads."""
    with open(os.environ[LOG_ENV], "a") as log:
        log.write(f"{actor} {name} {item} {VERSION}\n")
    return f"{name} {item}"


class ResearcherB(research.Researcher, name="Researcher", state=Notes):
    """The example researcher with a fact-check step, behind a patch."""

    @actorflow.handler
    async def research(self, topic: str) -> Report:
        """Plan, search each part, fact-check (new), summarise, and wait for approval."""
        plan = await self.ctx.run(fake_llm.complete, f"plan: {topic}", name="plan")
        findings: list[str] = []
        for part in plan.splitlines():
            results = await self.ctx.run(fake_llm.search, part, name="search")
            findings.extend(results)
        if await self.ctx.patched("fact-check"):
            await self.ctx.run(fake_llm.complete, f"fact-check: {topic}", name="fact_check")
        prompt = "summarise:\n" + "\n".join(findings)
        summary = await self.ctx.run(fake_llm.complete, prompt, name="summarise")
        approval = await self.ctx.wait_for("approval", timeout=24 * 3600, type=dict[str, str])
        self.state.topics.append(topic)
        return Report(topic, summary, len(findings), approval.get("by", "?"))


class BookerA(actorflow.Actor, name="Booker", versioning="pinned"):
    @actorflow.handler
    async def book(self, item: str) -> str:
        """Reserve, wait for go, charge."""
        actor = f"Booker/{self.key}"
        await self.ctx.run(effect, actor, "reserve", item, name="reserve")
        await self.ctx.wait_for("go")
        return await self.ctx.run(effect, actor, "charge", item, name="charge")


class BookerB(actorflow.Actor, name="Booker", versioning="pinned"):
    @actorflow.handler
    async def book(self, item: str) -> str:
        """Quote (new, unpatched), reserve, wait for go, charge."""
        actor = f"Booker/{self.key}"
        await self.ctx.run(effect, actor, "quote", item, name="quote")
        await self.ctx.run(effect, actor, "reserve", item, name="reserve")
        await self.ctx.wait_for("go")
        return await self.ctx.run(effect, actor, "charge", item, name="charge")


if VERSION == "A":
    ACTORS: list[type[actorflow.Actor]] = [research.Researcher, BookerA]
else:
    ACTORS = [ResearcherB, BookerB]
