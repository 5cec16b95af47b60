"""The app the console's browser tests serve: one actor that leaves every kind of journal
entry the console's timeline shows, one that streams, and one that gets stuck.

Gates are files in ``CONSOLE_DIR`` (the test creates them), so that what the browser
watches happens when the test says, not after a guessed time:
- ``brittle`` fails (not retried) until the file ``brittle-ok`` exists; retried then, it
  completes;
- ``answer`` streams ``first``, then waits for ``more`` before streaming the rest;
- ``drift`` runs a step named after ``CONSOLE_DRIFT`` (``a`` by default) and waits for
  the event ``go``: restarted with another value, its replay diverges and it is stuck.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import AsyncIterator

import anyio
import msgspec

from actorflow import NO_RETRY, Actor, ActorRef, Retry, handler

#: The texts whose step already failed once (each fails its first attempt).
failed_once: set[str] = set()


def gate(name: str) -> pathlib.Path:
    return pathlib.Path(os.environ["CONSOLE_DIR"]) / name


def echo(text: str) -> str:
    if text not in failed_once:
        failed_once.add(text)
        raise ConnectionError(f"the echo service dropped {text!r}")
    return text


def reserve(what: str) -> str:
    return f"seat-for-{what}"


def release(seat: str) -> None:
    pass


def explode(reason: str) -> str:
    raise ValueError(reason)


def brittle_step() -> str:
    if not gate("brittle-ok").exists():
        raise RuntimeError("the brittle service is down")
    return "fixed"


class Notes(msgspec.Struct):
    notes: list[str] = msgspec.field(default_factory=list)


class Desk(Actor, state=Notes):
    """Notes, events, timers, messages, retries, failures and compensations."""

    @handler
    async def note(self, text: str) -> str:
        """Keep ``text``: a step retried once, a short timer, a message to another desk."""
        self.state.notes.append(text)
        said = await self.ctx.run(echo, text, name="echo", retry=Retry(initial=0.05, jitter=0))
        await self.ctx.sleep(0.05)
        await self.ctx.send(ActorRef("Desk", "archive"), Desk.file, text)
        return said

    @handler
    async def file(self, text: str) -> int:
        """File a note sent by another desk."""
        self.state.notes.append(text)
        return len(self.state.notes)

    @handler
    async def approve(self, what: str) -> dict[str, str]:
        """Wait for the ``decision`` event."""
        decision = await self.ctx.wait_for("decision", type=dict[str, str])
        self.state.notes.append(f"{what}: {decision.get('by', '?')}")
        return decision

    @handler
    async def doomed(self, reason: str) -> str:
        """Reserve (with an undo), then fail: the reservation is compensated."""
        await self.ctx.run(reserve, reason, name="reserve", compensate=release)
        return await self.ctx.run(explode, reason, name="explode", retry=NO_RETRY)

    @handler
    async def brittle(self) -> str:
        """Fail until the gate ``brittle-ok`` exists (retry it then)."""
        return await self.ctx.run(brittle_step, name="brittle", retry=NO_RETRY)


async def words(count: int) -> AsyncIterator[str]:
    yield "first "
    # the gate is a file the test process creates: no event of this process can tell
    while not gate("more").exists():  # noqa: ASYNC110
        await anyio.sleep(0.02)
    for i in range(count):
        yield f"w{i} "


class Streamer(Actor):
    @handler
    async def answer(self, count: int) -> str:
        text: str = await self.ctx.stream(words, count)
        return text.strip()


def drifting(name: str) -> str:
    return name


class Drifter(Actor):
    @handler
    async def drift(self) -> str:
        """A step named after the code version (``CONSOLE_DRIFT``), then the event ``go``."""
        name = os.environ.get("CONSOLE_DRIFT", "a")
        await self.ctx.run(drifting, name, name=f"step-{name}")
        await self.ctx.wait_for("go")
        return name


ACTORS = [Desk, Streamer, Drifter]
