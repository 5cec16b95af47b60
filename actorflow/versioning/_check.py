"""`check`: replay every unfinished turn of the chosen actors against the code at hand,
executing nothing, and report which would diverge (see `actorflow.versioning`)."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import cast

from actorflow._actor import Actor
from actorflow.runtime._big_values import ValueStore
from actorflow.versioning import _sources
from actorflow.versioning._dry_run import DryRunHost, Verdict, dry_runtime
from actorflow.versioning._report import Divergence, ReplayReport, Unchecked, one_line_diff
from journal import JournalError, SqliteStore, Store

#: Called with how many actors were examined since the last call.
Progress = Callable[[int], None]


class Selection:
    """Which actors to check: all, or those of ``types`` and those named in ``actors``
    (``Type/key``)."""

    def __init__(self, types: Iterable[str] = (), actors: Iterable[str] = ()) -> None:
        self.types = frozenset(types)
        self.actors = frozenset(actors)

    def __contains__(self, actor_id: str) -> bool:
        if not (self.types or self.actors):
            return True
        return actor_id in self.actors or actor_id.partition("/")[0] in self.types


async def check_store(
    classes: Sequence[type[Actor]],
    store: Store,
    *,
    source: str = "",
    selection: Selection | None = None,
    report: ReplayReport | None = None,
    progress: Progress | None = None,
) -> ReplayReport:
    """Check the unfinished turns of the actors of ``store`` chosen by ``selection``."""
    report = report if report is not None else ReplayReport()
    ids = await _chosen(store, selection)
    await _check_all(classes, store, ids, source, report, progress)
    return report


async def _chosen(store: Store, selection: Selection | None) -> list[str]:
    chosen = selection or Selection()
    return [actor_id for actor_id in await _sources.actor_ids(store) if actor_id in chosen]


async def _check_all(
    classes: Sequence[type[Actor]],
    store: Store,
    ids: list[str],
    source: str,
    report: ReplayReport,
    progress: Progress | None,
) -> None:
    types = {cls.__actorflow_name__: cls for cls in classes}
    for actor_id in ids:
        await _check_one(types, store, actor_id, source, report)
        if progress is not None:
            progress(1)


async def _check_one(
    types: dict[str, type[Actor]], store: Store, actor_id: str, source: str, report: ReplayReport
) -> None:
    try:
        copy = await _sources.copy_actor(store, actor_id, store.identity)
    except JournalError as exc:
        report.unchecked.append(Unchecked(actor_id, f"its journal cannot be read: {exc}", source))
        return
    if copy is None:
        report.finished += 1
        return
    type_name, _, key = actor_id.partition("/")
    cls = types.get(type_name)
    if cls is None:
        known = ", ".join(sorted(types)) or "none"
        reason = (
            f"it has an unfinished turn, and the app has no actor type {type_name!r} (it has: "
            f"{known}); that turn would never resume"
        )
        report.unchecked.append(Unchecked(actor_id, reason, source))
        return
    host = DryRunHost(dry_runtime(copy, list(types.values())), cls, key)
    with _quiet():
        verdict = await host.dry_run()
    report.checked += 1
    divergence = _divergence(verdict, source)
    if divergence is not None:
        report.diverged.append(divergence)


def _divergence(verdict: Verdict, source: str) -> Divergence | None:
    error = verdict.error
    if verdict.outcome == "diverged" and error is not None:
        return Divergence(
            verdict.actor,
            error.position,
            error.recorded,
            error.requested,
            one_line_diff(error.recorded, error.requested),
            verdict.turn,
            verdict.handler,
            source,
        )
    if verdict.outcome == "error":
        recorded = f"turn {verdict.turn} ({verdict.handler}) as journaled"
        return Divergence(
            verdict.actor,
            verdict.position,
            recorded,
            verdict.detail,
            one_line_diff(recorded, verdict.detail),
            verdict.turn,
            verdict.handler,
            source,
            "error",
        )
    return None


#: Set while a dry run replays: the runtime logs every actor that gets stuck, and a dry
#: run reports them instead (other tasks' records still pass, runtimes beside it too).
_dry_running: contextvars.ContextVar[bool] = contextvars.ContextVar("dry_run", default=False)


class _NotFromDryRuns(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _dry_running.get()


logging.getLogger("actorflow").addFilter(_NotFromDryRuns())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    token = _dry_running.set(True)
    try:
        yield
    finally:
        _dry_running.reset(token)


async def check(
    classes: Sequence[type[Actor]],
    *,
    journals: Sequence[str | Path] = (),
    stores: Sequence[Store] = (),
    exports: Sequence[str | Path] = (),
    selection: Selection | None = None,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Check SQLite journal files (opened read-only), stores, and exported journal files
    (files, or directories of ``*.jsonl`` files); ``on_total`` first hears how many
    actors there are to examine, ``progress`` then hears of each."""
    report = ReplayReport()
    async with contextlib.AsyncExitStack() as stack:
        sources: list[tuple[str, Store]] = []
        for path in journals:
            opened = await SqliteStore.open(path, read_only=True)
            stack.push_async_callback(opened.close)
            sources.append((str(path), cast(Store, ValueStore(opened))))  # values resolved
        sources += [("", store) for store in stores]
        for file in _sources.export_files([Path(p) for p in exports]):
            sources.append((str(file), _sources.load_export(file)))
        chosen = [(source, store, await _chosen(store, selection)) for source, store in sources]
        found = {actor_id for _, _, ids in chosen for actor_id in ids}
        for actor_id in sorted(selection.actors - found if selection is not None else ()):
            report.unchecked.append(Unchecked(actor_id, "no journal of it was given", ""))
        if on_total is not None:
            on_total(sum(len(ids) for _, _, ids in chosen))
        for source, store, ids in chosen:
            await _check_all(classes, store, ids, source, report, progress)
    return report
