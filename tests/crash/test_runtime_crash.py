"""SIGKILL a process full of agents again and again; every effect lands exactly once.

Each cycle starts `tests.crash.runtime_child` on the same journal and ledger files and kills
it with SIGKILL at a random (seeded) moment: while it sends its messages, while its runtime
starts and recovers the agents, or a few milliseconds after the ledger has seen a random
number of calls from it, which lands the kill anywhere in a step (before or after the
ledger's transaction, while the step's result is journaled, during a durable nap). The call
counts are drawn so that the first `MIN_KILLS` kills spread over the whole of the work,
whatever the machine's speed; after them, now and then a run is let finish. Audited from
outside, after every cycle and at the end:

- every result any run printed is the agent's correct result, and the run that finished
  printed one for every message;
- every effect (agent, job, step) is applied exactly once in the ledger's deduplicated
  table, and the applied keys are exactly the keys of the journal's completed steps;
- a step never runs twice in one process, and runs again in a later process only if it was
  the agent's last call in a killed one (the step in flight at the kill), so the re-executed
  keys number at most kills x agents;
- no acknowledged message is lost or doubled: each message keeps the invocation of its first
  acknowledgement across restarts, and the journal holds exactly one accepted message and
  one completed turn per message, each step completed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import random
import sqlite3
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Literal

import msgspec
import pytest

import actorflow
from actorflow.runtime._inspect import read_checkpoint
from actorflow.runtime._state_parts import state_bytes
from journal import SqliteStore, Store
from tests.crash._process import REAP_TIMEOUT, LineChild
from tests.crash.runtime_child import (
    AGENTS,
    MESSAGES,
    Agent,
    Log,
    agent_keys,
    amount_for,
    connect_ledger,
    expected_log,
    expected_result,
    naps_after,
    steps_for,
)

pytestmark = pytest.mark.crash

SEED = 20240612
#: Kills before a run may finish.
MIN_KILLS = 30
#: Give up (and fail) past this many cycles or seconds without a finished run.
MAX_CYCLES = 200
TIME_BUDGET = 120.0
#: Longest a cycle may take to reach its kill point (or to finish); past it the test fails.
CYCLE_TIMEOUT = 30.0
#: How often the ledger is polled for the number of calls a run has made so far (seconds).
POLL = 0.002
#: Kills timed from OPEN land within this many seconds of it (while the runtime recovers).
STARTUP_WINDOW = 0.08
#: Kills timed by the ledger land up to this many seconds after its call count is reached.
JITTER = 0.006

TOTAL_MESSAGES = AGENTS * MESSAGES
#: Every effect the agents apply: (agent, job, step).
EFFECTS = frozenset(
    (agent, job, step)
    for agent in agent_keys()
    for job in range(MESSAGES)
    for step in range(steps_for(agent, job))
)
TOTAL_EFFECTS = len(EFFECTS)

# (agent, job) names one message.
Message = tuple[str, int]


@dataclasses.dataclass(frozen=True)
class KillPlan:
    """When to kill a child: ``at`` seconds after its OPEN line (``startup``), once it has
    printed ``count`` ACK lines (``ack``), or ``at`` seconds (the jitter) after the ledger has
    seen ``count`` calls from it (``calls``); ``count`` None: never (let it finish)."""

    kind: Literal["startup", "ack", "calls"]
    count: int | None = 0
    at: float = 0.0

    def __str__(self) -> str:
        if self.kind == "startup":
            return f"{self.at * 1000:.1f} ms after OPEN"
        if self.count is None:
            return "never"
        if self.kind == "ack":
            return f"after {self.count} ACK lines"
        return f"{self.at * 1000:.1f} ms after {self.count} ledger calls"


@dataclasses.dataclass
class RunOutput:
    """What one child printed, and how it ended."""

    cycle: int
    plan: KillPlan
    acks: dict[Message, str] = dataclasses.field(default_factory=dict)
    done: dict[Message, tuple[str, int]] = dataclasses.field(default_factory=dict)
    opened: bool = False
    ready: bool = False
    killed: bool = False
    status: int | None = None
    partial_line: bytes = b""
    stderr: str = ""


class ChildFailed(AssertionError):
    """The child crashed, stalled, or printed something it should not have."""


class Child(LineChild):
    """A running `runtime_child`, killable at any moment."""

    def __init__(self, journal: Path, ledger: Path, cycle: int, plan: KillPlan, workdir: Path):
        self.out = RunOutput(cycle, plan)
        self._ledger = sqlite3.connect(ledger, timeout=CYCLE_TIMEOUT)
        loop = "uvloop" if cycle % 2 else "asyncio"
        args = [str(journal), str(ledger), str(cycle), "--loop", loop]
        super().__init__("tests.crash.runtime_child", args, workdir / f"child-{cycle}.stderr")

    def run(self) -> RunOutput:
        """Read the child's output until its kill point (then kill it) or its end."""
        plan = self.out.plan
        deadline = time.monotonic() + CYCLE_TIMEOUT
        kill_at: float | None = None
        polled = 0.0
        while True:
            now = time.monotonic()
            if kill_at is None and (plan.kind != "calls" or now - polled >= POLL):
                polled = now  # the ledger is polled, other kill points are cheap to check
                if self._due(plan):
                    kill_at = now + plan.at
            if kill_at is not None and now >= kill_at:
                self.kill()
                return self.out
            if now >= deadline:
                raise ChildFailed(
                    f"cycle {self.out.cycle}: neither the kill point ({plan}) nor the end came "
                    f"within {CYCLE_TIMEOUT} s; {len(self.out.acks)} ACK and "
                    f"{len(self.out.done)} DONE lines\n{self.stderr()}"
                )
            until = min(deadline, now + POLL, kill_at or deadline)
            try:
                line = self.next_line(timeout=max(0.0, until - now))
            except queue.Empty:
                continue
            if line is None:
                self.out.status = self.proc.wait(REAP_TIMEOUT)
                self.out.stderr = self.stderr()
                return self.out

    def _due(self, plan: KillPlan) -> bool:
        """Whether the kill point has come (a jitter ``plan.at`` may follow)."""
        if plan.count is None or not self.out.opened:
            return False
        if plan.kind == "startup":
            return True
        if plan.kind == "ack":
            return len(self.out.acks) >= plan.count
        return self.calls() >= plan.count

    def calls(self) -> int:
        """How many calls the ledger has seen from this run (committed ones)."""
        query = "SELECT count(*) FROM attempts WHERE run = ?"
        (count,) = self._ledger.execute(query, (self.out.cycle,)).fetchone()
        return int(count)

    def take(self, line: bytes) -> None:
        out = self.out
        if not line.endswith(b"\n"):
            out.partial_line = line  # cut short by the kill: not an acknowledgement
            return
        fields = line.decode().split()
        if fields == ["OPEN"]:
            out.opened = True
        elif fields == ["READY"]:
            out.ready = True
        elif fields[:1] == ["ACK"] and len(fields) == 4 and out.ready:
            message = (fields[1], int(fields[2]))
            if message in out.acks:
                raise ChildFailed(f"cycle {out.cycle}: {message} acknowledged twice in one run")
            out.acks[message] = fields[3]
        elif fields[:1] == ["DONE"] and len(fields) == 5:
            message = (fields[1], int(fields[2]))
            if message in out.done:
                raise ChildFailed(f"cycle {out.cycle}: {message} reported done twice in one run")
            out.done[message] = (fields[3], int(fields[4]))
        else:
            raise ChildFailed(f"cycle {out.cycle}: unexpected line {line!r}\n{self.stderr()}")

    def kill(self) -> tuple[bool, int]:
        """SIGKILL the child, reap it, and take what it printed before it died."""
        killed, self.out.status = super().kill()
        self.out.killed |= killed
        self.out.stderr = self.stderr()
        return killed, self.out.status

    def close(self) -> None:
        super().close()
        self._ledger.close()


def run_child(journal: Path, ledger: Path, cycle: int, plan: KillPlan, workdir: Path) -> RunOutput:
    """Run one child on the files until its kill point or its end."""
    child = Child(journal, ledger, cycle, plan, workdir)
    try:
        return child.run()
    finally:
        child.close()


# -- the ledger, read from outside ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Applied:
    """A row of the ledger's deduplicated table."""

    key: str
    agent: str
    job: int
    step: int
    amount: int
    run: int


@dataclasses.dataclass(frozen=True)
class Attempt:
    """A row of the ledger's append-only table of calls."""

    seq: int
    key: str
    agent: str
    job: int
    step: int
    run: int


def read_ledger(path: Path) -> tuple[list[Applied], list[Attempt]]:
    """Every applied effect and every call, in call order."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        applied = [
            Applied(*row)
            for row in conn.execute("SELECT key, agent, job, step, amount, run FROM applied")
        ]
        attempts = [
            Attempt(*row)
            for row in conn.execute(
                "SELECT seq, key, agent, job, step, run FROM attempts ORDER BY seq"
            )
        ]
    return applied, attempts


@dataclasses.dataclass
class LedgerReport:
    """What the ledger shows, and every broken promise found in it."""

    applied: int
    attempts: int
    reexecuted_keys: int
    reexecutions: int
    problems: list[str]


def audit_ledger(path: Path, killed_runs: set[int]) -> LedgerReport:
    """Check the ledger's effects and calls against the exactly-once promises."""
    applied, attempts = read_ledger(path)
    problems: list[str] = []
    by_key = {row.key: row for row in applied}
    effects = Counter((row.agent, row.job, row.step) for row in applied)
    for effect, count in sorted(effects.items()):
        if count > 1:
            keys = sorted(row.key for row in applied if (row.agent, row.job, row.step) == effect)
            problems.append(f"effect {effect} applied {count} times, under keys {keys}")
    for row in applied:
        if (row.agent, row.job, row.step) not in EFFECTS:
            problems.append(f"applied effect {row} belongs to no message")
        elif row.amount != amount_for(row.agent, row.job, row.step):
            wanted = amount_for(row.agent, row.job, row.step)
            problems.append(f"applied effect {row}: amount should be {wanted}")
        if row.key.partition(":")[2].partition("/t")[0] != f"Agent/{row.agent}":
            problems.append(f"applied effect {row}: its key names another actor")

    calls: dict[str, list[Attempt]] = defaultdict(list)
    last_call: dict[tuple[int, str], Attempt] = {}  # (run, agent) -> the agent's last call there
    for call in attempts:
        calls[call.key].append(call)
        last_call[(call.run, call.agent)] = call
        found = by_key.get(call.key)
        if found is None or (found.agent, found.job, found.step) != (
            call.agent,
            call.job,
            call.step,
        ):
            problems.append(f"call {call} left no matching applied effect ({found})")
    reexecuted = 0
    for key, key_calls in calls.items():
        runs = Counter(call.run for call in key_calls)
        for run, count in runs.items():
            if count > 1:
                problems.append(f"{key} was called {count} times in run {run}")
        if len(key_calls) == 1:
            continue
        reexecuted += 1
        for call in key_calls[:-1]:
            if call.run not in killed_runs:
                problems.append(f"{key} ran in run {call.run}, which was not killed, and again")
            elif last_call[(call.run, call.agent)] is not call:
                after = last_call[(call.run, call.agent)]
                problems.append(
                    f"{key} ran again after run {call.run}, but was not in flight at that kill: "
                    f"{call.agent}'s last call in that run was {after.key}"
                )
    return LedgerReport(
        len(applied), len(attempts), reexecuted, len(attempts) - len(calls), problems
    )


# -- the journal, read from outside -------------------------------------------------------------


async def audit_journal(path: Path, invocations: dict[Message, str]) -> list[str]:
    """Check every agent's journal: its state, one accepted message and one completed turn
    per acknowledged message, each step completed once."""
    problems: list[str] = []
    store = await SqliteStore.open(path, durability="full")
    try:
        # Never entered: reading status and journals needs no running actors, and a runtime
        # that recovered nothing must not run anything here.
        runtime = actorflow.Runtime(store, [Agent])
        for agent in agent_keys():
            ref = actorflow.ActorRef("Agent", agent)
            status = await runtime.status(ref)
            if status.state != "idle":
                problems.append(f"{ref}: state {status.state!r}, expected 'idle'")
            problems += journal_problems(ref, await runtime.journal(ref), invocations)
            # Through the runtime's store, which reads the parts stored as values.
            problems += await state_problems(runtime.store, ref)
    finally:
        await store.close()
    return problems


async def state_problems(store: Store, ref: actorflow.ActorRef) -> list[str]:
    """Check one agent's checkpointed state: every job's log entries, in parts."""
    checkpoint = await read_checkpoint(store, ref.id)
    if checkpoint is None:
        return [f"{ref}: no checkpoint"]
    if not checkpoint.parts:
        return [f"{ref}: its {MESSAGES} jobs' log is not checkpointed in parts"]
    data = await state_bytes(store, ref.id, checkpoint)
    if msgspec.msgpack.decode(data, type=Log) != Log(expected_log(ref.key, MESSAGES)):
        return [f"{ref}: its checkpointed log is not every job's entries in order"]
    return []


def journal_problems(
    ref: actorflow.ActorRef, entries: list[actorflow.JournalEntry], invocations: dict[Message, str]
) -> list[str]:
    """Check one agent's journal entries."""
    problems: list[str] = []
    kinds = Counter((entry.stream, entry.type) for entry in entries)
    wanted = {
        ("inbox", "message"): MESSAGES,
        ("actor", "turn"): MESSAGES,
        ("actor", "turn_done"): MESSAGES,
        ("actor", "step"): sum(steps_for(ref.key, job) for job in range(MESSAGES)),
        ("actor", "timer"): sum(
            naps_after(step) for job in range(MESSAGES) for step in range(steps_for(ref.key, job))
        ),
    }
    if kinds != Counter(wanted):
        problems.append(f"{ref}: journal holds {dict(kinds)}, expected {wanted}")
    acked = {invocations.get((ref.key, job)) for job in range(MESSAGES)}
    for entry in entries:
        if entry.type == "message" and entry.data["invocation"] not in acked:
            problems.append(f"{ref}: inbox holds an unacknowledged message {entry.data}")
        elif entry.type == "turn_done":
            invocation = entry.data["invocation"]
            jobs = [job for job in range(MESSAGES) if invocations.get((ref.key, job)) == invocation]
            if len(jobs) != 1:
                problems.append(f"{ref}: turn for unacknowledged invocation {invocation}")
            elif entry.data["result"] != expected_result(ref.key, jobs[0]):
                problems.append(f"{ref}: {invocation} journaled result {entry.data['result']}")
    steps = Counter((e.data["turn"], e.data["step"]) for e in entries if e.type == "step")
    problems += [f"{ref}: step {step} journaled {n} times" for step, n in steps.items() if n > 1]
    return problems


def journaled_step_keys(path: Path) -> set[str]:
    """The idempotency keys of every journaled effect step (to match against the ledger)."""

    async def read() -> set[str]:
        keys: set[str] = set()
        store = await SqliteStore.open(path, durability="full")
        try:
            runtime = actorflow.Runtime(store, [Agent])
            tag = store.identity[:16]  # step keys carry the journal's identity
            for agent in agent_keys():
                ref = actorflow.ActorRef("Agent", agent)
                for entry in await runtime.journal(ref):
                    if entry.type == "step" and entry.data["name"] == "effect":
                        keys.add(f"{tag}:{ref.id}/t{entry.data['turn']}/s{entry.data['step']}")
        finally:
            await store.close()
        return keys

    return asyncio.run(read())


# -- the test --------------------------------------------------------------------------------


def choose_plan(rng: random.Random, cycle: int, kills: int, acked: int, remaining: int) -> KillPlan:
    """Where this cycle's kill lands, given the kills so far, the messages acknowledged in
    earlier runs and the effects not yet applied. Kills timed by the ledger's calls spread the
    first `MIN_KILLS` kills over the whole of the work whatever the machine's speed; the
    jitter after the call count lands them anywhere in a step: before or after the ledger's
    transaction, while the step's result is journaled, during a durable nap."""
    if cycle == 0:
        return KillPlan("ack", rng.randint(1, TOTAL_MESSAGES // 2))  # while sending
    if kills >= MIN_KILLS:  # now and then, let a run finish
        count = rng.randint(1, 2 * remaining) if remaining and rng.random() < 0.5 else None
        return KillPlan("calls", count, rng.uniform(0, JITTER))
    roll = rng.random()
    if roll < 0.2:  # while the runtime starts and recovers the agents
        return KillPlan("startup", 0, rng.uniform(0, STARTUP_WINDOW))
    if roll < 0.45 and acked < TOTAL_MESSAGES:  # while sending what is left
        return KillPlan("ack", rng.randint(acked, min(acked + 30, TOTAL_MESSAGES - 1)))
    share = remaining / (MIN_KILLS - kills + 3)  # leave some work for the last kills
    return KillPlan("calls", rng.randint(0, round(2 * share)), rng.uniform(0, JITTER))


def check_output(out: RunOutput, invocations: dict[Message, str]) -> list[str]:
    """Check a run's ACK and DONE lines against the invocations acknowledged before."""
    problems = []
    for message, invocation in out.acks.items():
        first = invocations.setdefault(message, invocation)
        if invocation != first:
            problems.append(
                f"{message} acknowledged as {invocation}, first acknowledged as {first}: "
                f"a re-send made a second invocation"
            )
    for message, (invocation, result) in out.done.items():
        if invocation != invocations.get(message):
            problems.append(
                f"{message} done as {invocation}, acknowledged as {invocations.get(message)}"
            )
        if result != expected_result(*message):
            problems.append(f"{message} returned {result}, expected {expected_result(*message)}")
    return problems


def fail(out: RunOutput, problems: list[str], what: str) -> None:
    """Fail the test with the problems of a cycle and the child's stderr."""
    shown = "\n  ".join(problems[:40])
    pytest.fail(
        f"cycle {out.cycle} (seed {SEED}, kill {out.plan}): {len(problems)} problems {what}:\n"
        f"  {shown}\nchild stderr (tail):\n{out.stderr}",
        pytrace=False,
    )


def final_audit(journal: Path, ledger: Path, invocations: dict[Message, str]) -> list[str]:
    """After the finishing run: every message acknowledged, every effect applied, and the
    ledger's effects are exactly the journal's completed steps."""
    problems = []
    if len(invocations) != TOTAL_MESSAGES:
        problems.append(f"{len(invocations)} messages acknowledged, expected {TOTAL_MESSAGES}")
    applied, _ = read_ledger(ledger)
    effects = {(row.agent, row.job, row.step) for row in applied}
    if effects != EFFECTS:
        lacking, extra = sorted(EFFECTS - effects), sorted(effects - EFFECTS)
        problems.append(
            f"ledger effects: missing {lacking[:5]} ({len(lacking)} in all), {extra[:5]}"
        )
    step_keys = journaled_step_keys(journal)
    ledger_keys = {row.key for row in applied}
    if step_keys != ledger_keys:
        journaled, in_ledger = sorted(step_keys - ledger_keys), sorted(ledger_keys - step_keys)
        problems.append(
            f"steps only journaled: {journaled[:5]}, only in the ledger {in_ledger[:5]}"
        )
    problems += asyncio.run(audit_journal(journal, invocations))
    return problems


@pytest.mark.timeout(200)
def test_sigkilled_agents_apply_every_effect_exactly_once(tmp_path: Path) -> None:
    """Kill a process running 60 agents over and over; no effect twice, no message lost."""
    journal, ledger = tmp_path / "journal.db", tmp_path / "ledger.db"
    connect_ledger(str(ledger)).close()
    started = time.monotonic()
    invocations: dict[Message, str] = {}
    ever_done: set[Message] = set()
    killed_runs: set[int] = set()
    kinds: Counter[str] = Counter()
    kills_mid_work = cut_lines = 0
    final: RunOutput | None = None
    report = LedgerReport(0, 0, 0, 0, [])
    for cycle in range(MAX_CYCLES):
        elapsed = time.monotonic() - started
        if elapsed > TIME_BUDGET:
            pytest.fail(
                f"no run finished every agent within {TIME_BUDGET} s ({cycle} cycles, "
                f"{len(killed_runs)} kills): {report.applied} of {TOTAL_EFFECTS} effects "
                f"applied, {len(ever_done)} of {TOTAL_MESSAGES} messages done",
                pytrace=False,
            )
        rng = random.Random(SEED * 1000 + cycle)
        remaining = TOTAL_EFFECTS - report.applied
        plan = choose_plan(rng, cycle, len(killed_runs), len(invocations), remaining)
        out = run_child(journal, ledger, cycle, plan, tmp_path)
        if not out.killed and out.status != 0:
            fail(out, [f"the child exited with status {out.status} on its own"], "")
        problems = check_output(out, invocations)
        ever_done.update(out.done)
        if out.killed:
            killed_runs.add(cycle)
            kinds[plan.kind] += 1
            cut_lines += bool(out.partial_line)
        report = audit_ledger(ledger, killed_runs)
        problems += report.problems
        if problems:
            fail(out, problems, "after this cycle")
        if out.killed:
            kills_mid_work += report.applied < TOTAL_EFFECTS
            continue
        missing = [m for m in invocations if m not in out.done]
        if len(out.acks) != TOTAL_MESSAGES or missing:
            fail(out, [f"the run ended without results for {sorted(missing)}"], "")
        if len(killed_runs) >= MIN_KILLS:
            final = out
            break
    if final is None:
        pytest.fail(
            f"no run finished every agent after {MAX_CYCLES} cycles ({len(killed_runs)} kills)",
            pytrace=False,
        )

    kills = len(killed_runs)
    problems = final_audit(journal, ledger, invocations)
    if report.reexecuted_keys > kills * AGENTS:
        problems.append(f"{report.reexecuted_keys} keys re-executed, more than {kills} x {AGENTS}")
    if kills_mid_work < MIN_KILLS // 2:
        problems.append(
            f"only {kills_mid_work} of {kills} kills left effects to apply: the kill points no "
            f"longer spread over the work (has the child become much faster?)"
        )
    if problems:
        fail(final, problems, "in the final audit")
    print(
        f"\n{kills} kills ({dict(kinds)}; {kills_mid_work} with effects still to apply, "
        f"{cut_lines} cut a line short) and a finishing run in {final.cycle + 1} cycles, "
        f"{time.monotonic() - started:.1f} s: {TOTAL_MESSAGES} messages, {report.applied} "
        f"effects applied once each out of {report.attempts} calls; {report.reexecuted_keys} "
        f"steps re-executed after a kill ({report.reexecutions} extra calls)"
    )
