"""The bundled examples run as their docstrings say, offline, and resume after a kill."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_example(module: str, cwd: pathlib.Path, *args: str, delay: str = "0") -> str:
    env = {**os.environ, "ACTORFLOW_EXAMPLE_DELAY": delay, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_research_agent_reports_after_approval(tmp_path: pathlib.Path) -> None:
    out = run_example("examples.research", tmp_path, "--approve-after", "0")
    assert '"approved_by":"a human"' in out
    assert '"sources":9' in out
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert len(calls) == 5  # plan, three searches, summary: each once


def test_research_agent_resumes_after_sigkill_without_repeating_calls(
    tmp_path: pathlib.Path,
) -> None:
    env = {**os.environ, "ACTORFLOW_EXAMPLE_DELAY": "0.2", "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-m", "examples.research", "--approve-after", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = tmp_path / "calls.log"
    deadline = time.monotonic() + 60
    while not (log.exists() and len(log.read_text().splitlines()) >= 2):
        assert child.poll() is None, "the example ended before it could be killed"
        assert time.monotonic() < deadline, "the example made no progress"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    before = log.read_text().splitlines()

    out = run_example("examples.research", tmp_path, "--approve-after", "0")

    assert '"approved_by":"a human"' in out
    calls = log.read_text().splitlines()
    # Completed calls never ran again; only the one in flight at the kill may have.
    assert len(calls) - len(set(calls)) <= 1
    assert set(calls) == set(run_fresh_calls(tmp_path))
    assert before == calls[: len(before)]


def run_fresh_calls(tmp_path: pathlib.Path) -> list[str]:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    run_example("examples.research", fresh, "--approve-after", "0")
    return (fresh / "calls.log").read_text().splitlines()


def test_payments_saga_ships_two_orders_and_refunds_the_third(tmp_path: pathlib.Path) -> None:
    out = run_example("examples.payments", tmp_path)
    assert "order-1: shipped" in out
    assert "order-2: shipped" in out
    assert "order-3: failed and compensated (gadget: 1 left, 4 asked)" in out
    ledger = [line.split()[0] for line in out.splitlines() if "applied once" in line]
    assert sorted(ledger) == sorted(
        ["charge", "charge", "charge", "reserve", "reserve", "ship", "ship", "refund"]
    )


def test_the_readme_agents_need_none_of_the_llm_extras() -> None:
    # pydantic-ai and openai made unimportable, as on a machine without the extras
    script = (
        "import sys; sys.modules['pydantic_ai'] = sys.modules['openai'] = None; "
        "from actorflow.server import load_actors; "
        "print(sorted(c.__name__ for c in load_actors('examples.agents')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['Checkout',", "'Researcher']"]


def test_actorflow_serve_loads_the_llm_examples() -> None:
    from actorflow.server import load_actors

    assert [c.__name__ for c in load_actors("examples.pydantic_agent")] == ["Concierge"]
    assert [c.__name__ for c in load_actors("examples.openai_agent")] == ["OpenAIConcierge"]
