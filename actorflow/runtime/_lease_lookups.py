"""`LeaseLookups`: who holds a lease, asked by many offers at once and answered together.

When a thousand messages arrive for actors nobody hosts, every worker hears of each and
most of them look at its lease (to leave the actor to the worker that took it). Each
look alone is a round trip and a query; here the looks made while one query is under way
wait for the next, which answers all of them (as the journal's group commit does for
writes). A look costs its share of one query, and the answer is as fresh: the query runs
after it was asked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

#: Leases asked of the database in one query, at most.
CHUNK = 1000


class _Look:
    __slots__ = ("answered", "error", "lease")

    def __init__(self) -> None:
        self.answered = anyio.Event()
        self.lease: Any = None
        self.error: BaseException | None = None


class LeaseLookups:
    """Answers `holder` for many callers with one ``holders(names)`` call per round.

    ``holders``: `journal.Leases.holders`; ``start_soon``: starts the task that asks (a
    task group's ``start_soon``), once per round of lookups."""

    def __init__(
        self,
        holders: Callable[[Sequence[str]], Awaitable[dict[str, Any]]],
        start_soon: Callable[[Callable[[], Awaitable[None]]], None],
    ) -> None:
        self._holders = holders
        self._start_soon = start_soon
        self._asked: dict[str, list[_Look]] = {}
        self._asking = False

    async def holder(self, name: str) -> Any:
        """The held (or expired, not yet taken) lease ``name``, or None if it is free; as
        the database said after this call began."""
        look = _Look()
        self._asked.setdefault(name, []).append(look)
        if not self._asking:
            self._asking = True
            self._start_soon(self._ask)
        await look.answered.wait()
        if look.error is not None:
            raise look.error
        return look.lease

    async def _ask(self) -> None:
        asked: dict[str, list[_Look]] = {}
        try:
            while self._asked:
                asked, self._asked = self._asked, {}
                names = list(asked)
                try:
                    found: dict[str, Any] = {}
                    for start in range(0, len(names), CHUNK):
                        found.update(await self._holders(names[start : start + CHUNK]))
                except Exception as exc:  # each caller gets the error, as a read of its own
                    _answer(asked, error=exc)
                else:
                    _answer(asked, found=found)
                asked = {}
        except BaseException:  # cancelled (the runtime stops): nobody is left waiting
            stopped = RuntimeError("the lease lookup was cancelled: the worker is stopping")
            _answer(asked, error=stopped)
            _answer(self._asked, error=stopped)
            self._asked = {}
            raise
        finally:
            self._asking = False


def _answer(
    asked: dict[str, list[_Look]],
    *,
    found: dict[str, Any] | None = None,
    error: BaseException | None = None,
) -> None:
    for name, looks in asked.items():
        for look in looks:
            if found is not None:
                look.lease = found.get(name)
            look.error = error
            look.answered.set()
