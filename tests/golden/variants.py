"""Changed versions of the example agents, for replaying the golden journals against.

Each list is an app (``actorflow replay tests.golden.variants:RENAMED``): the example agents
with one change. Three are deliberately incompatible with a turn in flight; ``PATCHED`` makes
the same change as ``ADDED`` behind `ctx.patched`, which is how it is done safely.
"""

from __future__ import annotations

import actorflow
from examples import fake_llm
from examples.payments import (
    Checkout,
    Order,
    Receipt,
    charge_card,
    refund,
    release_stock,
    reserve_stock,
    ship,
)
from examples.research import Notes, Report, Researcher


async def _approved(actor: actorflow.Actor, topic: str, summary: str, sources: int) -> Report:
    approval = await actor.ctx.wait_for("approval", timeout=24 * 3600, type=dict[str, str])
    actor.state.topics.append(topic)
    return Report(topic, summary, sources, approval.get("by", "?"))


async def _findings(actor: actorflow.Actor, topic: str) -> list[str]:
    plan = await actor.ctx.run(fake_llm.complete, f"plan: {topic}", name="plan")
    findings: list[str] = []
    for part in plan.splitlines():
        findings.extend(await actor.ctx.run(fake_llm.search, part, name="search"))
    return findings


class RenamedStep(actorflow.Actor, state=Notes, name="Researcher"):
    """The summary step renamed (``summarise`` -> ``summarize``)."""

    @actorflow.handler
    async def research(self, topic: str) -> Report:
        findings = await _findings(self, topic)
        prompt = "summarise:\n" + "\n".join(findings)
        summary = await self.ctx.run(fake_llm.complete, prompt, name="summarize")
        return await _approved(self, topic, summary, len(findings))


class AddedStep(actorflow.Actor, state=Notes, name="Researcher"):
    """A ranking step added before the summary, without a patch."""

    @actorflow.handler
    async def research(self, topic: str) -> Report:
        findings = await _findings(self, topic)
        ranked = await self.ctx.run(fake_llm.complete, "rank:\n" + "\n".join(findings), name="rank")
        prompt = "summarise:\n" + ranked
        summary = await self.ctx.run(fake_llm.complete, prompt, name="summarise")
        return await _approved(self, topic, summary, len(findings))


class PatchedStep(actorflow.Actor, state=Notes, name="Researcher"):
    """The same ranking step behind ``ctx.patched("rank")``: turns journaled before it
    keep to the old path."""

    @actorflow.handler
    async def research(self, topic: str) -> Report:
        findings = await _findings(self, topic)
        text = "\n".join(findings)
        if await self.ctx.patched("rank"):
            text = await self.ctx.run(fake_llm.complete, "rank:\n" + text, name="rank")
        summary = await self.ctx.run(fake_llm.complete, "summarise:\n" + text, name="summarise")
        return await _approved(self, topic, summary, len(findings))


class ReorderedSteps(actorflow.Actor, name="Checkout"):
    """Stock reserved before the card is charged."""

    @actorflow.handler
    async def checkout(self, order: Order) -> Receipt:
        await self.ctx.run(reserve_stock, order, compensate=release_stock)
        charge = await self.ctx.run(charge_card, order, compensate=refund)
        parcel = await self.ctx.run(ship, order, irreversible=True)
        return Receipt(order.order_id, charge, parcel)


RENAMED = [RenamedStep, Checkout]
ADDED = [AddedStep, Checkout]
REORDERED = [Researcher, ReorderedSteps]
PATCHED = [PatchedStep, Checkout]
