"""The runtime suite's ``long-lived`` scenario: does an actor's cost stay flat as it ages?

One actor with a small msgspec state lives `TURNS` turns in one runtime, one message at a
time. Each turn is delivered an event first (``ref.deliver``), then called: the handler takes
one step (``ctx.run`` of an async function), consumes the event (``ctx.wait_for``) and
updates its state. The runtime runs with its default settings (a snapshot every 100 turns,
the last 1000 results kept) on a `DURABILITY` store: fsyncs would only add time and noise
to a scenario that measures growth, not durable throughput.

Every `CHECKPOINT_EVERY` turns (a multiple of the snapshot interval, so every checkpoint
comes just after a snapshot), once the actor idles (its snapshot written) and while it is
still in memory, the scenario measures:

- ``journal bytes``: the payload bytes the journal holds for the actor's work: every record
  of every stream whose name holds the actor id (found with ``list_streams("")``, so stream
  kinds the runtime adds later are counted too: today ``actor/`` and ``inbox/``), plus
  each such stream's latest snapshot (the actor's checkpoint), but not the ``outcomes/``
  stream, which is measured apart:
- ``outcome bytes``: the ``outcomes/`` stream: one small record per finished invocation,
  kept so that every invocation reads back as finished forever. It grows with the number
  of invocations by design (about 180 bytes each here), and is reported so that the
  growth is seen, not hidden in the total.
- ``memory bytes``: the Python memory the process holds for the actor: tracemalloc's
  current size after a full ``gc.collect()``, less the same measure taken once the
  runtime was open and before the actor's first message. tracemalloc runs for the whole
  life, so this counts what the runtime, the store and the actor keep (caches filled
  for the actor included), and nothing the benchmark keeps growing. It sees Python's
  allocators only, not SQLite's page cache (bounded by SQLite itself).
- ``turn ms``: the mean milliseconds of a turn (deliver + call) since the last checkpoint;
  measured under tracemalloc, which slows allocation (it about doubled turn times on the
  development machine): compare it with itself only.

and copies the journal file. Afterwards, with tracemalloc off, ``activation ms`` is timed
on fresh copies of each checkpoint's file: a new runtime is opened (not timed), then the
first call of a handler that takes no step is timed: the send, activation (claim, snapshot,
inbox, replay of turns since the snapshot: none, here) and one tiny turn. The runs go round the
checkpoints `ACTIVATIONS` times, so that a noisy spell hits early and late checkpoints
alike, and each checkpoint's median is reported.

Each measure is reported at the first and the last checkpoint with ``flatness`` = last /
first (the JSON also has every checkpoint, and the journal bytes by stream kind). Flat
means about 1.0: an actor costs the same after 10,000 turns as after 1,000, as it must if
agents are to live for months. Growing in proportion to its age shows as the ratio of the
checkpoints' turns (10.0 in the full run, 5.0 with ``--quick``): that is what ``outcome
bytes`` show, by design. Flatness is reported, never enforced.

The figures are refused (the suite stops) unless every turn was right: the handler got its
own turn's event (so each event was consumed once, in order), its step ran once per turn
and never on activation, its state counted every turn, and a fresh runtime found the
state at the checkpoint's turn.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

import actorflow
from benchmarks._hosting import HANG_AFTER, check, copy_database, hosted
from benchmarks._report import Column, Progress, Result, Section, fraction, whole
from journal import Durability, SqliteStore

#: Turns in the actor's life: (full run, --quick run).
TURNS = (10_000, 1_000)
#: Turns between checkpoints: (full run, --quick run).
CHECKPOINT_EVERY = (1_000, 200)
#: Timed activations per checkpoint, of which the median is reported: (full, --quick).
ACTIVATIONS = (5, 3)
DURABILITY: Durability = "normal"
KEY = "elder"
EVENT = "tick"
#: Longest a turn may take before the life counts as hung (on top of `HANG_AFTER`).
TURN_LIMIT = 0.05


# -- the actor ----------------------------------------------------------------------------


@dataclasses.dataclass
class Notes:
    """How many times the step function ran (async: on the loop, so a plain count is exact)."""

    calls: int = 0


NOTES = Notes()


async def note(turn: int) -> int:
    """The turn's one step: trivial, returns the turn number."""
    NOTES.calls += 1
    return turn


class Age(msgspec.Struct):
    """The actor's state: three numbers, the same size at any age."""

    turns: int = 0
    total: int = 0
    last: int = 0


class Elder(actorflow.Actor, state=Age):
    """The long-lived actor."""

    state: Age

    @actorflow.handler
    async def live(self, turn: int) -> tuple[int, int, int]:
        """One turn of its life: a step, an event, a small change of state.

        Returns the event's payload, the turns counted so far and their total.
        """
        self.state.last = await self.ctx.run(note, turn)
        payload: int = await self.ctx.wait_for(EVENT, type=int)
        self.state.turns += 1
        self.state.total += payload
        return payload, self.state.turns, self.state.total

    @actorflow.handler
    async def age(self) -> int:
        """Take no step: the turns the actor has lived."""
        return self.state.turns


def expected_total(turns: int) -> int:
    """The state's total after ``turns`` turns (turn n is delivered the payload n)."""
    return turns * (turns + 1) // 2


# -- the measures -------------------------------------------------------------------------


class Checkpoint(msgspec.Struct, frozen=True):
    """What one checkpoint measured (its copy of the journal file is `Life.copy`)."""

    turn: int
    journal_bytes: int
    by_stream: dict[str, int]
    memory_bytes: int
    turn_ms: float


async def journal_bytes(store: SqliteStore, actor_id: str) -> dict[str, int]:
    """Payload bytes of every record of every stream naming ``actor_id``, by stream, and of
    their latest snapshots (under ``snapshots``)."""
    mine = [s for s in await store.list_streams("") if f"/{actor_id}/" in f"/{s}/"]
    sizes = {"snapshots": 0}
    for stream in mine:
        sizes[stream] = 0
        async for batch in store.read_batches(stream):
            sizes[stream] += sum(len(record.data) for record in batch)
        snapshot = await store.load_snapshot(stream)
        sizes["snapshots"] += len(snapshot.data) if snapshot is not None else 0
    return sizes


def traced_bytes() -> int:
    """Python memory allocated since tracemalloc started and alive after a full collection."""
    gc.collect()
    current, _ = tracemalloc.get_traced_memory()
    return current


# -- the life (phase 1, traced) -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Life:
    """The lived scenario's settings, and where its files go."""

    turns: int
    every: int
    folder: Path

    @property
    def path(self) -> Path:
        """The journal the actor lives in."""
        return self.folder / "life.db"

    @property
    def measured(self) -> Path:
        """Where the checkpoints are written as they are taken: on disk, so that the traced
        memory holds nothing the benchmark keeps."""
        return self.folder / "checkpoints.jsonl"

    def copy(self, turn: int) -> Path:
        """The copy of the journal taken at ``turn``."""
        return self.folder / f"turn-{turn}.db"

    @property
    def limit(self) -> float:
        """Seconds the whole life may take before it counts as hung."""
        return HANG_AFTER + self.turns * TURN_LIMIT


async def live(life: Life, progress: Progress) -> list[Checkpoint]:
    """Run the actor's life under tracemalloc; measure and copy at every checkpoint."""
    tracemalloc.start()
    try:
        await live_traced(life, progress)
    finally:
        tracemalloc.stop()
    lines = life.measured.read_bytes().splitlines()
    return [msgspec.json.decode(line, type=Checkpoint) for line in lines]


async def live_traced(life: Life, progress: Progress) -> None:
    """The life itself: see `live`."""
    doing = f"living {life.turns:,} turns"
    NOTES.calls = 0
    async with hosted(
        life.path, doing, [Elder], durability=DURABILITY, ran=lambda: NOTES.calls, limit=life.limit
    ) as (runtime, store):
        handle = runtime.ref(Elder, KEY)
        baseline = traced_bytes()
        since = time.perf_counter()
        for turn in range(1, life.turns + 1):
            await handle.deliver(EVENT, turn)
            got = await handle.call(Elder.live, turn)
            want = (turn, turn, expected_total(turn))
            check(got == want, doing, f"turn {turn} returned {got}, expected {want}")
            if turn % life.every == 0:
                turn_ms = (time.perf_counter() - since) * 1000 / life.every
                progress.step(f"checkpoint at turn {turn:,}")
                await settle(handle)
                check(NOTES.calls == turn, doing, f"the step ran {NOTES.calls:,} times")
                check(handle.id in runtime.hosted(), doing, f"{handle.id} left memory")
                memory = traced_bytes() - baseline
                sizes = await journal_bytes(store, handle.id)
                check_streams(sizes, handle.id, doing)
                work = sum(size for name, size in sizes.items() if not _outcomes(name))
                record(life, Checkpoint(turn, work, sizes, memory, turn_ms))
                since = time.perf_counter()


def _outcomes(stream: str) -> bool:
    return stream.startswith("outcomes/")


def record(life: Life, checkpoint: Checkpoint) -> None:
    """Copy the journal file as it is at ``checkpoint`` and write down what it measured."""
    copy_database(life.path, life.copy(checkpoint.turn))
    with life.measured.open("ab") as out:
        out.write(msgspec.json.encode(checkpoint) + b"\n")


async def settle(handle: actorflow.ActorHandle[Elder]) -> None:
    """Return once the actor idles: a caller gets its result before the actor has taken
    the turn's snapshot, and a checkpoint must not measure (or copy) half of one."""
    # Polling: the public API has no event for an actor going idle.
    while (await handle.status()).state != "idle":  # noqa: ASYNC110
        await asyncio.sleep(0.001)


def check_streams(sizes: dict[str, int], actor_id: str, doing: str) -> None:
    """Refuse a byte count that missed the streams the actor is known to have."""
    for stream in (f"actor/{actor_id}", f"inbox/{actor_id}"):
        check(stream in sizes, doing, f"list_streams did not list {stream!r}")


# -- activations (phase 2, untraced) ------------------------------------------------------


async def activation_seconds(source: Path, scratch: Path, turns: int) -> float:
    """Time a fresh runtime's first call to the actor on a fresh copy of ``source``."""
    doing = f"activating the actor after {turns:,} turns"
    copy_database(source, scratch)
    calls = NOTES.calls
    try:
        async with hosted(
            scratch, doing, [Elder], durability=DURABILITY, ran=lambda: NOTES.calls
        ) as (runtime, _):
            handle = runtime.ref(Elder, KEY)
            start = time.perf_counter()
            age = await handle.call(Elder.age)
            elapsed = time.perf_counter() - start
    finally:
        for leftover in scratch.parent.glob(f"{scratch.name}*"):
            leftover.unlink()
    check(age == turns, doing, f"the restored state counts {age:,} turns")
    check(NOTES.calls == calls, doing, f"activation ran the step {NOTES.calls - calls} times")
    return elapsed


async def activations(
    life: Life, checkpoints: Sequence[Checkpoint], rounds: int, progress: Progress
) -> dict[int, float]:
    """Median activation seconds by checkpoint turn, going round the checkpoints."""
    timed: dict[int, list[float]] = {c.turn: [] for c in checkpoints}
    scratch = life.folder / "activated.db"
    for n in range(1, rounds + 1):
        for turn in timed:
            progress.step(f"activation {n}/{rounds} at turn {turn:,}")
            timed[turn].append(await activation_seconds(life.copy(turn), scratch, turn))
    return {turn: statistics.median(runs) for turn, runs in timed.items()}


# -- the scenario -------------------------------------------------------------------------


async def long_lived_scenario(quick: bool, progress: Progress) -> list[Result]:
    """One actor's long life, measured at checkpoints: one result per measure."""
    life_turns, every = TURNS[quick], CHECKPOINT_EVERY[quick]
    progress.scenario(f"long-lived, 1 actor x {life_turns:,} turns")
    with tempfile.TemporaryDirectory(prefix="actorflow-bench-") as tmp:
        life = Life(life_turns, every, Path(tmp))
        checkpoints = await live(life, progress)
        activated = await activations(life, checkpoints, ACTIVATIONS[quick], progress)
    measures: list[tuple[str, Callable[[Checkpoint], float]]] = [
        ("journal bytes", lambda c: c.journal_bytes),
        ("outcome bytes", lambda c: sum(v for k, v in c.by_stream.items() if _outcomes(k))),
        ("memory bytes", lambda c: c.memory_bytes),
        ("activation ms", lambda c: round(activated[c.turn] * 1000, 3)),
        ("turn ms (traced)", lambda c: round(c.turn_ms, 4)),
    ]
    results = {
        name: flatness(name, [(c.turn, value(c)) for c in checkpoints]) for name, value in measures
    }
    results["journal bytes"]["by_kind"] = [{"turn": c.turn, **by_kind(c)} for c in checkpoints]
    results["activation ms"]["activations"] = ACTIVATIONS[quick]
    for result in results.values():
        result.update(turns=life_turns, checkpoint_every=every, durability=DURABILITY)
    return list(results.values())


def by_kind(checkpoint: Checkpoint) -> dict[str, int]:
    """A checkpoint's journal bytes by stream kind: the first part of the stream's name
    (``actor``, ``inbox``, ...), and ``snapshots``."""
    kinds: dict[str, int] = {}
    for stream, size in checkpoint.by_stream.items():
        kind = stream.partition("/")[0]
        kinds[kind] = kinds.get(kind, 0) + size
    return kinds


def flatness(measure: str, series: list[tuple[int, float]]) -> Result:
    """A measure at its first and last checkpoints, and last / first."""
    (first_turn, first), (last_turn, last) = series[0], series[-1]
    return {
        "scenario": "long-lived",
        "measure": measure,
        "first_turn": first_turn,
        "first": first,
        "last_turn": last_turn,
        "last": last,
        "flatness": round(last / first, 4) if first else None,
        "series": [list(point) for point in series],
    }


def amount(value: float) -> str:
    """Whole numbers with separators, fractions with two decimals."""
    return whole(value) if isinstance(value, int) else f"{value:,.2f}"


COLUMNS: Sequence[Column] = [
    Column("scenario", "scenario", numeric=False),
    Column("measure", "measure", numeric=False),
    Column("first at turn", "first_turn", whole),
    Column("first", "first", amount),
    Column("last at turn", "last_turn", whole),
    Column("last", "last", amount),
    Column("flatness", "flatness", fraction),
]


def section(results: list[Result], quick: bool) -> Section:
    """The long-lived scenario's table."""
    growing = TURNS[quick] / CHECKPOINT_EVERY[quick]
    return Section(
        title=f"long-lived: one actor over {TURNS[quick]:,} turns, measured every "
        f"{CHECKPOINT_EVERY[quick]:,} (SqliteStore durability={DURABILITY})",
        columns=COLUMNS,
        results=results,
        notes=[
            f"flatness = last / first: 1.0 is flat; {growing:.1f} grows in proportion to "
            f"the actor's age (reported, not enforced)",
            "journal bytes: payloads of every record and snapshot of the actor's streams but "
            "outcomes/; outcome bytes: outcomes/ (one record per invocation, kept forever); "
            "memory: tracemalloc after gc, less the runtime before the first message",
            f"activation: a fresh runtime's first call (no step), median of "
            f"{ACTIVATIONS[quick]} on copies of the file; turn: deliver + call, under "
            f"tracemalloc",
        ],
    )
