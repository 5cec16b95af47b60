"""Running actorflow under a benchmark: a runtime with a time limit, and checks that refuse a
figure when the runtime did its work wrong."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import actorflow
from journal import Durability, SqliteStore

#: Seconds after which a run counts as hung: far beyond the longest run (a few seconds).
HANG_AFTER = 120.0


class RuntimeBenchmarkError(RuntimeError):
    """The runtime failed or hung under the benchmark: a bug to report, not a figure."""


@contextlib.asynccontextmanager
async def hosted(
    path: Path,
    doing: str,
    actors: Sequence[type[actorflow.Actor]],
    *,
    durability: Durability,
    ran: Callable[[], int],
    limit: float = HANG_AFTER,
) -> AsyncIterator[tuple[actorflow.Runtime, SqliteStore]]:
    """A runtime hosting ``actors`` over a store at ``path``, both closed afterwards.

    Everything inside, shutdown included, must finish within ``limit`` seconds; a hang or
    an actorflow error becomes a `RuntimeBenchmarkError` saying what was being done.
    ``ran`` counts the step function's calls, quoted when the runtime hangs.
    """
    started = time.perf_counter()
    calls = ran()
    try:
        async with asyncio.timeout(limit):
            store = await SqliteStore.open(path, durability=durability)
            try:
                async with actorflow.Runtime(store, actors, idle_timeout=600) as runtime:
                    yield runtime, store
            finally:
                await store.close()
    except TimeoutError:
        raise RuntimeBenchmarkError(
            f"actorflow hung while {doing}: not done after {time.perf_counter() - started:.1f}s "
            f"(the limit is {limit:g}s; the step function ran {ran() - calls:,} "
            f"times meanwhile). This is a runtime bug, not a benchmark setting; reproduce "
            f"with `python -m benchmarks runtime --quick`."
        ) from None
    except (actorflow.ActorflowError, ExceptionGroup) as exc:
        cause = first_leaf(exc)
        raise RuntimeBenchmarkError(
            f"actorflow failed while {doing}: {type(cause).__name__}: {cause}"
        ) from exc


def first_leaf(error: BaseException) -> BaseException:
    """The first error that is not a group: what went wrong inside nested task groups."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def check(ok: bool, doing: str, problem: str) -> None:
    """Refuse a figure computed over work the runtime did not do right."""
    if not ok:
        raise RuntimeBenchmarkError(f"actorflow misbehaved while {doing}: {problem}")


def copy_database(source: Path, target: Path) -> None:
    """Copy an SQLite database through SQLite's backup API, so that every run starts from
    the same journal (consistent even while another connection has it open)."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)
