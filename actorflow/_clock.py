"""Wall-clock time for the runtime, behind a small protocol so tests can drive it."""

from __future__ import annotations

import math
import time
from typing import Protocol

import anyio


class Clock(Protocol):
    """Where the runtime reads the time and waits for deadlines."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline``."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """Seconds since the epoch (`time.time`)."""
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until the wall clock reaches ``deadline``."""
        await anyio.sleep(max(0.0, deadline - time.time()))


class ManualClock:
    """A clock that moves only when told: a 30-day durable sleep takes no real time.

    `advance` wakes every sleeper whose deadline has passed.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._changed = anyio.Event()

    def now(self) -> float:
        """The clock's current reading."""
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        """Wait until `advance` moves the clock to ``deadline`` or past it."""
        while self._now < deadline:
            changed = self._changed
            await changed.wait()

    def advance(self, seconds: float) -> None:
        """Move the clock forward and wake the sleepers that are due."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"advance takes a finite, non-negative number, got {seconds!r}")
        self._now += seconds
        self._changed.set()
        self._changed = anyio.Event()
