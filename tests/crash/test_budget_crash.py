"""The crash loop of durable budgets: `actorflow serve` on a real SQLite file hosts leads
that fan out to parallel sub-agents asking the fake OpenAI server (a process of its own)
questions of random length; the server is SIGKILLed at random points of the run (when the
model has applied a random number of calls) and restarted, several times.

Throughout, no tree's spent plus held ever passes its limit; at the end every tree has
finished, holds nothing, spent no more than its limit, and the journal's accounting equals
what the fake server counted: its usage applied once per idempotency key (a call re-run
after a kill is answered again but not counted again, as a provider honouring keys does).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.crash.test_pydantic_ai_crash import wait_until
from tests.server.processes import ACTORFLOW, ROOT, clean_env, free_port

pytestmark = pytest.mark.crash

#: Seconds each fake completion takes: calls are in flight when the kills land.
DELAY = "0.1"
LEADS = 3
HELPERS = 3
QUESTIONS = 6
KILLS = 4


@contextlib.contextmanager
def fake_openai() -> Iterator[str]:
    """The fake OpenAI server in a process of its own; its base URL."""
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "examples.fake_openai", "--port", "0", "--delay", DELAY),
            *("--log", os.devnull, "--exit-after", "120"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "http://127.0.0.1:" in line, line
        yield line.split()[-1]
    finally:
        process.kill()
        process.wait(10)
        assert process.stdout is not None
        process.stdout.close()


class Serving:
    """`actorflow serve tests.crash.budget_app` on the test's journal, restartable."""

    def __init__(self, workdir: Path, base_url: str) -> None:
        self.workdir = workdir
        self.env = clean_env(ACTORFLOW_OPENAI_BASE_URL=base_url, PYTHONPATH=str(ROOT))
        self.process: subprocess.Popen[bytes] | None = None
        self.client: httpx.Client | None = None
        self.starts = 0

    def start(self) -> httpx.Client:
        self.close()
        self.starts += 1
        port = free_port()
        command = [ACTORFLOW, "serve", "tests.crash.budget_app", "--port", str(port)]
        command += ["--journal", str(self.workdir / "journal.db")]
        with (self.workdir / f"serve-{self.starts}.log").open("wb") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        client = self.client
        wait_until("the server to be ready", lambda: client.get("/readyz").status_code == 200)
        return client

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def path_of(invocation: str) -> str:
    actor, _, tail = invocation.rpartition("#")
    return f"/v1/actors/{actor}/invocations/{tail}"


def budget_of(client: httpx.Client, invocation: str) -> dict[str, Any] | None:
    response = client.get(f"{path_of(invocation)}/budget")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def check_within(client: httpx.Client, roots: dict[str, dict[str, int]]) -> None:
    """No tree's spent plus held is over its limit."""
    for invocation, limit in roots.items():
        budget = budget_of(client, invocation)
        if budget is None:
            continue
        for dimension, cap in limit.items():
            used = budget["spent"].get(dimension, 0) + budget["reserved"].get(dimension, 0)
            assert used <= cap, (invocation, dimension, budget)


def test_budgets_hold_across_sigkills_and_match_what_the_model_counted(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    with (
        fake_openai() as base_url,
        contextlib.closing(Serving(tmp_path, base_url)) as serving,
        httpx.Client(base_url=base_url.removesuffix("/v1"), timeout=10) as model,
    ):

        def applied() -> int:
            keys: int = model.get("/usage").json()["keys"]
            return keys

        client = serving.start()
        roots: dict[str, dict[str, int]] = {}
        for n in range(LEADS):
            limit = {"tokens": rng.randrange(600, 2400), "llm_calls": rng.randrange(6, 16)}
            header = f"tokens={limit['tokens']}; llm_calls={limit['llm_calls']}"
            carve = f"tokens={limit['tokens'] // 3}; llm_calls={limit['llm_calls'] // 3}"
            sent = client.post(
                f"/v1/actors/Lead/lead{n}/messages/run",
                json={"helpers": HELPERS, "questions": QUESTIONS, "carve": carve},
                headers={"Actorflow-Budget": header},
            )
            assert sent.status_code == 202, sent.text
            roots[sent.json()["invocation"]] = limit

        def finished() -> bool:
            for invocation in roots:
                state = client.get(path_of(invocation)).json()["state"]
                if state in ("queued", "running"):
                    return False
                assert state == "completed", (invocation, state, seed)
            return True

        kills = 0
        while kills < KILLS:  # kill after a random number of further calls applied
            mark = applied() + rng.randrange(1, 3)
            wait_until(
                f"{mark} calls applied (seed {seed})",
                lambda m=mark: applied() >= m or finished(),
            )
            if finished():
                break
            serving.kill()
            kills += 1
            client = serving.start()
            check_within(client, roots)
        assert kills >= 2, f"the run ended after {kills} kills (seed {seed})"
        wait_until(f"every lead to finish (seed {seed})", finished)
        spent_tokens = spent_calls = 0
        for invocation, limit in roots.items():
            budget = budget_of(client, invocation)
            assert budget is not None
            assert budget["holds"] == 0, (budget, seed)
            assert budget["reserved"] == {}, (budget, seed)
            for dimension, cap in limit.items():
                assert budget["spent"].get(dimension, 0) <= cap, (budget, seed)
            result = client.get(path_of(invocation)).json()["result"]
            assert result == budget["spent"]["llm_calls"], (result, budget, seed)
            lead = invocation.partition("#")[0].removeprefix("Lead/")
            listed = client.get(f"/v1/actors/SubAgent/{lead}-0/invocations").json()
            if listed:  # the carve fitted: its sub-agent spent from a ledger of its own
                carved = budget_of(client, listed[0]["invocation"])
                if carved is not None:
                    assert carved["holds"] == 0, (carved, seed)
                    for dimension, left in carved["remaining"].items():
                        assert left >= 0, (dimension, carved, seed)
            spent_tokens += budget["spent"]["tokens"]
            spent_calls += budget["spent"]["llm_calls"]
        counted = model.get("/usage").json()
        assert counted["conflicts"] == [], (counted, seed)  # a step asked the same again
        assert (spent_tokens, spent_calls) == (counted["total_tokens"], counted["keys"]), (
            counted,
            seed,
        )
