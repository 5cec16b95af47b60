"""A child process for test_hash_seed: ``python -m tests.runtime.hashseed_child DB PHASE``.

``live`` runs a turn whose step takes a frozenset of strings and returns a set, up to a
hold, and stops; ``replay`` replays it (in a process with another hash seed, so the same
sets iterate in another order) and finishes it. Each prints the set's iteration order, and
``replay`` the outcome and the actor's state, as JSON lines.
"""

from __future__ import annotations

import json
import pathlib
import sys

import anyio

from actorflow import Actor, ManualClock, handler
from tests.runtime.support import hold, reaches, running

WORDS = [f"word-{n}" for n in range(40)]


def tally(words: frozenset[str]) -> set[str]:
    return {word.upper() for word in words}


class Words(Actor):
    @handler
    async def go(self) -> set[str]:
        words = frozenset(WORDS)
        print(json.dumps({"order": list(words)}), flush=True)
        upper = await self.ctx.run(tally, words)
        await hold(self.ctx)
        return upper | {"DONE"}


async def main(db: pathlib.Path, phase: str) -> None:
    clock = ManualClock(1_700_000_000.0)
    async with running(db, [Words], clock=clock) as rt:
        words = rt.ref(Words, "k")
        if phase == "live":
            await words.send(Words.go)
            await reaches(words, "waiting-event")
            return
        [invocation] = [i.invocation for i in await words.invocations()]
        await words.deliver("release")
        try:
            outcome = sorted(await rt.result(invocation, timeout=10))
        except Exception as exc:
            outcome = [f"{type(exc).__name__}: {exc}"]
        status = await words.status()
        print(json.dumps({"outcome": outcome, "state": status.state, "error": status.error}))


if __name__ == "__main__":
    anyio.run(main, pathlib.Path(sys.argv[1]), sys.argv[2])
