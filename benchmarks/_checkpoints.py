"""The runtime suite's checkpoint scenarios: what a turn's checkpoint writes, and what an
actor's activation costs, as the actor ages.

- ``checkpoint-bytes``: one agent whose state is a conversation; each turn appends one
  message of `MESSAGE_BYTES` (about 2 KB) to it, up to `MESSAGES` messages (500; 200 with
  ``--quick``). After every turn (the actor idle, its turn's end committed) the scenario
  reads what that turn added to the journal: the records committed since the previous
  turn (`Store.read_all` from the last global position seen) and the actor's checkpoint
  (the ``actor/`` stream's snapshot, replaced by every turn). It reports, at turns 10,
  100, 200 and 500: the bytes of the state's parts that turn wrote (the ``state/``
  stream's records) and of its checkpoint, their sum (``written``), and beside it the
  whole state's encoded size, which is what a checkpoint holding the state whole writes;
  ``vs whole`` is written / whole, ``flatness`` written / the first row's written, and
  the 10-turn mean is written averaged over the 10 turns up to that one. The notes give
  the mean and the largest over every turn (a part written whole again, or every part
  written afresh for garbage collection, makes a turn write more than its message). The
  turn's other records (its message, turn records, outcome) are not counted: they are
  the same with or without checkpoints, and compaction deletes some of them before they
  could be read.
- ``activation-age``: one actor with a small state, taking one step per turn, lives to
  10,000 turns (1,000 with ``--quick``); its journal file is copied at 10, 100, 1,000 and
  10,000 finished turns. Then, going round the copies `ROUNDS` times, a fresh runtime on a
  fresh copy is opened (not timed) and its first call of a handler that takes no step is
  timed: the send, the activation (claim, checkpoint, inbox; no finished turn is ever
  replayed) and one tiny turn. Reported: the median per copy, and its ratio to the
  10-turn copy's, measured in the same run (1.0: flat).

The figures are refused unless the work was right: every turn returned the right count,
the restored state has every message, the step ran once per live turn and never on
activation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

import actorflow
from benchmarks._hosting import check, copy_database, hosted
from benchmarks._report import Column, Progress, Result, Section, fraction, whole
from journal import Durability, SqliteStore

#: Messages in the conversation: (full run, --quick run), and their size in bytes.
MESSAGES = (500, 200)
MESSAGE_BYTES = 2000
#: The turns of the conversation reported (those within its length).
REPORTED = (10, 100, 200, 500)
#: The ages (finished turns) at which activation is timed: (full run, --quick run).
AGES = ((10, 100, 1_000, 10_000), (10, 100, 1_000))
#: Timed activations per age, of which the median is reported: (full, --quick).
ROUNDS = (7, 3)
DURABILITY: Durability = "normal"
KEY = "k"


# -- the conversation -----------------------------------------------------------------------


class Message(msgspec.Struct):
    """One message of a conversation."""

    role: str
    text: str


class Conversation(msgspec.Struct):
    """An agent's state: its conversation, growing by one message a turn."""

    title: str = ""
    messages: list[Message] = []


class Talker(actorflow.Actor, state=Conversation):
    """An agent whose every turn appends the message it was sent."""

    state: Conversation

    @actorflow.handler
    async def say(self, text: str) -> int:
        """Append ``text``; return how many messages the conversation holds."""
        self.state.messages.append(Message("user", text))
        return len(self.state.messages)

    @actorflow.handler
    async def count(self) -> int:
        """How many messages the conversation holds (no step)."""
        return len(self.state.messages)


def message(n: int) -> str:
    """Message ``n``: `MESSAGE_BYTES` characters, different from every other message."""
    seed = f"message {n}: "
    return (seed + "lorem ipsum dolor sit amet " * (MESSAGE_BYTES // 27 + 1))[:MESSAGE_BYTES]


@dataclasses.dataclass(frozen=True)
class TurnBytes:
    """What one turn's checkpoint wrote, and the whole state after it."""

    parts: int
    checkpoint: int
    whole: int

    @property
    def written(self) -> int:
        """What the checkpoint cost: its parts and itself."""
        return self.parts + self.checkpoint


async def turn_bytes(
    store: SqliteStore, actor_id: str, after: int, state: Conversation
) -> tuple[TurnBytes, int]:
    """What the checkpoint committed after global position ``after`` holds, and the last
    global position read."""
    parts = 0
    last = after
    async for record in store.read_all(after + 1):
        if record.stream == f"state/{actor_id}":
            parts += len(record.data)
        last = record.global_position
    snapshot = await store.load_snapshot(f"actor/{actor_id}")
    checkpoint = len(snapshot.data) if snapshot is not None else 0
    return TurnBytes(parts, checkpoint, len(msgspec.msgpack.encode(state))), last


async def settle(handle: actorflow.ActorHandle[Any]) -> None:
    """Return once the actor idles (its turn's end, checkpoint included, committed)."""
    while (await handle.status()).state != "idle":  # noqa: ASYNC110
        await asyncio.sleep(0.001)


async def conversation(folder: Path, messages: int, progress: Progress) -> list[TurnBytes]:
    """Live the conversation; what each turn wrote."""
    doing = f"growing a conversation to {messages} messages"
    state = Conversation()
    per_turn: list[TurnBytes] = []
    async with hosted(
        folder / "talk.db", doing, [Talker], durability=DURABILITY, ran=lambda: len(per_turn)
    ) as (runtime, store):
        handle = runtime.ref(Talker, KEY)
        last = 0
        for n in range(messages):
            if n % 50 == 0:
                progress.step(f"turn {n + 1:,} of {messages:,}")
            got = await handle.call(Talker.say, message(n))
            check(got == n + 1, doing, f"turn {n + 1} counted {got} messages")
            await settle(handle)
            state.messages.append(Message("user", message(n)))
            written, last = await turn_bytes(store, handle.id, last, state)
            per_turn.append(written)
    async with hosted(
        folder / "talk.db", doing, [Talker], durability=DURABILITY, ran=lambda: 0
    ) as (runtime, _):
        got = await runtime.ref(Talker, KEY).call(Talker.count)
        check(got == messages, doing, f"the restored conversation has {got} messages")
    return per_turn


def bytes_results(per_turn: list[TurnBytes]) -> list[Result]:
    """One row per reported turn."""
    results: list[Result] = []
    for turn in (t for t in REPORTED if t <= len(per_turn)):
        this = per_turn[turn - 1]
        mean = statistics.fmean(t.written for t in per_turn[max(0, turn - 10) : turn])
        results.append(
            {
                "scenario": "checkpoint-bytes",
                "measure": f"turn {turn}",
                "turn": turn,
                "parts": this.parts,
                "checkpoint": this.checkpoint,
                "written": this.written,
                "mean_10": round(mean, 1),
                "whole": this.whole,
                "vs_whole": round(this.written / this.whole, 4),
                "message_bytes": MESSAGE_BYTES,
            }
        )
    first = results[0]["written"]
    for result in results:
        result["flatness"] = round(result["written"] / first, 4)
    largest = max(range(len(per_turn)), key=lambda n: per_turn[n].written)
    results[-1]["mean_all"] = round(statistics.fmean(t.written for t in per_turn), 1)
    results[-1]["max_all"] = per_turn[largest].written
    results[-1]["max_turn"] = largest + 1
    return results


# -- activation by age ----------------------------------------------------------------------


@dataclasses.dataclass
class Calls:
    """How many times the step function ran (on the loop: a plain count is exact)."""

    count: int = 0


CALLS = Calls()


async def tick(turn: int) -> int:
    """The turn's one step: returns the turn number."""
    CALLS.count += 1
    return turn


class Counter(msgspec.Struct):
    """A small state: the turns lived and the last step's result."""

    turns: int = 0
    last: int = 0


class Ager(actorflow.Actor, state=Counter):
    """An actor that takes a step per turn and counts its turns."""

    state: Counter

    @actorflow.handler
    async def live(self, turn: int) -> int:
        """One turn: a step, a count."""
        self.state.last = await self.ctx.run(tick, turn)
        self.state.turns += 1
        return self.state.turns

    @actorflow.handler
    async def age(self) -> int:
        """The turns lived (no step)."""
        return self.state.turns


async def grow_old(folder: Path, ages: Sequence[int], progress: Progress) -> dict[int, Path]:
    """Live to the oldest age, copying the journal at each; the copies by age."""
    doing = f"living {ages[-1]:,} turns"
    copies: dict[int, Path] = {}
    CALLS.count = 0
    path = folder / "ager.db"
    async with hosted(path, doing, [Ager], durability=DURABILITY, ran=lambda: CALLS.count) as (
        runtime,
        _,
    ):
        handle = runtime.ref(Ager, KEY)
        for turn in range(1, ages[-1] + 1):
            got = await handle.call(Ager.live, turn)
            check(got == turn, doing, f"turn {turn} counted {got}")
            if turn in ages:
                progress.step(f"copying the journal at {turn:,} turns")
                await settle(handle)
                copies[turn] = folder / f"age-{turn}.db"
                copy_database(path, copies[turn])
    check(CALLS.count == ages[-1], doing, f"the step ran {CALLS.count:,} times")
    return copies


async def activation(source: Path, scratch: Path, age: int) -> float:
    """Seconds of a fresh runtime's first call to the actor, on a fresh copy of ``source``."""
    doing = f"activating an actor of {age:,} turns"
    copy_database(source, scratch)
    calls = CALLS.count
    try:
        async with hosted(
            scratch, doing, [Ager], durability=DURABILITY, ran=lambda: CALLS.count
        ) as (runtime, _):
            start = time.perf_counter()
            got = await runtime.ref(Ager, KEY).call(Ager.age)
            elapsed = time.perf_counter() - start
    finally:
        for leftover in scratch.parent.glob(f"{scratch.name}*"):
            leftover.unlink()
    check(got == age, doing, f"the restored state counts {got:,} turns")
    check(CALLS.count == calls, doing, f"activation ran the step {CALLS.count - calls} times")
    return elapsed


async def activation_results(folder: Path, quick: bool, progress: Progress) -> list[Result]:
    """One row per age: median activation ms, and its ratio to the youngest's."""
    ages = AGES[quick]
    copies = await grow_old(folder, ages, progress)
    timed: dict[int, list[float]] = {age: [] for age in ages}
    for n in range(1, ROUNDS[quick] + 1):
        for age in ages:
            progress.step(f"activation {n}/{ROUNDS[quick]} at {age:,} turns")
            timed[age].append(await activation(copies[age], folder / "scratch.db", age))
    youngest = statistics.median(timed[ages[0]])
    return [
        {
            "scenario": "activation-age",
            "measure": f"{age} turns",
            "turn": age,
            "activation_ms": round(statistics.median(runs) * 1000, 3),
            "flatness": round(statistics.median(runs) / youngest, 4),
            "activations": len(runs),
        }
        for age, runs in timed.items()
    ]


# -- the scenarios ----------------------------------------------------------------------------


async def checkpoint_scenarios(quick: bool, progress: Progress) -> list[Result]:
    """Both scenarios' results."""
    with tempfile.TemporaryDirectory(prefix="actorflow-bench-") as tmp:
        progress.scenario(f"checkpoint-bytes, a conversation of {MESSAGES[quick]} messages")
        per_turn = await conversation(Path(tmp), MESSAGES[quick], progress)
        progress.scenario(f"activation-age, 1 actor to {AGES[quick][-1]:,} turns")
        ages = await activation_results(Path(tmp), quick, progress)
    for result in ages:
        result["durability"] = DURABILITY
    return [*bytes_results(per_turn), *ages]


BYTES_COLUMNS: Sequence[Column] = [
    Column("at turn", "turn", whole),
    Column("parts", "parts", whole),
    Column("checkpoint", "checkpoint", whole),
    Column("written", "written", whole),
    Column("whole state", "whole", whole),
    Column("vs whole", "vs_whole", lambda value: f"{value:.4f}"),
    Column("flatness", "flatness", fraction),
    Column("10-turn mean", "mean_10", whole),
]

AGE_COLUMNS: Sequence[Column] = [
    Column("finished turns", "turn", whole),
    Column("activation ms", "activation_ms", lambda value: f"{value:,.2f}"),
    Column("vs 10 turns", "flatness", fraction),
]


def sections(results: list[Result], quick: bool) -> list[Section]:
    """The two scenarios' tables."""
    written = [r for r in results if r["scenario"] == "checkpoint-bytes"]
    aged = [r for r in results if r["scenario"] == "activation-age"]
    last = written[-1]
    return [
        Section(
            title=f"checkpoint-bytes: a conversation growing to {MESSAGES[quick]} messages of "
            f"{MESSAGE_BYTES:,} bytes, one a turn (SqliteStore durability={DURABILITY})",
            columns=BYTES_COLUMNS,
            results=written,
            notes=[
                "written = the state's parts written by that turn + its checkpoint; whole "
                "state = what a checkpoint holding the state whole writes",
                "vs whole = written / whole state; flatness = written / the first row's "
                "(1.0 is flat); 10-turn mean: of written, over the 10 turns up to that one",
                f"over every turn: mean {last['mean_all']:,.0f} bytes written, largest "
                f"{last['max_all']:,} (turn {last['max_turn']})",
            ],
        ),
        Section(
            title=f"activation-age: a fresh runtime's first call to an actor with "
            f"{', '.join(f'{age:,}' for age in AGES[quick])} finished turns",
            columns=AGE_COLUMNS,
            results=aged,
            notes=[
                f"median of {ROUNDS[quick]} on fresh copies of the journal, going round the "
                f"ages; vs 10 turns: the ratio to the 10-turn figure in this run (1.0: flat)",
            ],
        ),
    ]
