"""A rolling deploy under load: real `actorflow serve` processes, real signals, real HTTP.

`RUNS` agent runs (each `AGENT_STEPS` ledger effects with durable naps between them: about
7 s a run, more than twice the grace budget) are sent over HTTP at a steady rate from a client
thread, each to its own actor with its own Idempotency-Key; a send refused with 503
(shutting down) or cut off with the server is retried against the next server with the
same key. Other client tasks long-poll accepted runs meanwhile, as waiting callers would.
The server is stopped with SIGTERM and restarted on the same journal, several times while
runs are in progress, then once with SIGKILL; the last server finishes everything. A
server that is still starting answers 503 (`starting`, with Retry-After) until it has
recovered; the client retries those.
Checked from outside:

- every SIGTERM ends with exit code 0 within the grace budget, and the log says turns were
  checkpointed (none abandoned);
- every accepted run completes with its right result, keeps the invocation of its first
  acknowledgement, and was accepted once (a retried send made no duplicate);
- every (run, step) effect is applied exactly once in the ledger, and a step ran again only
  if it was the run's step in flight at the SIGKILL (never after a SIGTERM);
- each journal holds one accepted message, one turn, and no step twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.app import AGENT_STEPS, agent_result, amount_for
from tests.deploy.support import (
    CLIENT_TIMEOUT,
    EXIT_SLACK,
    TERMINAL,
    WAIT_CHUNK,
    Applied,
    Attempt,
    Exit,
    Server,
    free_port,
    invocation_path,
    journal_problems,
    message_path,
    read_ledger,
    servers,
)

pytestmark = pytest.mark.deploy

#: Agent runs sent in all, and how fast (per second) the client sends them.
RUNS = 240
SEND_RATE = 40.0
#: Concurrent sends from the client, and long-polls of accepted runs meanwhile.
SENDERS = 8
WATCHERS = 8
GRACE = 3.0
#: How long each server runs before it is signalled.
LIVE = 1.5
#: How each server but the last is stopped.
STOPS = (signal.SIGTERM, signal.SIGTERM, signal.SIGTERM, signal.SIGKILL)
#: Longest the sends may take in all, and the last server to finish every run.
SEND_TIMEOUT = 60.0
FINISH_TIMEOUT = 120.0
#: Concurrent long-polls and journal reads while checking.
READERS = 32
#: Pause before a refused or failed send is retried.
RETRY_PAUSE = 0.02


def run_key(run: int) -> str:
    """The key of the actor that gets run ``run``."""
    return f"r{run:03d}"


def run_actor(run: int) -> str:
    return f"Agent/{run_key(run)}"


class Client:
    """The load, from a thread of its own: sends every run (retrying each until it is
    accepted), and meanwhile long-polls accepted invocations as waiting callers would."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.accepted: dict[int, str] = {}
        #: Runs whose sends got 503 (how many times), and runs whose send failed after the
        #: request may have reached the server (the retry must return the same invocation).
        self.refused: Counter[int] = Counter()
        self.ambiguous: set[int] = set()
        self.polls: Counter[str] = Counter()
        self.problems: list[str] = []
        self.error: BaseException | None = None
        self.sent = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._main, name="deploy-client", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def wait_sent(self, timeout: float) -> None:
        """Wait until every run was accepted (or the thread failed)."""
        if not self.sent.wait(timeout) and self.error is None:
            pytest.fail(
                f"the client did not get every run accepted within {timeout} s "
                f"({len(self.accepted)} of {RUNS})",
                pytrace=False,
            )

    def close(self) -> None:
        """Stop the thread; re-raise what went wrong in it."""
        self.stop.set()
        self.thread.join(CLIENT_TIMEOUT)
        if self.thread.is_alive():
            pytest.fail("the client thread did not stop", pytrace=False)
        if self.error is not None:
            raise self.error

    def _main(self) -> None:
        try:
            asyncio.run(self._load())
        except BaseException as exc:  # handed to the test thread by close()
            self.error = exc
        finally:
            self.sent.set()

    async def _load(self) -> None:
        limits = httpx.Limits(max_connections=SENDERS + WATCHERS)
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0, limits=limits) as client:
            pending = iter(range(RUNS))
            began = time.monotonic()

            async def sender() -> None:
                for run in pending:
                    wait = began + run / SEND_RATE - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    await self._send(client, run)

            async with asyncio.TaskGroup() as group:
                for index in range(WATCHERS):
                    group.create_task(self._watch(client, index))
                async with asyncio.TaskGroup() as senders:
                    for _ in range(SENDERS):
                        senders.create_task(sender())
                self.sent.set()

    async def _send(self, client: httpx.AsyncClient, run: int) -> None:
        path = message_path(run_actor(run), "run")
        headers = {"Idempotency-Key": f"deploy-{run}"}
        while not self.stop.is_set():
            try:
                response = await client.post(path, json={"run": run}, headers=headers)
            except httpx.ConnectError:
                await asyncio.sleep(RETRY_PAUSE)  # no server listening: nothing was sent
                continue
            except httpx.TransportError:
                self.ambiguous.add(run)  # the server may have accepted it before it went
                await asyncio.sleep(RETRY_PAUSE)
                continue
            if response.status_code == 503:
                self.refused[run] += 1
                if "retry-after" not in response.headers:
                    self.problems.append(f"run {run}: a 503 without Retry-After")
                await asyncio.sleep(RETRY_PAUSE)
                continue
            if response.status_code not in (200, 202):
                self.problems.append(f"run {run}: {response.status_code} {response.text}")
                return
            self.accepted[run] = response.json()["invocation"]
            return

    async def _watch(self, client: httpx.AsyncClient, index: int) -> None:
        """Long-poll accepted runs (a caller waiting on its result), through the stops:
        status reads must keep answering during a shutdown, and end their wait early."""
        turn = index
        while not self.stop.is_set():
            runs = sorted(self.accepted)
            if not runs:
                await asyncio.sleep(0.05)
                continue
            turn += WATCHERS
            run = runs[turn % len(runs)]
            path = invocation_path(self.accepted[run])
            try:
                response = await client.get(path, params={"wait": "2"}, timeout=4.0)
            except httpx.ConnectError:
                self.polls["no server"] += 1
                await asyncio.sleep(RETRY_PAUSE)
                continue
            except httpx.TransportError as exc:
                self.polls[type(exc).__name__] += 1
                await asyncio.sleep(RETRY_PAUSE)
                continue
            if _starting(response):  # the next server, still recovering: retry later
                self.polls["starting"] += 1
                await asyncio.sleep(RETRY_PAUSE)
                continue
            if response.status_code != 200:
                self.problems.append(f"run {run}: a status read got {response.status_code}")
                continue
            body = response.json()
            self.polls[body["state"]] += 1
            want = agent_result(run_key(run), run)
            if body["state"] not in ("queued", "running", "completed") or (
                body["state"] == "completed" and body["result"] != want
            ):
                self.problems.append(f"run {run}: {body}, expected a result of {want}")


def _starting(response: httpx.Response) -> bool:
    """Whether this is a server's 503 before it is ready (waiting for the journal or
    recovering), which says when to retry."""
    if response.status_code != 503 or "retry-after" not in response.headers:
        return False
    error: dict[str, str] = response.json().get("error", {})
    return error.get("type") == "starting"


@dataclasses.dataclass
class Stop:
    """How one server generation was stopped and how it went."""

    server: Server
    signum: signal.Signals
    exit: Exit


def check_stops(stops: list[Stop]) -> list[str]:
    """Every SIGTERM exits 0 within the budget having checkpointed running turns."""
    problems = []
    for stop in stops:
        server, name = stop.server, stop.signum.name
        where = f"generation {server.generation} ({name})"
        if stop.signum == signal.SIGKILL:
            if stop.exit.code != -signal.SIGKILL:
                problems.append(f"{where}: exit code {stop.exit.code} after SIGKILL")
            continue
        if stop.exit.code != 0:
            problems.append(f"{where}: exit code {stop.exit.code}, expected 0")
        if stop.exit.seconds > GRACE + EXIT_SLACK:
            problems.append(
                f"{where}: exited {stop.exit.seconds:.2f} s after SIGTERM, past the grace "
                f"budget of {GRACE} s (+{EXIT_SLACK} s slack)"
            )
        reports = server.events("stopped-turns")
        if len(reports) != 1:
            problems.append(f"{where}: {len(reports)} event=stopped-turns lines")
            continue
        report = reports[0]
        if int(report.get("checkpointed", "0")) <= 0:
            problems.append(f"{where}: no turn checkpointed ({report}): was nothing running?")
        if report.get("abandoned") != "0":
            problems.append(f"{where}: steps abandoned at the end of the budget ({report})")
        if not any(e.get("code") == "0" for e in server.events("exit")):
            problems.append(f"{where}: no event=exit code=0 line")
    return problems


async def _finish_and_read(
    url: str, accepted: dict[int, str]
) -> tuple[dict[int, dict[str, Any]], dict[int, list[dict[str, Any]]], dict[int, Any]]:
    """Every run's final status, its actor's journal, and what a re-send answers."""
    limits = httpx.Limits(max_connections=READERS)
    gate = asyncio.Semaphore(READERS)
    deadline = time.monotonic() + FINISH_TIMEOUT
    statuses: dict[int, dict[str, Any]] = {}
    journals: dict[int, list[dict[str, Any]]] = {}
    resent: dict[int, Any] = {}
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT, limits=limits) as client:

        async def finish(run: int, invocation: str) -> None:
            async with gate:
                while True:
                    left = deadline - time.monotonic()
                    wait = f"{min(WAIT_CHUNK, max(0.0, left)):.2f}"
                    response = await client.get(invocation_path(invocation), params={"wait": wait})
                    body = response.json()
                    if response.status_code != 200 or body.get("state") in TERMINAL or left <= 0:
                        statuses[run] = body
                        return

        async def read(run: int) -> None:
            async with gate:
                response = await client.get(f"/v1/actors/{run_actor(run)}/journal")
                journals[run] = response.json()
                again = await client.post(
                    message_path(run_actor(run), "run"),
                    json={"run": run},
                    headers={"Idempotency-Key": f"deploy-{run}"},
                )
                resent[run] = (again.status_code, again.json().get("invocation"))

        async with asyncio.TaskGroup() as group:
            for run, invocation in accepted.items():
                group.create_task(finish(run, invocation))
        async with asyncio.TaskGroup() as group:
            for run in accepted:
                group.create_task(read(run))
    return statuses, journals, resent


def check_runs(
    accepted: dict[int, str],
    statuses: dict[int, dict[str, Any]],
    journals: dict[int, list[dict[str, Any]]],
    resent: dict[int, Any],
) -> list[str]:
    """Every accepted run completed with its result, once, under its first invocation."""
    problems = []
    if len(accepted) != RUNS:
        problems.append(f"only {len(accepted)} of {RUNS} runs were accepted")
    for run, invocation in sorted(accepted.items()):
        if not invocation.startswith(run_actor(run) + "#"):
            problems.append(f"run {run}: invocation {invocation} is another actor's")
        body = statuses.get(run, {})
        want = agent_result(run_key(run), run)
        if body.get("state") != "completed" or body.get("result") != want:
            problems.append(f"run {run} ({invocation}): {body}, expected completed with {want}")
        problems += journal_problems(journals.get(run, []), run_actor(run))
        if resent.get(run) != (200, invocation):
            problems.append(
                f"run {run}: a re-send with its Idempotency-Key answered {resent.get(run)}, "
                f"expected 200 and {invocation}"
            )
    return problems


def check_ledger(
    applied: list[Applied], attempts: list[Attempt], runs: set[int], stops: list[Stop]
) -> tuple[list[str], int]:
    """Each effect applied once; steps re-run only if in flight at a SIGKILL. Also returns
    how many steps ran again."""
    problems = []
    expected = {(run_actor(run), step) for run in runs for step in range(AGENT_STEPS)}
    effects = Counter((row.actor, row.step) for row in applied)
    doubled = sorted(effect for effect, count in effects.items() if count > 1)
    missing = sorted(expected - set(effects))
    extra = sorted(set(effects) - expected)
    if doubled or missing or extra:
        problems.append(
            f"ledger effects applied twice: {doubled[:5]} ({len(doubled)}), never: "
            f"{missing[:5]} ({len(missing)}), unexpected: {extra[:5]} ({len(extra)})"
        )
    for row in applied:
        if row.amount != amount_for(row.actor, row.step):
            problems.append(f"{row}: amount should be {amount_for(row.actor, row.step)}")
        if not row.key.partition(":")[2].startswith(f"{row.actor}/t1/"):
            problems.append(f"{row}: applied by another turn than the run's only one")

    killed = {stop.server.generation for stop in stops if stop.signum == signal.SIGKILL}
    calls: dict[str, list[Attempt]] = defaultdict(list)
    last: dict[tuple[int, str], Attempt] = {}  # (generation, actor) -> its last call there
    for call in attempts:
        calls[call.key].append(call)
        last[(call.generation, call.actor)] = call
    reran = 0
    for key, key_calls in calls.items():
        per_generation = Counter(call.generation for call in key_calls)
        for generation, count in per_generation.items():
            if count > 1:
                problems.append(f"{key} ran {count} times in generation {generation}")
        for call in key_calls[:-1]:
            reran += 1
            if call.generation not in killed:
                problems.append(
                    f"{key} ran in generation {call.generation}, stopped by SIGTERM, and "
                    f"again in generation {key_calls[-1].generation}"
                )
            elif last[(call.generation, call.actor)] is not call:
                problems.append(
                    f"{key} ran again after the SIGKILL of generation {call.generation}, but "
                    f"was not in flight then ({last[(call.generation, call.actor)].key} was)"
                )

    spanning = {
        stop.server.generation: {
            call.actor for call in attempts if call.generation == stop.server.generation
        }
        & {call.actor for call in attempts if call.generation == stop.server.generation + 1}
        for stop in stops
    }
    for generation, actors in spanning.items():
        if not actors:
            problems.append(f"no run was in progress across the stop of generation {generation}")
    return problems, reran


@pytest.mark.timeout(240)
def test_rolling_deploy_under_load_loses_nothing(tmp_path: Path) -> None:
    """SIGTERM x3 then SIGKILL while 240 long runs are sent and run; nothing lost or doubled."""
    started = time.monotonic()
    port = free_port()
    stops: list[Stop] = []
    with servers(tmp_path) as pool:
        server = pool.start(port, GRACE)
        client = Client(server.url)
        client.start()
        try:
            for signum in STOPS:
                time.sleep(LIVE)
                server.signal(signum)
                stops.append(Stop(server, signum, server.wait_exit(GRACE + 10.0)))
                server = pool.start(port, GRACE)
            client.wait_sent(SEND_TIMEOUT)
        finally:
            client.close()
        problems = check_stops(stops) + client.problems
        statuses, journals, resent = asyncio.run(_finish_and_read(server.url, client.accepted))
        problems += check_runs(client.accepted, statuses, journals, resent)
        server.signal(signal.SIGTERM)
        final = server.wait_exit(GRACE + 10.0)
        if final.code != 0:
            problems.append(f"the last server exited with {final.code}")
        applied, attempts = read_ledger(pool.ledger)
        ledger_problems, reran = check_ledger(applied, attempts, set(client.accepted), stops)
        problems += ledger_problems
        if problems:
            shown = "\n  ".join(problems[:40])
            pytest.fail(
                f"{len(problems)} problems:\n  {shown}\n{pool.logs()}",
                pytrace=False,
            )
    timings = ", ".join(f"{s.signum.name} {s.exit.seconds:.2f} s" for s in stops)
    reports = "; ".join(
        str(s.server.events("stopped-turns")[0]) for s in stops if s.signum == signal.SIGTERM
    )
    print(
        f"\n{len(client.accepted)} runs, {len(applied)} effects applied once each from "
        f"{len(attempts)} calls ({reran} re-run after the SIGKILL); "
        f"{len(client.refused)} runs got 503 ({sum(client.refused.values())} times), "
        f"{len(client.ambiguous)} sends cut off and retried; long-polls {dict(client.polls)}; "
        f"stops: {timings}; "
        f"{reports}; {time.monotonic() - started:.1f} s"
    )
