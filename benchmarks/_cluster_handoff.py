"""The cluster suite's moves: how long an agent waits for another worker when its own is
stopped (``hand-off``, SIGTERM) or dies (``take-over``, SIGKILL).

One run: a fresh database, two workers A and B (lease TTL `LEASE_TTL`), and `AGENTS` agents
each running one long turn of `Walker.stroll` steps that pause `PAUSE` seconds each (an
agent waiting on a model or a tool), so that every agent is mid-turn whenever A is
stopped. Each worker logs every step it runs (key, step index, its pid, the time; see
`benchmarks.cluster_app`). Once every agent has run a few steps, each worker holds the
agents whose latest step it ran; A is the worker holding more of them (the JSON's
``spread`` says how many each held), and gets the signal, at wall-clock time ``t0``.

For each of A's agents, its *next step* is the first step another worker ran after
``t0`` (from the step logs), and the figure is the time from ``t0`` until that step's
record was committed in the journal: PostgreSQL's own commit timestamp of the row
(``track_commit_timestamp``, the server's clock, which is this machine's), found as the
agent's step record of that index (one ``step`` record per step, in order). So it counts
everything an agent waits: A finishing the step under way (for SIGTERM), A releasing
the lease, or its expiry (for SIGKILL), B hearing of it, claiming the lease, replaying the
turn so far, running the step and committing it.

After SIGTERM, A must exit 0; after either signal, B must still be running, and then exit
0 on SIGTERM with every agent checkpointed mid-turn. Every wait is bounded.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._cluster_workers import (
    Worker,
    WorkerOptions,
    agent_key,
    connected,
    send_all,
    signal_and_wait,
    stop_all,
    wait_until,
    walker_path,
    workers,
)
from benchmarks._postgres import PostgresServer
from benchmarks._report import Progress, Result, middle
from benchmarks.cluster_app import STEP_LOG

#: The lease TTL of every worker in the suite (short, so that a take-over is quick).
LEASE_TTL = 2.0
#: Agents mid-turn across the two workers: (full run, --quick run).
AGENTS = (200, 40)
#: Seconds each step pauses.
PAUSE = 0.1
#: Steps in each agent's turn: far more than a run lasts.
STEPS = 100_000
#: Steps every agent must have run before the signal.
WARM_STEPS = 3
#: Seconds to wait for the agents to be running, and for them all to have moved.
SETTLE_LIMIT = 60.0
MOVE_LIMIT = LEASE_TTL + 30.0

NEXT_STEP_COMMITTED = """
SELECT extract(epoch FROM pg_xact_commit_timestamp(r.xmin))::float8
FROM journal_records r
WHERE r.stream_id = (SELECT id FROM journal_streams WHERE name = $1) AND r.type = 'step'
ORDER BY r.position OFFSET $2 LIMIT 1
"""


@dataclasses.dataclass(frozen=True)
class Line:
    """One step a worker ran, from its step log."""

    key: str
    index: int
    pid: int
    at: float


def read_logs(folder: Path) -> list[Line]:
    """Every complete line of every step log in ``folder``."""
    lines = []
    for path in folder.glob("steps-*.log"):
        for text in path.read_text(encoding="ascii").splitlines(keepends=True):
            if text.endswith("\n"):
                key, index, pid, at = text.split()
                lines.append(Line(key, int(index), int(pid), float(at)))
    return lines


def holders(lines: Sequence[Line]) -> dict[str, int]:
    """The pid that ran each agent's latest step."""
    latest: dict[str, Line] = {}
    for line in lines:
        if line.key not in latest or line.index >= latest[line.key].index:
            latest[line.key] = line
    return {key: line.pid for key, line in latest.items()}


def first_elsewhere(lines: Sequence[Line], keys: set[str], pid: int, t0: float) -> dict[str, Line]:
    """For each of ``keys``, the first step a process other than ``pid`` ran after
    ``t0``."""
    found: dict[str, Line] = {}
    for line in sorted(lines, key=lambda line: line.at):
        if line.key in keys and line.pid != pid and line.at > t0 and line.key not in found:
            found[line.key] = line
    return found


@dataclasses.dataclass(frozen=True)
class MoveRun:
    """One run: each moved agent's wait, and how the stopped worker went."""

    #: Seconds from the signal to the commit of each moved agent's next step.
    waits: list[float]
    #: Seconds from the signal to the other worker starting that step.
    started: list[float]
    #: Seconds from the signal to the stopped worker's exit.
    exited: float
    moved: int
    #: How many agents each worker held at the signal, fewest first (from the step logs).
    spread: list[int]


async def move_run(
    server: PostgresServer, signum: int, agents: int, progress: Progress, label: str
) -> MoveRun:
    """Stop worker A with ``signum`` while it holds agents mid-turn; time each one's move."""
    dsn = server.database()
    try:
        with tempfile.TemporaryDirectory(prefix="actorflow-bench-") as tmp:
            folder = Path(tmp)
            logs = folder / "steps"
            logs.mkdir()
            options = WorkerOptions(dsn, 1000, LEASE_TTL, {STEP_LOG: str(logs)})
            with workers(options, 2, folder) as running:
                return await moved(dsn, running, logs, signum, agents, progress, label)
    finally:
        server.drop(dsn)


async def moved(
    dsn: str,
    running: list[Worker],
    logs: Path,
    signum: int,
    agents: int,
    progress: Progress,
    label: str,
) -> MoveRun:
    """`move_run` once the workers are up."""
    a, b = running
    keys = [agent_key(i) for i in range(agents)]
    body = b'{"steps":%d,"pause":%r}' % (STEPS, PAUSE)
    progress.step(f"{label}: starting {agents} agents")
    await send_all([w.port for w in running], [(walker_path(k, "stroll"), body) for k in keys])

    async def warm() -> bool:
        latest = holders([line for line in read_logs(logs) if line.index >= WARM_STEPS - 1])
        return len(latest) == agents

    await wait_until("every agent running its turn", warm, SETTLE_LIMIT, running)
    at_signal = holders(read_logs(logs))
    counts = {w.proc.pid: list(at_signal.values()).count(w.proc.pid) for w in running}
    if counts[b.proc.pid] > counts[a.proc.pid]:
        a, b = b, a  # stop the worker holding more agents: more moves are measured
    spread = sorted(counts.values())
    held = {key for key, pid in at_signal.items() if pid == a.proc.pid}
    if not held:
        raise a.fail(f"it holds none of the {agents} agents: nothing to move")
    progress.step(f"{label}: signal {signal.Signals(signum).name} to a worker of {len(held)}")
    t0, code = signal_and_wait(a, signum)
    exited = time.time() - t0
    if signum == signal.SIGTERM and code != 0:
        raise a.fail(f"it exited with code {code} after SIGTERM, expected 0")

    async def all_moved() -> bool:
        return len(first_elsewhere(read_logs(logs), held, a.proc.pid, t0)) == len(held)

    await wait_until(f"{len(held)} agents moving to the other worker", all_moved, MOVE_LIMIT, [b])
    firsts = first_elsewhere(read_logs(logs), held, a.proc.pid, t0)
    async with connected(dsn) as conn:
        waits = [await committed(conn, key, line.index, b) - t0 for key, line in firsts.items()]
    progress.step(f"{label}: stopping the other worker")
    stop_all([b])
    return MoveRun(waits, [line.at - t0 for line in firsts.values()], exited, len(held), spread)


async def committed(conn: Any, key: str, index: int, worker: Worker) -> float:
    """When the agent ``key``'s step ``index`` was committed (unix seconds, the server's
    clock), waiting for it for up to 10 seconds."""
    when: list[float | None] = [None]

    async def journaled() -> bool:
        when[0] = await conn.fetchval(NEXT_STEP_COMMITTED, f"actor/Walker/{key}", index)
        return when[0] is not None

    await wait_until(f"{key}'s step {index} being journaled", journaled, 10.0, [worker])
    assert when[0] is not None
    return when[0]


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``share`` of the values
    at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


async def move_scenario(
    server: PostgresServer, signum: int, agents: int, repeats: int, progress: Progress
) -> Result:
    """p50 and p99 of every moved agent's wait, over ``repeats`` runs."""
    name = "hand-off" if signum == signal.SIGTERM else "take-over"
    how = "SIGTERM" if signum == signal.SIGTERM else "SIGKILL"
    progress.scenario(f"{name}: {how} to one of 2 workers, {agents} agents mid-turn")
    runs = [
        await move_run(server, signum, agents, progress, f"run {n}/{repeats}")
        for n in range(1, repeats + 1)
    ]
    waits = [wait for run in runs for wait in run.waits]
    started = [s for run in runs for s in run.started]
    return {
        "scenario": name,
        "signal": how,
        "workers": 2,
        "actors": agents,
        "moved": sum(run.moved for run in runs),
        "spread": [run.spread for run in runs],
        "p50_s": round(percentile(waits, 0.50), 4),
        "p99_s": round(percentile(waits, 0.99), 4),
        "max_s": round(max(waits), 4),
        "started_p50_s": round(percentile(started, 0.50), 4),
        "exit_s": round(middle([run.exited for run in runs]), 4),
        "lease_ttl_s": LEASE_TTL,
        "pause_s": PAUSE,
        "offered_steps_per_s": round(agents / PAUSE),
        "repeats": repeats,
    }
