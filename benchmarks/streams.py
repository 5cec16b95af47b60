"""``python -m benchmarks streams``: what a streamed chunk (`ctx.stream`) costs, against a
durable step measured in the same run.

- ``steps`` (the baseline): one actor, one invocation of S sequential ``ctx.run`` steps of
  an ``async def`` returning a small int, in ``full`` durability on a fresh SQLite file.
  Figure: steps / wall seconds from the send to the result. Each step is a group commit
  awaited by the handler: the unit a chunk must cost far less than.
- ``stream``: 1 and 10 actors at once, each one invocation of a single ``ctx.stream`` step
  whose async generator yields C four-character tokens, handing the loop over after each
  (``await asyncio.sleep(0)``, as a network read would). Figure: chunks / wall seconds
  from the send to the result, per stream (``chunks/s per stream``) and in all; ``x
  steps``: chunks/s per stream over the baseline's steps/s.
- Journal bytes, for both: the payload bytes of the records written (``payload B``, per
  step or chunk), and the marginal growth of the SQLite file with its WAL (``file B``):
  the file after a run of N steps (chunks) less the file after a run of N/10, over the
  0.9 N between. A step's figure counts its record in the actor's journal; a chunk's
  counts its chunk stream (``streams/...``), the batches its chunks share.

Every figure is refused unless the work was right: each result equals its chunks joined
(or the steps' count), every chunk reached the chunk stream once, in order (read back
through the journal), and each step ran exactly once.

Runs under uvloop; the middle of the repeats is reported. ``--quick``: fewer steps and
chunks, one run: a smoke test bounded to seconds, not a measurement.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

import actorflow
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
    whole,
)
from journal import SqliteStore

#: (steps, chunks per stream): full run, --quick.
SIZES = {False: (2_000, 50_000), True: (200, 2_000)}
STREAMS = (1, 10)
calls = {"step": 0}


async def noop(index: int) -> int:
    """A step that does nothing but return."""
    calls["step"] += 1
    return index


async def tokens(count: int) -> AsyncIterator[str]:
    """``count`` four-character tokens, the loop handed over after each."""
    for index in range(count):
        yield f"t{index % 1000:03d}"
        await asyncio.sleep(0)


class Worker(actorflow.Actor):
    @actorflow.handler
    async def steps(self, count: int) -> int:
        for index in range(count):
            await self.ctx.run(noop, index)
        return count

    @actorflow.handler
    async def stream(self, count: int) -> str:
        text: str = await self.ctx.stream(tokens, count)
        return text


def file_bytes(path: Path) -> int:
    """The SQLite file and its WAL, as they stand."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


async def payload(store: Any, prefix: str) -> tuple[int, int, list[Any]]:
    """Records, payload bytes, and the chunks, of the streams starting with ``prefix``."""
    records = size = 0
    chunks: list[Any] = []
    items = msgspec.msgpack.Decoder()
    for stream in await store.list_streams(prefix):
        async for record in store.read(stream):
            records += 1
            size += len(record.data)
            if prefix == "streams/":
                for item in items.decode(record.data):
                    if item[0] == "c":  # a batch of chunks: [tag, attempt, first, chunks]
                        chunks += item[3]
    return records, size, chunks


async def one_run(folder: Path, name: str, actors: int, count: int, what: str) -> Result:
    """One fresh journal, ``actors`` invocations of ``what`` with ``count`` each."""
    path = folder / f"{name}.db"
    calls["step"] = 0
    async with await SqliteStore.open(path) as store:
        async with actorflow.Runtime(store, [Worker]) as runtime:
            refs = [runtime.ref(Worker, f"w{index}") for index in range(actors)]
            method = Worker.steps if what == "steps" else Worker.stream
            started = time.perf_counter()
            results = await asyncio.gather(*(ref.call(method, count) for ref in refs))
            elapsed = time.perf_counter() - started
        prefix = "actor/" if what == "steps" else "streams/"
        records, size, chunks = await payload(store, prefix)
    expected_chunks = [f"t{index % 1000:03d}" for index in range(count)]
    if what == "steps":
        if results != [count] * actors or calls["step"] != count * actors:
            raise AssertionError(f"steps went wrong: {results[:3]}, {calls['step']} calls")
    elif results != ["".join(expected_chunks)] * actors or chunks != expected_chunks * actors:
        raise AssertionError("a stream's result or its stored chunks are not what it yielded")
    return {"seconds": elapsed, "records": records, "payload": size, "file": file_bytes(path)}


async def measure(quick: bool, repeats: int) -> list[Result]:
    steps, chunks = SIZES[quick]
    progress = Progress("streams", 1 + len(STREAMS))
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        progress.scenario(f"steps: 1 actor, {steps:,} steps")
        runs = []
        for run in range(repeats):
            progress.step(f"run {run + 1} of {repeats}")
            runs.append(await one_run(folder, f"steps{run}", 1, steps, "steps"))
        small = await one_run(folder, "steps-small", 1, steps // 10, "steps")
        step_s = middle([r["seconds"] for r in runs])
        step_rate = steps / step_s
        last = runs[-1]
        results.append(
            {
                "scenario": "steps",
                "actors": 1,
                "count": steps,
                "per_s": round(step_rate, 1),
                "payload_per": round(last["payload"] / steps, 1),
                "file_per": round((last["file"] - small["file"]) / (0.9 * steps), 1),
                "repeats": repeats,
            }
        )
        for actors in STREAMS:
            progress.scenario(f"stream: {actors} at once, {chunks:,} chunks each")
            runs = []
            for run in range(repeats):
                progress.step(f"run {run + 1} of {repeats}")
                runs.append(await one_run(folder, f"s{actors}-{run}", actors, chunks, "stream"))
            small = await one_run(folder, f"s{actors}-small", actors, chunks // 10, "stream")
            elapsed = middle([r["seconds"] for r in runs])
            last = runs[-1]
            total = chunks * actors
            per_stream = chunks / elapsed
            results.append(
                {
                    "scenario": "stream",
                    "actors": actors,
                    "count": chunks,
                    "per_s": round(per_stream, 1),
                    "total_per_s": round(total / elapsed, 1),
                    "vs_steps": round(per_stream / step_rate, 2),
                    "records_per": round(last["records"] / total, 4),
                    "payload_per": round(last["payload"] / total, 1),
                    "file_per": round((last["file"] - small["file"]) / (0.9 * total), 1),
                    "repeats": repeats,
                }
            )
    progress.finish()
    return results


COLUMNS = [
    Column("scenario", "scenario", numeric=False),
    Column("actors", "actors", whole),
    Column("steps/chunks each", "count", whole),
    Column("per s (per stream)", "per_s", whole),
    Column("in all per s", "total_per_s", whole),
    Column("x steps", "vs_steps", fraction),
    Column("records each", "records_per", lambda v: f"{v:.4f}"),
    Column("payload B each", "payload_per", one_decimal),
    Column("file B each", "file_per", one_decimal),
]


def run(*, quick: bool, repeats: int) -> SuiteReport:
    """Run the streams suite."""
    results = on_uvloop(measure(quick, repeats))
    steps = results[0]
    one = next(r for r in results if r["scenario"] == "stream" and r["actors"] == 1)
    plural = "s" if repeats > 1 else ""
    return SuiteReport(
        suite="streams",
        quick=quick,
        title=f"streams: chunks of ctx.stream against durable steps, median of {repeats} "
        f"run{plural}",
        notes=[
            "steps: one actor's sequential ctx.run steps, each awaited durably (full "
            "durability): the baseline, measured in the same run",
            "stream: one ctx.stream step per actor, 4-character tokens, the loop handed over "
            "after each; per s = chunks / wall seconds from send to result, per stream",
            "x steps = a stream's chunks/s over the baseline's steps/s; records each = journal "
            "records per chunk (chunks share batched records)",
            "payload B = record payload bytes per step or chunk; file B = marginal growth of "
            "the SQLite file and WAL per step or chunk (N against N/10)",
            f"{loop_name()}; SQLite {sqlite3.sqlite_version}",
        ],
        columns=COLUMNS,
        results=results,
        targets=[
            Target("chunks/s per stream over steps/s", one["vs_steps"], 10.0, fraction),
            Target(
                "file bytes per step over per chunk",
                round(steps["file_per"] / max(one["file_per"], 0.1), 2),
                5.0,
                fraction,
            ),
        ],
    )
