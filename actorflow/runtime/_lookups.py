"""`Lookups`: one thing looked up by many tasks at once, answered by one query per round.

When a thousand messages arrive for actors nobody hosts, every worker hears of each and
most of them look at its lease (to leave the actor to the worker that took it), and every
actor taken on reads where its journal stands. Each look alone is a round trip and a
query; here the looks made while one query is under way wait for the next, which answers
all of them (as the journal's group commit does for writes). A look costs its share of one
query, and its answer is as fresh as its own query would be: the query that answers it
begins after it was made.

The same holds for taking leases: the claims a worker makes at the same time take their
leases in one statement (`journal.Leases.acquire_many`), each claim answered with its
lease's epoch, or None where another worker holds it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio

#: Names asked in one query, at most.
CHUNK = 1000


class _Look:
    __slots__ = ("answered", "error", "found", "names")

    def __init__(self, names: Sequence[str]) -> None:
        self.names = names
        self.answered = anyio.Event()
        self.found: list[Any] = []
        self.error: BaseException | None = None


class Lookups:
    """Answers `get` and `get_many` for many callers with one ``fetch(names)`` call per
    round (at most `CHUNK` names a call).

    ``fetch`` maps the names asked to what was found (a name it leaves out was not found:
    None); ``start_soon`` starts the task that asks (a task group's ``start_soon``), once
    per round of lookups."""

    def __init__(
        self,
        fetch: Callable[[Sequence[str]], Awaitable[Mapping[str, Any]]],
        start_soon: Callable[[Callable[[], Awaitable[None]]], None],
    ) -> None:
        self._fetch = fetch
        self._start_soon = start_soon
        self._asked: list[_Look] = []
        self._asking = False

    async def get(self, name: str) -> Any:
        """What ``fetch`` finds for ``name`` (None if nothing), read after this call began."""
        return (await self.get_many((name,)))[0]

    async def get_many(self, names: Sequence[str]) -> list[Any]:
        """`get` of each of ``names``, in their order, answered by one round."""
        look = _Look(names)
        self._asked.append(look)
        if not self._asking:
            self._asking = True
            self._start_soon(self._ask)
        await look.answered.wait()
        if look.error is not None:
            raise look.error
        return look.found

    async def _ask(self) -> None:
        asked: list[_Look] = []
        try:
            while self._asked:
                asked, self._asked = self._asked, []
                names = list(dict.fromkeys(name for look in asked for name in look.names))
                try:
                    found: dict[str, Any] = {}
                    for start in range(0, len(names), CHUNK):
                        found.update(await self._fetch(names[start : start + CHUNK]))
                except Exception as exc:  # each caller gets the error, as a read of its own
                    _answer(asked, error=exc)
                else:
                    _answer(asked, found=found)
                asked = []
        except BaseException:  # cancelled (the runtime stops): nobody is left waiting
            stopped = RuntimeError("the lookup was cancelled: the runtime is stopping")
            _answer(asked, error=stopped)
            _answer(self._asked, error=stopped)
            self._asked = []
            raise
        finally:
            self._asking = False


def _answer(
    asked: list[_Look],
    *,
    found: Mapping[str, Any] | None = None,
    error: BaseException | None = None,
) -> None:
    for look in asked:
        if found is not None:
            look.found = [found.get(name) for name in look.names]
        look.error = error
        look.answered.set()
