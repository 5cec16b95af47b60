"""The app of tests/server/test_encryption.py: an actor that keeps what it is sent in its
state and returns it from a step, so one message puts a string in every kind of payload."""

from __future__ import annotations

import msgspec

from actorflow import Actor, handler, query


class Notes(msgspec.Struct):
    """What a `Notebook` was sent, in order."""

    notes: list[str] = msgspec.field(default_factory=list)


def echo(text: str) -> str:
    """A step whose result is its argument."""
    return f"noted: {text}"


class Notebook(Actor, state=Notes):
    """Keeps notes."""

    @handler
    async def note(self, text: str) -> str:
        """Keep ``text`` (in state) and return it from a step."""
        self.state.notes.append(text)
        return await self.ctx.run(echo, text, name="echo")

    @query
    def notes(self) -> list[str]:
        """Every note kept."""
        return self.state.notes


ACTORS = [Notebook]
