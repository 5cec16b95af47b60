"""The cluster suite: actorflow workers sharing one PostgreSQL journal, against raw asyncpg.

The suite starts its own PostgreSQL server (`benchmarks._postgres`: ``initdb`` in a
temporary directory, a unix socket, as user ``nobody`` when run as root) with PostgreSQL's
durable defaults (``fsync`` and ``synchronous_commit`` on: every commit waits for its WAL
to be flushed), plus ``pg_stat_statements`` (to count what the journal's transactions
wrote) and ``track_commit_timestamp`` (to time the moves). Every run gets a fresh database.

- ``steps``: `AGENTS` agents (`benchmarks.cluster_app.Walker`), each sent one message whose
  turn takes S trivial durable steps (``ctx.run`` of an ``async def``), over 1, 2 and 4
  workers: ``actorflow serve`` subprocesses on the same database (capacity 1000 each,
  lease TTL `LEASE_TTL`). The messages are posted over loopback HTTP, spread evenly over
  the workers (any worker accepts any message). The clock runs from before the first
  post until the database holds every agent's outcome (polled every 20 ms): accepting
  the messages durably, claiming the leases, activating the agents and journaling their
  turns are all part of the work. Figure: agents x S / wall seconds. Afterwards, not
  timed, every agent's invocation must have completed with the right result (asked of
  the workers over HTTP), and every worker must exit 0 on SIGTERM.
  Ceiling (`benchmarks._cluster_ceiling`), measured in the same run on the same server:
  raw asyncpg committing the same write transactions as the journal did (as many, with as
  many records and stream-row updates each, counted by ``pg_stat_statements``), with the
  journal's statements on the journal's tables, from as many concurrent writers as there
  were workers. ``ratio``: its seconds over the journal's (equivalently, steps/s over the
  ceiling's steps/s).
- ``hand-off`` and ``take-over`` (`benchmarks._cluster_handoff`): two workers, agents
  mid-turn, one worker stopped with SIGTERM (it checkpoints and releases its leases) or
  SIGKILL (its leases expire after the TTL); the seconds until another worker has
  journaled each moved agent's next step, p50 and p99 over every moved agent.

Targets (issue 11, a 2-core machine): 1,000 agents on 2 workers at least 0.4 of the
ceiling; hand-off p99 under 1 s; take-over p99 within the lease TTL plus 1 s. Reported,
not enforced.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from benchmarks import _cluster_handoff as handoff
from benchmarks._cluster_ceiling import Shape, ceiling, enable_statement_counts, shape_now
from benchmarks._cluster_workers import (
    Worker,
    WorkerOptions,
    agent_key,
    connected,
    finished,
    process_cpu,
    results,
    send_all,
    server_cpu,
    stop_all,
    wait_until,
    walker_path,
    workers,
)
from benchmarks._postgres import PostgresServer, started
from benchmarks._report import (
    AtMost,
    Column,
    Progress,
    Result,
    Section,
    SuiteReport,
    Target,
    fraction,
    loop_name,
    middle,
    on_uvloop,
    seconds,
    whole,
)
from benchmarks.cluster_app import expected_total
from journal import PostgresStore

#: Worker counts of the ``steps`` scenario.
WORKERS = (1, 2, 4)
#: Agents in the ``steps`` scenario: (full run, --quick run).
AGENTS = (1_000, 200)
#: Steps in each agent's turn: (full run, --quick run).
STEPS = (50, 3)
#: Each worker's capacity (actors active at once) and lease TTL.
CAPACITY = 1_000
LEASE_TTL = handoff.LEASE_TTL
#: Seconds the agents may take to finish before the run counts as hung.
RUN_LIMIT = 300.0
#: The server's settings: PostgreSQL's durable defaults, plus what the suite reads.
SETTINGS = {
    "max_connections": "300",
    "shared_preload_libraries": "pg_stat_statements",
    "track_commit_timestamp": "on",
}


@dataclasses.dataclass(frozen=True)
class StepsRun:
    """One ``steps`` run: the journal's time and transactions, and the ceiling's time."""

    #: How many leases each worker held once every agent had finished, fewest first.
    spread: list[int]
    #: Seconds until half, 90% and 99% of the agents had finished.
    finished_by: dict[str, float]
    seconds: float
    shape: Shape
    ceiling_seconds: float
    notifies: int
    #: Seconds until every message was accepted (answered 202).
    sent_seconds: float
    #: CPU seconds the workers, and the PostgreSQL server, used during the timed part.
    workers_cpu: float
    server_cpu: float


async def steps_run(
    server: PostgresServer, count: int, agents: int, steps: int, progress: Progress, label: str
) -> StepsRun:
    """``agents`` agents taking ``steps`` steps each over ``count`` workers, then the
    ceiling for the transactions they committed."""
    dsn = server.database()
    try:
        with tempfile.TemporaryDirectory(prefix="actorflow-bench-") as tmp:
            options = WorkerOptions(dsn, CAPACITY, LEASE_TTL)
            progress.step(f"{label}: starting {count} worker{'s' if count > 1 else ''}")
            async with connected(dsn) as conn:
                await enable_statement_counts(conn)
                with workers(options, count, Path(tmp)) as running:
                    keys = [agent_key(i) for i in range(agents)]
                    body = b'{"steps":%d}' % steps
                    before = await shape_now(conn)
                    notifies_before = await notify_calls(conn)
                    progress.step(f"{label}: {agents:,} agents x {steps} steps")
                    cpu = cpu_now(server, running)
                    began = time.perf_counter()
                    await send_all(
                        [w.port for w in running], [(walker_path(k, "walk"), body) for k in keys]
                    )
                    sent = time.perf_counter()

                    curve: list[tuple[float, int]] = []

                    async def done() -> bool:
                        count = await finished(conn, "Walker/")
                        curve.append((time.perf_counter() - began, count))
                        return count >= agents

                    ended = await wait_until("every agent finishing", done, RUN_LIMIT, running)
                    cpu_after = cpu_now(server, running)
                    shape = await shape_now(conn) - before
                    spread = await lease_spread(conn)
                    notifies = await notify_calls(conn) - notifies_before
                    progress.step(f"{label}: checking {agents:,} results")
                    found = await results([w.url for w in running], keys)
                    wrong = {k: v for k, v in found.items() if v != expected_total(steps)}
                    if wrong:
                        raise running[0].fail(
                            f"wrong results (want {expected_total(steps)}): {wrong}"
                        )
                    stop_all(running)
    finally:
        server.drop(dsn)
    progress.step(f"{label}: raw asyncpg ceiling, {count} writer{'s' if count > 1 else ''}")
    raw = server.database()
    try:
        store = await PostgresStore.open(raw)  # the journal's own tables, empty
        await store.close()
        names = [f"actor/Walker/{agent_key(i)}" for i in range(agents)]
        done_raw = await ceiling(raw, shape, count, names)
    finally:
        server.drop(raw)
    return StepsRun(
        spread,
        quantile_times(curve, agents),
        ended - began,
        shape,
        done_raw.seconds,
        notifies,
        sent - began,
        cpu_after[0] - cpu[0],
        cpu_after[1] - cpu[1],
    )


async def lease_spread(conn: asyncpg.Connection) -> list[int]:
    """How many leases each worker holds now, fewest first (released ones not counted)."""
    rows = await conn.fetch(
        "SELECT count(*) FROM journal_leases WHERE owner <> '' GROUP BY owner ORDER BY 1"
    )
    return [int(row[0]) for row in rows]


def quantile_times(curve: Sequence[tuple[float, int]], agents: int) -> dict[str, float]:
    """From (seconds, agents finished) polls: when half, 90% and 99% had finished."""
    return {
        f"p{round(share * 100)}": round(next(t for t, n in curve if n >= share * agents), 3)
        for share in (0.5, 0.9, 0.99)
    }


def cpu_now(server: PostgresServer, running: Sequence[Worker]) -> tuple[float, float]:
    """CPU seconds so far: the workers' together, and the PostgreSQL server's."""
    return sum(process_cpu(w.proc.pid) for w in running), server_cpu(server.data)


async def notify_calls(conn: asyncpg.Connection) -> int:
    """Notices of appends the journal sent so far (``pg_notify`` rows: its wake-ups of the
    workers that own the streams)."""
    notices: int = await conn.fetchval(
        "SELECT coalesce(sum(rows), 0)::bigint FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND query ILIKE '%pg_notify%FROM unnest%'"
    )
    return notices


async def steps_scenario(
    server: PostgresServer, count: int, agents: int, steps: int, repeats: int, progress: Progress
) -> Result:
    """Durable steps/s over ``count`` workers, against the raw ceiling of each run."""
    progress.scenario(f"steps, {agents:,} agents x {steps} steps, {count} workers")
    runs = [
        await steps_run(server, count, agents, steps, progress, f"run {n}/{repeats}")
        for n in range(1, repeats + 1)
    ]
    total = agents * steps
    run = next(r for r in runs if r.seconds == middle([r.seconds for r in runs]))
    ceiling_seconds = middle([r.ceiling_seconds for r in runs])
    shape = run.shape
    return {
        "scenario": "steps",
        "store": "postgres",
        "workers": count,
        "actors": agents,
        "steps": total,
        "per_s": round(total / run.seconds, 1),
        "ceiling_per_s": round(total / ceiling_seconds, 1),
        "ratio": round(ceiling_seconds / run.seconds, 4),
        "seconds": round(run.seconds, 4),
        "ceiling_seconds": round(ceiling_seconds, 4),
        "transactions": shape.transactions,
        "records": shape.records,
        "stream_rows": shape.stream_rows,
        "records_per_transaction": round(shape.records_per_transaction, 2),
        "streams_per_transaction": round(shape.streams_per_transaction, 2),
        "notifies": run.notifies,
        "sent_seconds": round(run.sent_seconds, 4),
        "finished_by": run.finished_by,
        "spread": run.spread,
        "all_spreads": [r.spread for r in runs],
        "workers_cpu": round(run.workers_cpu / run.seconds, 2),
        "server_cpu": round(run.server_cpu / run.seconds, 2),
        "all_seconds": [round(r.seconds, 4) for r in runs],
        "repeats": repeats,
    }


# -- the report -----------------------------------------------------------------------------


COLUMNS: Sequence[Column] = [
    Column("scenario", "scenario", numeric=False),
    Column("workers", "workers", whole),
    Column("agents", "actors", whole),
    Column("steps", "steps", whole),
    Column("steps/s", "per_s", whole),
    Column("raw asyncpg/s", "ceiling_per_s", whole),
    Column("ratio", "ratio", fraction),
    Column("txns", "transactions", whole),
    Column("records/txn", "records_per_transaction", fraction),
    Column("streams/txn", "streams_per_transaction", fraction),
    Column("workers cpu", "workers_cpu", fraction),
    Column("pg cpu", "server_cpu", fraction),
    Column("seconds", "seconds", seconds),
]

MOVE_COLUMNS: Sequence[Column] = [
    Column("scenario", "scenario", numeric=False),
    Column("signal", "signal", numeric=False),
    Column("agents", "actors", whole),
    Column("moved", "moved", whole),
    Column("p50 s", "p50_s", seconds),
    Column("p99 s", "p99_s", seconds),
    Column("max s", "max_s", seconds),
    Column("next step run p50 s", "started_p50_s", seconds),
    Column("exit s", "exit_s", seconds),
    Column("lease TTL s", "lease_ttl_s", seconds),
]


def targets(steps: list[Result], moves: list[Result]) -> list[Target]:
    """The issue's targets, checked against this run."""
    two = next(r for r in steps if r["workers"] == 2)
    hand = next(r for r in moves if r["scenario"] == "hand-off")
    take = next(r for r in moves if r["scenario"] == "take-over")
    return [
        Target(
            f"{two['actors']:,} agents on 2 workers, ratio to raw asyncpg",
            two["ratio"],
            0.4,
            fraction,
        ),
        AtMost("hand-off after SIGTERM, p99 seconds", hand["p99_s"], 1.0, seconds),
        AtMost(
            f"take-over after SIGKILL, p99 seconds (lease TTL {take['lease_ttl_s']:g} s + 1)",
            take["p99_s"],
            take["lease_ttl_s"] + 1.0,
            seconds,
        ),
    ]


async def measure(quick: bool, repeats: int) -> tuple[list[Result], list[Result], str]:
    """Every scenario on one server; the steps rows, the move rows, the server's version."""
    progress = Progress("cluster", 1 + len(WORKERS) + 2)
    progress.scenario("starting PostgreSQL")
    server = started(SETTINGS)
    try:
        async with connected(server.dsn("postgres")) as conn:
            version = str(await conn.fetchval("SHOW server_version"))
        steps = [
            await steps_scenario(server, count, AGENTS[quick], STEPS[quick], repeats, progress)
            for count in WORKERS
        ]
        agents = handoff.AGENTS[quick]
        moves = [
            await handoff.move_scenario(server, signal.SIGTERM, agents, repeats, progress),
            await handoff.move_scenario(server, signal.SIGKILL, agents, repeats, progress),
        ]
    finally:
        server.stop()
    progress.finish()
    return steps, moves, version


def run(*, quick: bool, repeats: int) -> SuiteReport:
    """Run the cluster suite."""
    steps, moves, version = on_uvloop(measure(quick, repeats))
    plural = "s" if repeats > 1 else ""
    return SuiteReport(
        suite="cluster",
        quick=quick,
        title=f"cluster: actorflow serve workers on one local PostgreSQL {version}, "
        f"median of {repeats} run{plural}",
        notes=[
            "steps/s: agents x steps / wall seconds, from the first HTTP post to every outcome "
            "in the database; each agent one turn of trivial durable steps; workers are "
            f"`actorflow serve` subprocesses (capacity {CAPACITY:,}, lease TTL {LEASE_TTL:g} s)",
            "raw asyncpg (the ceiling, same run, same server): the journal's write transactions "
            "(counted by pg_stat_statements: txns, records and stream rows) replayed with the "
            "journal's statements on its tables by as many writers as workers; ratio: ceiling "
            "seconds / journal seconds",
            f"PostgreSQL with fsync and synchronous_commit on; {os.cpu_count()} CPUs shared by "
            "the server, the workers and this driver; workers cpu, pg cpu: cores busy during "
            "the timed part (the workers together; the server and all its processes)",
        ],
        columns=COLUMNS,
        results=steps,
        targets=targets(steps, moves),
        sections=[
            Section(
                "moves: one of 2 workers stopped while its agents are mid-turn",
                MOVE_COLUMNS,
                moves,
                [
                    "p50/p99/max: seconds from the signal until another worker had committed "
                    "each moved agent's next step (PostgreSQL's commit timestamp); next step "
                    "run: until that step started; exit: signal to the worker's exit",
                    f"each agent one long turn of steps pausing {handoff.PAUSE:g} s each (so "
                    f"{handoff.AGENTS[quick] / handoff.PAUSE:,.0f} steps/s offered to the two); "
                    "SIGTERM: the worker checkpoints and releases; SIGKILL: its leases expire",
                ],
            )
        ],
        environment={
            "postgres": version,
            "asyncpg": importlib.metadata.version("asyncpg"),
            "loop": loop_name(),
            "repeats": repeats,
            "lease_ttl": LEASE_TTL,
        },
    )
