"""``python -m benchmarks replay``: how fast `actorflow replay` checks unfinished turns.

A SQLite journal holds thousands of actors, each with an unfinished turn of a few steps
(it waits for an event that never comes). The check (`actorflow.testing.replay_async`, what
`actorflow replay APP --journal PATH` runs) replays every one of them against the same code;
its actors/s are compared with a baseline measured in the same run on the same file: reading
the records the check reads (each actor's checkpoint, journal and inbox) through a
read-only store, and nothing else. The ratio is the cost of the replay itself.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

import anyio

import actorflow
from actorflow.testing import replay_async
from benchmarks._report import (
    Column,
    Progress,
    Result,
    SuiteReport,
    Target,
    fraction,
    loop_name,
    middle,
    on_uvloop,
    seconds,
    whole,
)
from journal import SqliteStore

#: (actors, steps each): full run, --quick.
SIZES = {False: (5_000, 5), True: (300, 5)}


async def noop(index: int) -> int:
    """A step that does nothing but return."""
    return index


class Agent(actorflow.Actor):
    """A few steps, then a wait for an event that never comes: a turn in flight."""

    @actorflow.handler
    async def work(self, steps: int) -> int:
        for index in range(steps):
            await self.ctx.run(noop, index)
        await self.ctx.wait_for("go")
        return steps


async def write_journal(path: Path, actors: int, steps: int, progress: Progress) -> None:
    """``actors`` Agents, each with a turn of ``steps`` steps in flight."""
    async with (
        await SqliteStore.open(path) as store,
        actorflow.Runtime(store, [Agent]) as runtime,
    ):
        handles = [runtime.ref(Agent, f"a{index}") for index in range(actors)]
        for handle in handles:
            await handle.send(Agent.work, steps)
        waiting = 0
        while waiting < actors:
            progress.step(f"writing: {waiting:,} of {actors:,} actors in flight")
            await anyio.sleep(0.05)
            states = [(await handle.status()).state for handle in handles[waiting:]]
            waiting += next(
                (i for i, state in enumerate(states) if state != "waiting-event"), len(states)
            )


async def read_baseline(path: Path) -> int:
    """Read what the check reads (checkpoint, journal, inbox of every actor); the records."""
    count = 0
    async with await SqliteStore.open(path, read_only=True) as store:
        for stream in await store.list_streams("actor/"):
            actor_id = stream.removeprefix("actor/")
            await store.load_snapshot(stream)
            for name in (stream, f"inbox/{actor_id}"):
                await store.load_snapshot(name)
                async for batch in store.read_batches(name):
                    count += len(batch)
    return count


async def measure(quick: bool, repeats: int) -> Result:
    """Write the journal, then time the check and the baseline, alternately."""
    actors, steps = SIZES[quick]
    progress = Progress("replay", 1)
    progress.scenario(f"{actors:,} actors, {steps} steps each, in flight")
    checks, reads = [], []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "journal.db"
        await write_journal(path, actors, steps, progress)
        for run in range(repeats):
            progress.step(f"run {run + 1} of {repeats}: journal reads")
            started = time.perf_counter()
            records = await read_baseline(path)
            reads.append(time.perf_counter() - started)
            progress.step(f"run {run + 1} of {repeats}: replay check")
            started = time.perf_counter()
            report = await replay_async([Agent], journal=path)
            checks.append(time.perf_counter() - started)
            if report.checked != actors or not report.ok:
                raise AssertionError(f"the check went wrong: {report.lines()[-1]}")
    progress.finish()
    check_s, read_s = middle(checks), middle(reads)
    return {
        "scenario": "replay-check",
        "actors": actors,
        "steps_each": steps,
        "records": records,
        "seconds": round(check_s, 4),
        "per_s": round(actors / check_s, 1),
        "baseline_per_s": round(actors / read_s, 1),
        "ratio": round(read_s / check_s, 6),
        "repeats": repeats,
    }


COLUMNS = [
    Column("scenario", "scenario", numeric=False),
    Column("actors", "actors", whole),
    Column("steps each", "steps_each", whole),
    Column("records", "records", whole),
    Column("seconds", "seconds", seconds),
    Column("actors/s", "per_s", whole),
    Column("reads: actors/s", "baseline_per_s", whole),
    Column("ratio", "ratio", fraction),
]


def run(*, quick: bool, repeats: int) -> SuiteReport:
    """Run the replay suite."""
    result = on_uvloop(measure(quick, repeats))
    plural = "s" if repeats > 1 else ""
    return SuiteReport(
        suite="replay",
        quick=quick,
        title=f"replay: actorflow replay's check of unfinished turns, median of {repeats} "
        f"run{plural}",
        notes=[
            "actors/s = actors checked / wall seconds of the whole check (opening the journal "
            "read-only, finding the unfinished turns, copying each actor and replaying it)",
            "reads: the baseline, measured in the same run on the same file: reading each "
            "actor's checkpoint, journal and inbox, and nothing else; ratio = check's actors/s "
            "over the baseline's",
            f"{loop_name()}; SQLite {sqlite3.sqlite_version}",
        ],
        columns=COLUMNS,
        results=[result],
        targets=[Target("actors checked/s", result["per_s"], 1_000)],
    )
