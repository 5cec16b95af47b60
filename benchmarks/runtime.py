"""The runtime suite: durable steps/s through actorflow, against plain awaits of the same steps.

- ``steps``: 1, 100 and 1000 actors, each running one invocation of a handler that takes
  S trivial steps (``ctx.run`` of a sync function returning a small int), in ``full``
  durability, on a fresh SQLite file per run. Every actor is called concurrently
  (``ref.call``), and the clock runs from before the first send to after the last result:
  accepting the messages (durably), activating the actors and journaling their turns are
  part of the work. Figure: total steps / wall seconds. Ceiling: the same handler body in
  the same shape (as many concurrent tasks, S steps each) with every step a plain ``await``
  of an async wrapper around the same function: nothing journaled.
- ``replay-steps``: one actor whose journal holds a finished turn of 10,000 steps (written
  live first, not timed). A fresh runtime on the reopened file is timed calling a handler
  that takes no step: activation replays the 10,000-step turn (every step handed back from
  the journal, the function never called), then runs the new turn live, so the figure
  includes that one tiny live turn (four commits: the send, the claim, the turn's start and
  end). Figure: replayed steps / wall seconds.
  Ceiling: the same handler body awaiting the step function directly, in process.

Everything runs under uvloop, each measurement is repeated and the middle run reported.
Files live in a temporary directory, removed afterwards; set ``TMPDIR`` to measure
another disk. A run that takes longer than `benchmarks._hosting.HANG_AFTER` seconds stops
the suite with an error: the runtime hung, and no figure is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

import actorflow
from benchmarks._hosting import check, copy_database, hosted
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
    one_decimal,
    seconds,
    whole,
)
from journal import Durability, SqliteStore

ACTORS = (1, 100, 1000)
#: Steps per actor in the ``steps`` scenario, by actors: (full run, --quick run).
#: Chosen so that each run lasts a few seconds on a small machine, and so that an
#: invocation is long enough (as an agent's run is) that activating the actor (claim,
#: snapshot lookup, inbox read) is part of the figure without being most of it.
STEPS_EACH: dict[int, tuple[int, int]] = {
    1: (3_000, 500),
    100: (200, 20),
    1000: (100, 5),
}
#: Steps in the replayed turn: (full run, --quick run).
REPLAY_STEPS = (10_000, 2_000)
REPLAY_KEY = "replayed"
DURABILITY: Durability = "full"


# -- what the actors run ------------------------------------------------------------------


@dataclasses.dataclass
class Tally:
    """How many times the step function ran: once per live step, never on replay."""

    calls: int = 0


TALLY = Tally()


def step(i: int) -> int:
    """The trivial step: a small int derived from the step's index."""
    TALLY.calls += 1
    return i % 10


def expected_total(steps: int) -> int:
    """What `take_steps` returns after ``steps`` steps."""
    return sum(i % 10 for i in range(steps))


class StepRunner(Protocol):
    """How a step is run: ``ctx.run`` (journaled) or `plain_await` (the ceiling)."""

    def __call__(self, fn: Callable[[int], int], /, *args: int) -> Awaitable[int]: ...


async def take_steps(run: StepRunner, steps: int) -> int:
    """The handler's body, shared with the ceilings: ``steps`` steps, one after another."""
    total = 0
    for i in range(steps):
        total += await run(step, i)
    return total


async def plain_await(fn: Callable[[int], int], /, *args: int) -> int:
    """The ceiling's step: an async wrapper calling the step function, nothing journaled."""
    return fn(*args)


class Bench(actorflow.Actor):
    """The benchmarked actor."""

    @actorflow.handler
    async def go(self, steps: int) -> int:
        """Take ``steps`` durable steps; return the sum of their results."""
        return await take_steps(self.ctx.run, steps)

    @actorflow.handler
    async def noop(self) -> int:
        """Take no step: a turn whose cost is the turn itself."""
        return 0


# -- running the runtime, with a limit ----------------------------------------------------


def actor_key(index: int) -> str:
    """The key of the ``index``-th benchmarked actor."""
    return f"bench-{index:04d}"


def host_bench(
    path: Path, doing: str
) -> contextlib.AbstractAsyncContextManager[tuple[actorflow.Runtime, SqliteStore]]:
    """`hosted` for the `Bench` actor, in this suite's durability."""
    return hosted(path, doing, [Bench], durability=DURABILITY, ran=lambda: TALLY.calls)


# -- steps --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StepsRun:
    """One timed runtime run: its seconds and the store's commits and records meanwhile."""

    seconds: float
    commits: int
    records: int


async def steps_with_runtime(path: Path, actors: int, each: int) -> StepsRun:
    """Time ``actors`` concurrent calls of `Bench.go`, ``each`` steps per call."""
    doing = f"running {actors} actors x {each} steps"
    async with host_bench(path, doing) as (runtime, store):
        handles = [runtime.ref(Bench, actor_key(a)) for a in range(actors)]
        TALLY.calls = 0
        commits, records = store.stats.commits, store.stats.records
        start = time.perf_counter()
        async with asyncio.TaskGroup() as calls:
            tasks = [calls.create_task(handle.call(Bench.go, each)) for handle in handles]
        elapsed = time.perf_counter() - start
        run = StepsRun(elapsed, store.stats.commits - commits, store.stats.records - records)
        totals = {task.result() for task in tasks}
        check(totals == {expected_total(each)}, doing, f"handlers returned {sorted(totals)}")
        check(TALLY.calls == actors * each, doing, f"{TALLY.calls:,} steps ran")
        entries = await runtime.journal(handles[-1].ref)
        journaled = sum(entry.type == "step" for entry in entries)
        check(journaled == each, doing, f"{handles[-1].id} journaled {journaled} steps")
    return run


async def steps_ceiling(actors: int, each: int) -> float:
    """Time the same handler body in ``actors`` concurrent tasks with plain awaits."""
    start = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for _ in range(actors):
            tasks.create_task(take_steps(plain_await, each))
    return time.perf_counter() - start


async def steps_scenario(actors: int, each: int, repeats: int, progress: Progress) -> Result:
    """Durable steps by ``actors`` concurrent actors, against plain awaits in the same shape."""
    total = actors * each
    who = f"{actors} actor{'s' if actors > 1 else ''}"
    progress.scenario(f"steps {DURABILITY}, {who} x {each:,} steps")
    runs, ceilings = [], []
    for n in range(1, repeats + 1):
        with tempfile.TemporaryDirectory(prefix="actorflow-bench-") as tmp:
            progress.step(f"run {n}/{repeats}, Runtime")
            runs.append(await steps_with_runtime(Path(tmp, "runtime.db"), actors, each))
        progress.step(f"run {n}/{repeats}, plain await")
        ceilings.append(await steps_ceiling(actors, each))
    run = next(r for r in runs if r.seconds == middle([r.seconds for r in runs]))
    return {
        "scenario": "steps",
        "durability": DURABILITY,
        "actors": actors,
        "steps_each": each,
        "steps": total,
        **rates(total, run.seconds, middle(ceilings)),
        "commits": run.commits,
        "mean_batch": round(run.records / run.commits, 2),
        "repeats": repeats,
    }


# -- replay -------------------------------------------------------------------------------


async def write_turn(path: Path, steps: int) -> None:
    """Journal one finished turn of ``steps`` steps for the replayed actor (not timed)."""
    doing = f"writing the {steps:,}-step turn to replay"
    async with host_bench(path, doing) as (runtime, _):
        total = await runtime.ref(Bench, REPLAY_KEY).call(Bench.go, steps)
        check(total == expected_total(steps), doing, f"the handler returned {total}")


async def replay_with_runtime(path: Path, steps: int) -> StepsRun:
    """Time a fresh runtime's first call to the replayed actor (replay plus a tiny turn)."""
    doing = f"replaying a {steps:,}-step turn"
    async with host_bench(path, doing) as (runtime, store):
        handle = runtime.ref(Bench, REPLAY_KEY)
        TALLY.calls = 0
        commits, records = store.stats.commits, store.stats.records
        start = time.perf_counter()
        await handle.call(Bench.noop)
        elapsed = time.perf_counter() - start
        run = StepsRun(elapsed, store.stats.commits - commits, store.stats.records - records)
        check(TALLY.calls == 0, doing, f"replay ran the step function {TALLY.calls:,} times")
        status = await handle.status()
        check(status.turns == 2, doing, f"the actor is at turn {status.turns}, expected 2")
    return run


async def replay_ceiling(steps: int) -> float:
    """Time the same handler body awaiting the step function directly."""
    start = time.perf_counter()
    await take_steps(plain_await, steps)
    return time.perf_counter() - start


async def replay_scenario(steps: int, repeats: int, progress: Progress) -> Result:
    """Replaying one actor's ``steps``-step turn, against running its body in process."""
    progress.scenario(f"replay-steps, 1 actor x {steps:,} steps")
    runs, ceilings = [], []
    with tempfile.TemporaryDirectory(prefix="actorflow-bench-") as tmp:
        written = Path(tmp, "written.db")
        progress.step(f"writing the {steps:,}-step turn (not timed)")
        await write_turn(written, steps)
        for n in range(1, repeats + 1):
            path = Path(tmp, f"replay-{n}.db")
            copy_database(written, path)
            progress.step(f"run {n}/{repeats}, Runtime")
            runs.append(await replay_with_runtime(path, steps))
            progress.step(f"run {n}/{repeats}, plain await")
            ceilings.append(await replay_ceiling(steps))
    run = next(r for r in runs if r.seconds == middle([r.seconds for r in runs]))
    return {
        "scenario": "replay-steps",
        "durability": DURABILITY,
        "actors": 1,
        "steps_each": steps,
        "steps": steps,
        **rates(steps, run.seconds, middle(ceilings)),
        "commits": run.commits,
        "mean_batch": round(run.records / run.commits, 2),
        "repeats": repeats,
    }


# -- figures and targets ------------------------------------------------------------------


def rates(steps: int, runtime_seconds: float, ceiling_seconds: float) -> Result:
    """The runtime's and the ceiling's steps/s, their ratio, and the runtime's seconds."""
    per_s = steps / runtime_seconds
    ceiling_per_s = steps / ceiling_seconds
    return {
        "per_s": round(per_s, 1),
        "ceiling_per_s": round(ceiling_per_s, 1),
        "ratio": round(per_s / ceiling_per_s, 6),
        "seconds": round(runtime_seconds, 4),
    }


def targets(results: list[Result]) -> list[Target]:
    """The issue's targets, checked against this run."""

    def find(scenario: str, actors: int) -> Result:
        return next(r for r in results if (r["scenario"], r["actors"]) == (scenario, actors))

    return [
        Target("steps full, 1 actor, durable steps/s", find("steps", 1)["per_s"], 2_000),
        Target("steps full, 1000 actors, durable steps/s", find("steps", 1000)["per_s"], 20_000),
        Target("replay-steps, steps/s", find("replay-steps", 1)["per_s"], 100_000),
    ]


#: Steps/s quoted in issue 3, measured by its author on this machine, each system at its
#: own durable settings: (one invocation, 50 concurrent).
QUOTED: dict[str, tuple[int, int]] = {
    "Restate": (727, 2_139),
    "LangGraph with SqliteSaver": (959, 498),
    "DBOS on SQLite": (491, 387),
    "Temporal": (22, 74),
}


def quoted_lines() -> list[str]:
    """The issue's comparison figures, labelled as quoted."""
    width = max(len(name) for name in QUOTED)
    return [
        "for comparison, QUOTED from issue 3, NOT measured by this suite: durable steps/s of",
        "other systems, measured by the issue's author on this machine at their own durable "
        "settings",
        f"  {'system'.ljust(width)}  one invocation  50 concurrent",
        *(
            f"  {name.ljust(width)}  {whole(one):>14}  {whole(fifty):>13}"
            for name, (one, fifty) in QUOTED.items()
        ),
    ]


def ratio_cell(value: float) -> str:
    """A ratio with two decimals, or two significant digits below 0.1: ``0.43``, ``0.0012``."""
    if value >= 0.1 or value <= 0:
        return fraction(value)
    return f"{value:.{1 - math.floor(math.log10(value))}f}"


COLUMNS: Sequence[Column] = [
    Column("scenario", "scenario", numeric=False),
    Column("durability", "durability", numeric=False),
    Column("actors", "actors", whole),
    Column("steps each", "steps_each", whole),
    Column("steps", "steps", whole),
    Column("steps/s", "per_s", whole),
    Column("plain await/s", "ceiling_per_s", whole),
    Column("ratio", "ratio", ratio_cell),
    Column("commits", "commits", whole),
    Column("mean batch", "mean_batch", one_decimal),
    Column("seconds", "seconds", seconds),
]


# -- the suite ----------------------------------------------------------------------------


async def measure(quick: bool, repeats: int) -> list[Result]:
    """Run every scenario in turn and return their results."""
    progress = Progress("runtime", len(ACTORS) + 1)
    results = []
    for actors in ACTORS:
        each = STEPS_EACH[actors][quick]
        results.append(await steps_scenario(actors, each, repeats, progress))
    results.append(await replay_scenario(REPLAY_STEPS[quick], repeats, progress))
    progress.finish()
    return results


def run(*, quick: bool, repeats: int) -> SuiteReport:
    """Run the runtime suite."""
    results = on_uvloop(measure(quick, repeats))
    loop = loop_name()
    plural = "s" if repeats > 1 else ""
    return SuiteReport(
        suite="runtime",
        quick=quick,
        title=f"runtime: durable steps through actorflow against plain awaits, "
        f"median of {repeats} run{plural}",
        notes=[
            f"steps/s = steps / wall seconds from before the first send to after the last "
            f"result; SqliteStore durability={DURABILITY}; {loop}; SQLite {sqlite3.sqlite_version}",
            "plain await (the ceiling): the same handler body and shape, each step an awaited "
            "async wrapper of the same function; replay-steps includes one tiny live turn",
            "commits and mean batch (records per commit): the store's transactions in the "
            "timed part",
        ],
        columns=COLUMNS,
        results=results,
        targets=targets(results),
        context=quoted_lines(),
        environment={
            "sqlite": sqlite3.sqlite_version,
            "loop": loop,
            "repeats": repeats,
            "quoted_steps_per_s": {
                "source": "issue 3; measured by its author on this machine, not by this suite",
                "columns": ["one_invocation", "concurrent_50"],
                "systems": {name: list(figures) for name, figures in QUOTED.items()},
            },
        },
    )
