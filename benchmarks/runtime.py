"""The runtime suite: durable steps/s through actorflow, against plain awaits of the same steps.

- ``steps``: 1, 100 and 1000 actors, each running one invocation of a handler that takes
  S trivial steps (``ctx.run`` of an ``async def`` returning a small int), in ``full``
  durability, on a fresh SQLite file per run. Every actor is called concurrently
  (``ref.call``), and the clock runs from before the first send to after the last result:
  accepting the messages (durably), activating the actors and journaling their turns are
  part of the work. Figure: total steps / wall seconds. Ceiling: the same handler body in
  the same shape (as many concurrent tasks, S steps each) with every step a plain ``await``
  of the same async function: nothing journaled. The step is async because async step
  functions run on the event loop, so this figure is the runtime's own cost per step, and
  stays comparable across runtime versions whatever they do with sync functions.
- ``sync-steps``: as ``steps``, for 1 and 100 actors with the same step counts, but the step
  function is a plain ``def`` doing the same work. The runtime may run sync steps in a
  worker thread (so that a blocking tool cannot stall the loop); this scenario shows what
  that costs. Ceiling: an ``async def`` wrapper calling the same function on the loop (the
  ``steps`` scenario's ceiling before steps became async, so figures stay comparable with
  runs before that change). ``vs steps``: its steps/s over the ``steps`` figure for as many
  actors in the same run.
- ``replay-steps``: one actor whose journal holds an unfinished turn of 10,000 steps that
  then waits for an event (written live first, not timed). A finished turn is never
  replayed (its end checkpoints the actor), so this is what replay is for: a process that
  stopped mid-turn. A fresh runtime is timed from its start on the reopened file until the
  actor waits for the event again: recovery activates it and replays the 10,000 steps
  (every step handed back from the journal, the function never called). Figure: replayed
  steps / wall seconds.
  Ceiling: the same handler body awaiting the (async) step function directly, in process.
- ``long-lived``: one actor living 10,000 turns (a step and an event each), measured every
  1,000: the bytes its journal holds, the memory the runtime holds for it, the time a
  fresh runtime takes to activate it, and its turn time; each reported first and last, with
  last / first ("flatness", 1.0 is flat). An agent may live for months: its cost must not
  grow with its age. Reported, never enforced; see `benchmarks._long_lived`.
- ``checkpoint-bytes``: the bytes a turn's checkpoint writes as a conversation grows to
  500 messages of 2 KB, against the whole state's size; ``activation-age``: the time a
  fresh runtime takes to activate an actor with 10, 100, 1,000 and 10,000 finished turns,
  as a ratio to the 10-turn figure. See `benchmarks._checkpoints`.

Every figure is refused (the suite stops with an error) unless the runtime did the work
right: each handler returned the right total, the step function ran exactly once per live
step and never on replay, and the journal holds every step.

Everything runs under uvloop, each steps measurement is repeated and the middle run
reported (``long-lived`` is one life, whose activations are timed several times).
Files live in a temporary directory, removed afterwards; set ``TMPDIR`` to measure
another disk. A run that takes longer than `benchmarks._hosting.HANG_AFTER` seconds (the
long life: that plus 50 ms a turn) stops the suite with an error: the runtime hung, and
no figure is reported.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import math
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import actorflow
from benchmarks import _checkpoints, _long_lived
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
#: Actors in the ``sync-steps`` scenario (steps each as in ``steps``).
SYNC_ACTORS = (1, 100)
#: Steps in the replayed turn: (full run, --quick run).
REPLAY_STEPS = (10_000, 2_000)
REPLAY_KEY = "replayed"
DURABILITY: Durability = "full"


# -- what the actors run ------------------------------------------------------------------


@dataclasses.dataclass
class Tally:
    """Which steps the step functions ran: one entry per call, so once per live step and
    never on replay.

    A list rather than a counter: ``list.append`` is atomic under the GIL, and a sync step
    may run in a worker thread, where ``calls += 1`` could lose a count under contention.
    """

    ran: list[int] = dataclasses.field(default_factory=list)

    @property
    def calls(self) -> int:
        """How many times the step functions ran since the last `reset`."""
        return len(self.ran)

    def reset(self) -> None:
        """Forget earlier calls."""
        self.ran = []


TALLY = Tally()


async def step(i: int) -> int:
    """The trivial step, as an ``async def`` (run on the event loop): a small int derived
    from the step's index."""
    TALLY.ran.append(i)
    return i % 10


def sync_step(i: int) -> int:
    """The same trivial step as a plain ``def`` (the runtime may run it in a worker thread)."""
    TALLY.ran.append(i)
    return i % 10


StepFunction = Callable[[int], Awaitable[int]] | Callable[[int], int]
#: How a step is run: ``ctx.run`` (journaled), or a ceiling's plain await.
StepRunner = Callable[[Any, int], Awaitable[int]]


def expected_total(steps: int) -> int:
    """What `take_steps` returns after ``steps`` steps."""
    return sum(i % 10 for i in range(steps))


async def take_steps(run: StepRunner, fn: StepFunction, steps: int) -> int:
    """The handler's body, shared with the ceilings: ``steps`` steps of ``fn``, one after
    another."""
    total = 0
    for i in range(steps):
        total += await run(fn, i)
    return total


def awaited_directly(fn: Callable[[int], Awaitable[int]], i: int, /) -> Awaitable[int]:
    """The async ceiling's step: the step function's own coroutine, which the handler's
    body awaits; nothing journaled, no wrapper."""
    return fn(i)


async def called_on_the_loop(fn: Callable[[int], int], i: int, /) -> int:
    """The sync ceiling's step: an async wrapper calling the step function on the loop."""
    return fn(i)


class Bench(actorflow.Actor):
    """The benchmarked actor."""

    @actorflow.handler
    async def go(self, steps: int) -> int:
        """Take ``steps`` durable (async) steps; return the sum of their results."""
        return await take_steps(self.ctx.run, step, steps)

    @actorflow.handler
    async def go_sync(self, steps: int) -> int:
        """Take ``steps`` durable sync steps; return the sum of their results."""
        return await take_steps(self.ctx.run, sync_step, steps)

    @actorflow.handler
    async def go_and_wait(self, steps: int) -> int:
        """`go`, then wait for the ``finish`` event: a turn a stopped process leaves
        unfinished, for the next one to replay."""
        total = await take_steps(self.ctx.run, step, steps)
        await self.ctx.wait_for("finish")
        return total


@dataclasses.dataclass(frozen=True)
class StepKind:
    """A flavour of step function: the scenario, its handler, and its ceiling."""

    scenario: str
    handler: Callable[[Bench, int], Awaitable[int]]
    fn: StepFunction
    ceiling: StepRunner


ASYNC_STEPS = StepKind("steps", Bench.go, step, awaited_directly)
SYNC_STEPS = StepKind("sync-steps", Bench.go_sync, sync_step, called_on_the_loop)


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


async def steps_with_runtime(path: Path, kind: StepKind, actors: int, each: int) -> StepsRun:
    """Time ``actors`` concurrent calls of ``kind``'s handler, ``each`` steps per call."""
    doing = f"running {actors} actors x {each} {kind.scenario}"
    async with host_bench(path, doing) as (runtime, store):
        handles = [runtime.ref(Bench, actor_key(a)) for a in range(actors)]
        TALLY.reset()
        commits, records = store.stats.commits, store.stats.records
        start = time.perf_counter()
        async with asyncio.TaskGroup() as calls:
            tasks = [calls.create_task(handle.call(kind.handler, each)) for handle in handles]
        elapsed = time.perf_counter() - start
        run = StepsRun(elapsed, store.stats.commits - commits, store.stats.records - records)
        totals = {task.result() for task in tasks}
        check(totals == {expected_total(each)}, doing, f"handlers returned {sorted(totals)}")
        check_ran_once(doing, actors, each)
        entries = await runtime.journal(handles[-1].ref)
        journaled = sum(entry.type == "step" for entry in entries)
        check(journaled == each, doing, f"{handles[-1].id} journaled {journaled} steps")
    return run


def check_ran_once(doing: str, actors: int, each: int) -> None:
    """Refuse the run unless the step function ran once per live step: step ``i`` exactly
    ``actors`` times for every ``i`` below ``each``."""
    check(TALLY.calls == actors * each, doing, f"the step function ran {TALLY.calls:,} times")
    counts = collections.Counter(TALLY.ran)
    wrong = next((i for i in range(each) if counts[i] != actors), None)
    check(wrong is None, doing, f"step {wrong} ran {counts[wrong]} times, not {actors}")


async def steps_ceiling(kind: StepKind, actors: int, each: int) -> float:
    """Time the same handler body in ``actors`` concurrent tasks with plain awaits."""
    start = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for _ in range(actors):
            tasks.create_task(take_steps(kind.ceiling, kind.fn, each))
    return time.perf_counter() - start


async def steps_scenario(
    kind: StepKind, actors: int, each: int, repeats: int, progress: Progress
) -> Result:
    """Durable steps by ``actors`` concurrent actors, against plain awaits in the same shape."""
    total = actors * each
    who = f"{actors} actor{'s' if actors > 1 else ''}"
    progress.scenario(f"{kind.scenario} {DURABILITY}, {who} x {each:,} steps")
    runs, ceilings = [], []
    for n in range(1, repeats + 1):
        with tempfile.TemporaryDirectory(prefix="actorflow-bench-") as tmp:
            progress.step(f"run {n}/{repeats}, Runtime")
            runs.append(await steps_with_runtime(Path(tmp, "runtime.db"), kind, actors, each))
        progress.step(f"run {n}/{repeats}, plain await")
        ceilings.append(await steps_ceiling(kind, actors, each))
    TALLY.reset()
    run = next(r for r in runs if r.seconds == middle([r.seconds for r in runs]))
    return {
        "scenario": kind.scenario,
        "durability": DURABILITY,
        "actors": actors,
        "steps_each": each,
        "steps": total,
        **rates(total, run.seconds, middle(ceilings)),
        "commits": run.commits,
        "mean_batch": round(run.records / run.commits, 2),
        "repeats": repeats,
    }


def versus_async(results: list[Result]) -> None:
    """Give each ``sync-steps`` result its steps/s over the ``steps`` figure for as many
    actors in the same run (``vs_steps``)."""
    async_per_s = {r["actors"]: r["per_s"] for r in results if r["scenario"] == "steps"}
    for result in results:
        if result["scenario"] == SYNC_STEPS.scenario:
            result["vs_steps"] = round(result["per_s"] / async_per_s[result["actors"]], 4)


# -- replay -------------------------------------------------------------------------------


async def write_turn(path: Path, steps: int) -> str:
    """Journal a turn of ``steps`` steps that then waits for an event, and stop there:
    the turn stays unfinished for the next runtime to replay (not timed). Return its
    invocation."""
    doing = f"writing the {steps:,}-step turn to replay"
    async with host_bench(path, doing) as (runtime, _):
        handle = runtime.ref(Bench, REPLAY_KEY)
        invocation = await handle.send(Bench.go_and_wait, steps)
        await waiting(handle, doing)
    return invocation


async def waiting(handle: actorflow.ActorHandle[Bench], doing: str) -> None:
    """Return once the actor waits for its event (polled: status is all the API shows)."""
    while (await handle.status()).state != "waiting-event":
        check((await handle.status()).error is None, doing, "the actor got stuck")
        await asyncio.sleep(0.0002)


async def replay_with_runtime(path: Path, steps: int, invocation: str) -> StepsRun:
    """Time a fresh runtime from its start until the replayed turn waits again."""
    doing = f"replaying a {steps:,}-step turn"
    TALLY.reset()
    start = time.perf_counter()
    async with host_bench(path, doing) as (runtime, store):
        handle = runtime.ref(Bench, REPLAY_KEY)
        await waiting(handle, doing)
        elapsed = time.perf_counter() - start
        run = StepsRun(elapsed, store.stats.commits, store.stats.records)
        check(TALLY.calls == 0, doing, f"replay ran the step function {TALLY.calls:,} times")
        await handle.deliver("finish")
        total = await runtime.result(invocation)
        check(total == expected_total(steps), doing, f"the handler returned {total}")
    return run


async def replay_ceiling(steps: int) -> float:
    """Time the same handler body awaiting the step function directly."""
    start = time.perf_counter()
    await take_steps(awaited_directly, step, steps)
    return time.perf_counter() - start


async def replay_scenario(steps: int, repeats: int, progress: Progress) -> Result:
    """Replaying one actor's ``steps``-step turn, against running its body in process."""
    progress.scenario(f"replay-steps, 1 actor x {steps:,} steps")
    runs, ceilings = [], []
    with tempfile.TemporaryDirectory(prefix="actorflow-bench-") as tmp:
        written = Path(tmp, "written.db")
        progress.step(f"writing the {steps:,}-step turn (not timed)")
        invocation = await write_turn(written, steps)
        for n in range(1, repeats + 1):
            path = Path(tmp, f"replay-{n}.db")
            copy_database(written, path)
            progress.step(f"run {n}/{repeats}, Runtime")
            runs.append(await replay_with_runtime(path, steps, invocation))
            progress.step(f"run {n}/{repeats}, plain await")
            ceilings.append(await replay_ceiling(steps))
    TALLY.reset()
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
    Column("vs steps", "vs_steps", fraction),
]


# -- the suite ----------------------------------------------------------------------------


async def measure(quick: bool, repeats: int) -> tuple[list[Result], list[Result], list[Result]]:
    """Run every scenario in turn; return the steps' results, the long-lived ones and the
    checkpoint ones."""
    progress = Progress("runtime", len(ACTORS) + len(SYNC_ACTORS) + 4)
    results = []
    for actors in ACTORS:  # each sync-steps run right after its async reference
        each = STEPS_EACH[actors][quick]
        results.append(await steps_scenario(ASYNC_STEPS, actors, each, repeats, progress))
        if actors in SYNC_ACTORS:
            results.append(await steps_scenario(SYNC_STEPS, actors, each, repeats, progress))
    versus_async(results)
    results.append(await replay_scenario(REPLAY_STEPS[quick], repeats, progress))
    long_lived = await _long_lived.long_lived_scenario(quick, progress)
    checkpoints = await _checkpoints.checkpoint_scenarios(quick, progress)
    progress.finish()
    return results, long_lived, checkpoints


def run(*, quick: bool, repeats: int) -> SuiteReport:
    """Run the runtime suite."""
    results, long_lived, checkpoints = on_uvloop(measure(quick, repeats))
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
            "plain await (the ceiling): the same handler body and shape, each step a plain "
            "await of the same async function (sync-steps: of an async wrapper calling it)",
            "vs steps: sync-steps' steps/s over steps' for as many actors in this run; "
            "replay-steps runs from the runtime's start until the replayed turn waits again",
            "commits and mean batch (records per commit): the store's transactions in the "
            "timed part",
        ],
        columns=COLUMNS,
        results=results,
        targets=targets(results),
        context=quoted_lines(),
        sections=[
            _long_lived.section(long_lived, quick),
            *_checkpoints.sections(checkpoints, quick),
        ],
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
