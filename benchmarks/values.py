"""``python -m benchmarks values``: an agent conversation's journal, with large values stored
once (`Runtime(value_threshold=...)`) and without, side by side.

The scenario (issue 13): one agent actor, T turns (500; ``--quick``: 40). The conversation
lives in the actor's state, a list of messages, as an agent keeps it:

- turn 1 first loads a 20 KB system prompt (a step: it comes from configuration) into the
  history;
- every turn appends the user's prompt (its argument, about 200 bytes), then, every 10th
  turn, calls a tool (a step) that returns the same document (1 MB; ``--quick``: 100 KB)
  and appends it, then calls the LLM (a step) with the whole history and appends the
  new message it returns (about 2 KB, different every turn). The turn returns the reply's
  length: a client reads the conversation through a query, not through the turn's result
  (which the journal keeps for as long as the invocation's outcome).

The actor checkpoints at every turn's end (its state in parts: see docs/actors.md) and
compacts every W turns (``snapshot_every``: 100, the default; ``--quick``: 10). The run
is on a fresh SQLite file, ``durability="normal"``.

Figures, for each setup (values on at the default threshold; off):

- ``content B``: the distinct new content of the conversation, the sum of the encoded
  bytes of each distinct message (the system prompt, the document once, every prompt and
  every reply): what a journal that stored everything once would hold at least.
- ``held B``: the bytes the store holds at the end (record and checkpoint payloads, and
  values), and ``x content`` = held / content (the issue's target: at most 1.2 with values
  on). The run ends on a compaction (turn T is a multiple of 100), which deletes the
  records its checkpoint covers; ``peak held B``: the most the store held just before a
  compaction (after turns 99, 199, ...: W - 1, 2W - 1, ... with ``--quick``), and its
  ``x content`` against the content at the end. ``file B``: the SQLite file with its WAL
  once closed (free pages included).
- ``written B``: bytes the runtime sent the store over the run (record payloads,
  checkpoints, values' bytes not already stored), counted by a thin wrapper of the store;
  ``per turn``: over T, and per window of W turns (100; ``--quick``: 10) in the second
  table, to show whether per-turn writes stay flat as the conversation grows.
- ``sent B``: what the LLM calls were sent in all (the whole history every turn): what a
  journal of step inputs would hold.

Every figure is refused unless the work was right: each turn's result is its reply's
length, the conversation read back by a query after a restart equals the one the turns
built, and the LLM and tool steps ran exactly once per turn that calls them.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

import actorflow
from benchmarks._report import (
    AtMost,
    Column,
    Progress,
    Result,
    Section,
    SuiteReport,
    fraction,
    loop_name,
    on_uvloop,
    whole,
)
from journal import Appended, NewRecord, SqliteStore, StreamAppend

#: (turns, document bytes, window): full run, --quick.
SIZES = {False: (500, 1_000_000, 100), True: (40, 100_000, 10)}
SYSTEM_BYTES = 20_000
PROMPT_BYTES = 200
REPLY_BYTES = 2_000
TOOL_EVERY = 10
#: The setups compared: large-value storage at the runtime's default threshold, and off.
SETUPS = (("on", None), ("off", 0))

calls = {"llm": 0, "tool": 0, "sent": 0}
shape = {"document": 0}


class Message(msgspec.Struct):
    role: str
    content: str


class Conversation(msgspec.Struct):
    messages: list[Message] = []


def text(kind: str, number: int, size: int) -> str:
    """``size`` characters unique to ``kind`` and ``number`` (hex, so not compressible
    into nothing, and the same in every run)."""
    seed = hashlib.sha256(f"{kind}-{number}".encode()).hexdigest()
    return (f"{kind} {number}: " + seed * (size // len(seed) + 1))[:size]


async def system_prompt() -> Message:
    return Message("system", text("system", 0, SYSTEM_BYTES))


async def fetch_document() -> Message:
    calls["tool"] += 1
    return Message("tool", text("document", 0, shape["document"]))


async def llm(number: int, history: list[Message]) -> Message:
    """The model: sent the whole history, it answers a new message of about 2 KB."""
    calls["llm"] += 1
    calls["sent"] += sum(len(message.content) for message in history)
    return Message("assistant", text("reply", number, REPLY_BYTES))


def prompt(number: int) -> str:
    return text("prompt", number, PROMPT_BYTES)


class Agent(actorflow.Actor, state=Conversation):
    @actorflow.handler
    async def turn(self, number: int, prompt: str) -> int:
        if not self.state.messages:
            self.state.messages.append(await self.ctx.run(system_prompt))
        self.state.messages.append(Message("user", prompt))
        if number % TOOL_EVERY == 0:
            self.state.messages.append(await self.ctx.run(fetch_document))
        reply = await self.ctx.run(llm, number, self.state.messages)
        self.state.messages.append(reply)
        return len(reply.content)

    @actorflow.query
    def digest(self) -> list[Any]:
        """How many messages, and a hash of their encoding."""
        data = msgspec.msgpack.encode(self.state.messages)
        return [len(self.state.messages), hashlib.sha256(data).hexdigest()]


def expected(turns: int) -> list[Message]:
    """The conversation the turns build."""
    messages = [Message("system", text("system", 0, SYSTEM_BYTES))]
    for number in range(1, turns + 1):
        messages.append(Message("user", prompt(number)))
        if number % TOOL_EVERY == 0:
            messages.append(Message("tool", text("document", 0, shape["document"])))
        messages.append(Message("assistant", text("reply", number, REPLY_BYTES)))
    return messages


def content_bytes(messages: Sequence[Message]) -> int:
    """The encoded bytes of the distinct messages."""
    distinct = {msgspec.msgpack.encode(message) for message in messages}
    return sum(map(len, distinct))


class Counting:
    """The store, counting the bytes each append and snapshot sends it."""

    def __init__(self, store: SqliteStore) -> None:
        self.inner = store
        self.written = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _count(self, append: StreamAppend) -> None:
        self.written += sum(len(record.data) for record in append.records)
        self.written += len(append.snapshot or b"")
        self.written += sum(map(len, append.values.values()))

    async def append_many(self, appends: Sequence[StreamAppend]) -> list[Appended]:
        for append in appends:
            self._count(append)
        return await self.inner.append_many(appends)

    async def append(self, stream: str, records: Sequence[NewRecord], **options: Any) -> Appended:
        self._count(StreamAppend(stream, tuple(records)))
        return await self.inner.append(stream, records, **options)

    async def save_snapshot(
        self,
        stream: str,
        position: int,
        data: bytes,
        *,
        values: Mapping[str, bytes] | None = None,
        **options: Any,
    ) -> None:
        self.written += len(data) + sum(map(len, (values or {}).values()))
        await self.inner.save_snapshot(stream, position, data, values=values, **options)


def held_bytes(path: Path) -> int:
    """Payload bytes the journal file holds: records, checkpoints and values."""
    with sqlite3.connect(path) as conn:
        total = 0
        for table in ("records", "snapshots", "stored_values"):
            (size,) = conn.execute(f"SELECT coalesce(sum(length(data)), 0) FROM {table}").fetchone()
            total += size
        return int(total)


def file_bytes(directory: Path, setup: str) -> int:
    """The journal file of ``setup`` with its WAL, in bytes."""
    return sum(path.stat().st_size for path in directory.glob(f"{setup}.db*"))


async def conversation(
    directory: Path, setup: str, threshold: int | None, quick: bool, progress: Progress
) -> tuple[Result, list[Result]]:
    turns, document, window = SIZES[quick]
    shape["document"] = document
    calls.update(llm=0, tool=0, sent=0)
    path = directory / f"{setup}.db"
    options: dict[str, Any] = {"snapshot_every": window}
    if threshold is not None:
        options["value_threshold"] = threshold
    store = await SqliteStore.open(path, durability="normal")
    counting = Counting(store)
    windows: list[Result] = []
    before = 0
    try:
        async with actorflow.Runtime(counting, [Agent], **options) as runtime:  # type: ignore[arg-type]
            agent = runtime.ref(Agent, "chat")
            mark = 0
            for number in range(1, turns + 1):
                length = await agent.call(Agent.turn, number, prompt(number))
                if length != REPLY_BYTES:
                    raise AssertionError(f"turn {number} answered {length}")
                if number % window == window - 1:  # the turn before a compaction (at most)
                    before = held_bytes(path)
                if number % window == 0:
                    windows.append(
                        {
                            "scenario": "window",
                            "setup": setup,
                            "turns": f"{number - window + 1}-{number}",
                            "written_per_turn": (counting.written - mark) / window,
                            "held_before": before,
                        }
                    )
                    mark = counting.written
                    progress.step(f"{setup}: turn {number}")
    finally:
        await store.close()
    if calls["llm"] != turns or calls["tool"] != turns // TOOL_EVERY:
        raise AssertionError(f"steps ran {calls}, not once each")
    sent = calls["sent"]
    messages = expected(turns)
    want = [len(messages), hashlib.sha256(msgspec.msgpack.encode(messages)).hexdigest()]
    store = await SqliteStore.open(path, durability="normal")
    try:
        async with actorflow.Runtime(store, [Agent], **options) as runtime:
            got = await runtime.ref(Agent, "chat").query(Agent.digest)
        report = await store.verify()
    finally:
        await store.close()
    if got != want or not report.ok:
        raise AssertionError(f"the conversation read back differs ({got} != {want}) or {report}")
    content = content_bytes(messages)
    held = held_bytes(path)
    file = file_bytes(directory, setup)
    result = {
        "scenario": "conversation",
        "setup": setup,
        "turns": turns,
        "content": content,
        "held": held,
        "vs_content": held / content,
        "peak": max(w["held_before"] for w in windows),
        "peak_vs_content": max(w["held_before"] for w in windows) / content,
        "file": file,
        "file_vs_content": file / content,
        "written": counting.written,
        "written_per_turn": counting.written / turns,
        "values": report.values,
        "sent": sent,
    }
    return result, windows


async def measure(quick: bool) -> tuple[list[Result], list[Result]]:
    progress = Progress("values", len(SETUPS))
    results: list[Result] = []
    windows: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="actorflow-values-") as directory:
        for setup, threshold in SETUPS:
            progress.scenario(f"conversation, values {setup}")
            result, steps = await conversation(Path(directory), setup, threshold, quick, progress)
            results.append(result)
            windows += steps
    progress.finish()
    return results, windows


COLUMNS = (
    Column("values", "setup", numeric=False),
    Column("turns", "turns", whole),
    Column("content B", "content", whole),
    Column("held B", "held", whole),
    Column("x content", "vs_content", fraction),
    Column("peak held B", "peak", whole),
    Column("x content", "peak_vs_content", fraction),
    Column("file B", "file", whole),
    Column("written B", "written", whole),
    Column("per turn", "written_per_turn", whole),
    Column("values", "values", whole),
    Column("sent B", "sent", whole),
)
WINDOW_COLUMNS = (
    Column("values", "setup", numeric=False),
    Column("turns", "turns", numeric=False),
    Column("written B per turn", "written_per_turn", whole),
    Column("held B before compaction", "held_before", whole),
)


def run(*, quick: bool, repeats: int) -> SuiteReport:
    """Run the values suite (its figures are byte counts: ``repeats`` does not apply)."""
    results, windows = on_uvloop(measure(quick))
    on = next(r for r in results if r["setup"] == "on")
    on_windows = [w["written_per_turn"] for w in windows if w["setup"] == "on"]
    turns, document, window = SIZES[quick]
    return SuiteReport(
        suite="values",
        quick=quick,
        title=f"values: a {turns}-turn agent conversation's journal, large values stored once "
        "(on) and not (off)",
        notes=[
            f"a {SYSTEM_BYTES:,} B system prompt, {PROMPT_BYTES} B prompts, {REPLY_BYTES:,} B "
            f"replies, a {document:,} B document every {TOOL_EVERY} turns; the history in "
            "the actor's state, sent whole to every LLM call",
            "content B = the distinct messages' encoded bytes; held B = payload bytes the "
            "store holds at the end (records, checkpoints, values), peak held B = the most "
            "it held just before a compaction; file B = the SQLite file with its WAL",
            "written B = bytes sent to the store over the run (per turn: over the turns); "
            "sent B = what the LLM calls were sent in all",
            f"{loop_name()}; SQLite {sqlite3.sqlite_version}; durability normal; "
            f"{os.cpu_count()} CPUs",
        ],
        columns=COLUMNS,
        results=results,
        sections=[
            Section(
                f"bytes written per turn, per window of {window} turns",
                WINDOW_COLUMNS,
                windows,
            )
        ],
        targets=[
            AtMost("held bytes over distinct content (values on)", on["vs_content"], 1.2, fraction),
            AtMost(
                "last window's bytes per turn over the first's (values on)",
                on_windows[-1] / on_windows[0],
                1.5,
                fraction,
            ),
        ],
        environment={"loop": loop_name()},
    )
