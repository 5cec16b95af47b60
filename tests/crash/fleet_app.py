"""The fleet `tests.crash.test_damaged_journal` serves with `actorflow serve`: agents that
take a step, wait for a human's "go", and take another.

Each step's result holds a marker unique to its agent, so the test can find the agent's
last journal record in the file's bytes (and flip one of them).
"""

from __future__ import annotations

from actorflow import Actor, handler

AGENTS = 50
#: The agent whose journal the test damages.
DAMAGED = "a17"


def agent_keys() -> list[str]:
    """The keys of the fleet's agents."""
    return [f"a{n:02}" for n in range(AGENTS)]


def marker(key: str, step: str) -> str:
    """What ``step`` of agent ``key`` returns: long and unique in the journal file."""
    return f"<<fleet-marker-{key}-{step}-0123456789abcdef0123456789abcdef>>"


def expected_result(key: str) -> str:
    """The result of agent ``key``'s work."""
    return f"{marker(key, 'first')} then {marker(key, 'second')}"


class Agent(Actor):
    """Works in two steps around a human's go-ahead."""

    @handler
    async def work(self) -> str:
        """Take the first step, wait for "go", take the second."""
        first = await self.ctx.run(marker, self.key, "first", name="first")
        await self.ctx.wait_for("go")
        second = await self.ctx.run(marker, self.key, "second", name="second")
        return f"{first} then {second}"


ACTORS = [Agent]
