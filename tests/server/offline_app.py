"""An actor whose one turn journals every kind of entry the offline tools show: a step
with a compensation, a step retried after a failure, a durable timer, an event consumed,
then a failure that runs the compensation."""

from __future__ import annotations

from collections import Counter

from actorflow import Actor, Retry, handler

#: Attempts made per step name (the first attempt of ``flaky`` fails).
attempts: Counter[str] = Counter()


def book(city: str) -> str:
    return f"seat in {city}"


def unbook(seat: str) -> None:
    """Undo `book` (nothing to do here)."""


def flaky(name: str) -> str:
    attempts[name] += 1
    if attempts[name] == 1:
        raise ConnectionError(f"{name} timed out")
    return f"{name} answered"


class Trip(Actor):
    """Books a seat, calls a flaky API, naps, waits for a go-ahead, then gives up."""

    @handler
    async def go(self, city: str) -> str:
        await self.ctx.run(book, city, name="book", compensate=unbook)
        retry = Retry(attempts=3, initial=0.01, jitter=0)
        await self.ctx.run(flaky, "weather", name="weather", retry=retry)
        await self.ctx.sleep(0.01, name="nap")
        await self.ctx.wait_for("go-ahead", type=str)
        raise RuntimeError("no trip after all")

    @handler
    async def hello(self) -> str:
        return "hi"


def read_document(seed: str) -> str:
    """A document well over the runtime's large-value threshold (8 KiB by default)."""
    return f"document {seed} " + "lorem ipsum " * 2000


class Reader(Actor):
    """Reads one large document in a step (stored as a journal value, not inline)."""

    @handler
    async def read(self, seed: str) -> int:
        text = await self.ctx.run(read_document, seed, name="read")
        return len(text)
