"""Helpers for test suites of actorflow apps.

`replay` checks that the code at hand can pick up journals written by earlier code: every
unfinished turn in a journal file or in exported journal files (golden journals checked into
the tests, see `actorflow journal export`) is replayed against it, executing no side effect,
and the `ReplayReport` says which actors would diverge::

    from actorflow.testing import replay

    def test_the_new_code_picks_up_old_journals():
        replay("myapp.agents", exports=["tests/golden"]).assert_compatible()

It is the check `actorflow replay APP` runs (see "Checking a deploy before it happens" in
docs/versioning.md).
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Sequence
from pathlib import Path

import anyio

from actorflow._actor import Actor
from actorflow.versioning import (
    Divergence,
    ReplayDivergenceError,
    ReplayReport,
    Selection,
    Unchecked,
    check,
)
from journal import Store

App = str | types.ModuleType | Iterable[type[Actor]]


def actor_classes(app: App) -> list[type[Actor]]:
    """The actor classes of ``app``: an app spec as `actorflow serve` takes it
    (``package.module``, ``path/to/file.py``, either with ``:NAME``), a module, or the
    classes themselves."""
    from actorflow.server._serve import load_actors  # (only for a spec: it imports the server)

    if isinstance(app, str):
        return load_actors(app)
    if isinstance(app, types.ModuleType):
        return load_actors(app.__name__)
    classes = list(app)
    bad = [c for c in classes if not (isinstance(c, type) and issubclass(c, Actor))]
    if bad or not classes:
        raise TypeError(f"replay takes actorflow.Actor subclasses, got {bad or 'none'}")
    return classes


async def replay_async(
    app: App,
    *,
    journal: str | Path | Sequence[str | Path] | None = None,
    exports: Iterable[str | Path] = (),
    stores: Iterable[Store] = (),
    types: Iterable[str] = (),
    actors: Iterable[str] = (),
) -> ReplayReport:
    """`replay`, for async tests (awaited in a running event loop)."""
    journals: list[str | Path] = []
    if isinstance(journal, str | Path):
        journals.append(journal)
    elif journal is not None:
        journals.extend(journal)
    return await check(
        actor_classes(app),
        journals=journals,
        exports=list(exports),
        stores=list(stores),
        selection=Selection(types, actors),
    )


def replay(
    app: App,
    *,
    journal: str | Path | Sequence[str | Path] | None = None,
    exports: Iterable[str | Path] = (),
    stores: Iterable[Store] = (),
    types: Iterable[str] = (),
    actors: Iterable[str] = (),
) -> ReplayReport:
    """Replay every unfinished turn in ``journal`` (SQLite journal files, opened
    read-only), ``exports`` (exported journal files, or directories of ``*.jsonl`` ones) and
    ``stores`` against the actor classes of ``app``, executing no side effect; only actors
    of ``types`` and those named in ``actors`` (``Type/key``) if either is given.

    Returns a `ReplayReport`: ``.ok``, ``.diverged`` (one `Divergence` per actor that would
    diverge: where, what was recorded, what the code does, a one-line diff), ``.unchecked``,
    and ``.assert_compatible()``, which raises `ReplayDivergenceError` (an AssertionError
    whose message is the report) if any would diverge. Runs its own event loop; use
    `replay_async` from async code."""
    return anyio.run(
        lambda: replay_async(
            app, journal=journal, exports=exports, stores=stores, types=types, actors=actors
        )
    )


__all__ = [
    "Divergence",
    "ReplayDivergenceError",
    "ReplayReport",
    "Unchecked",
    "actor_classes",
    "replay",
    "replay_async",
]
