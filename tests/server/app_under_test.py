"""Small actors for the server tests: served in-process and by `actorflow serve`.

Module-level lists record the effects of steps, so an in-process test can count them.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated

import msgspec

from actorflow import NO_RETRY, Actor, handler, query

#: Greetings actually computed (by the step, not replayed), by name.
greeted: Counter[str] = Counter()
#: Reservations made and released, in order.
reserved: list[str] = []
released: list[str] = []


class Decision(msgspec.Struct, frozen=True):
    """What a human decided about a request."""

    what: str
    by: str
    approved: bool


def greeting(name: str, times: int) -> str:
    greeted[name] += 1
    return " ".join([f"hello {name}"] * times)


def reserve(destination: str) -> str:
    reserved.append(destination)
    return f"seat-to-{destination}"


def release(seat: str) -> None:
    released.append(seat)


class Greeter(Actor):
    """Answers at once."""

    @handler
    async def greet(self, name: str, times: Annotated[int, msgspec.Meta(ge=0, le=100)] = 1) -> str:
        """Greet someone, ``times`` times (bounded, so that generated requests cannot ask
        for gigabytes)."""
        return await self.ctx.run(greeting, name, times, name="greeting")


class Asked(msgspec.Struct):
    """What an `Approval` actor was asked to approve, in order."""

    asked: list[str] = msgspec.field(default_factory=list)


class Approval(Actor, state=Asked):
    """Waits for a human's decision."""

    @handler
    async def request(self, what: str) -> Decision:
        """Ask for approval of ``what`` and wait for the ``decision`` event."""
        self.state.asked.append(what)
        decision = await self.ctx.wait_for("decision", type=dict[str, str | bool])
        return Decision(what, str(decision["by"]), bool(decision["approved"]))

    @query
    def asked(self, last: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10) -> list[str]:
        """The ``last`` things it was asked to approve (bounded, like `Greeter.greet`)."""
        return self.state.asked[-last:]


class Broken(Actor):
    """Always fails."""

    @handler
    async def explode(self, reason: str) -> str:
        """Raise."""
        raise ValueError(f"boom: {reason}")


class Booking(Actor):
    """Reserves a seat (undone on cancel), then waits an hour for departure."""

    @handler
    async def trip(self, destination: str) -> str:
        """Reserve, then sleep until departure."""
        await self.ctx.run(reserve, destination, name="reserve", compensate=release)
        await self.ctx.sleep(3600, name="departure")
        return f"departed to {destination}"


#: Tools that fail until a test repairs them.
BROKEN_TOOLS: set[str] = set()


def tool(name: str) -> str:
    if name in BROKEN_TOOLS:
        raise ConnectionError(f"{name} is down")
    return f"{name} ok"


class Pipeline(Actor, retry=NO_RETRY):
    """Runs tools one after another; a broken tool fails the run."""

    @handler
    async def run(self, tools: list[str]) -> list[str]:
        """Run each tool as a step."""
        return [await self.ctx.run(tool, name, name=name) for name in tools]


ACTORS = [Greeter, Approval, Broken, Booking, Pipeline]


def reset() -> None:
    """Forget the effects recorded so far."""
    greeted.clear()
    reserved.clear()
    released.clear()
    BROKEN_TOOLS.clear()
