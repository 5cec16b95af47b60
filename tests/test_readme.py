"""The README's examples run as printed, and do what the README says they do."""

from __future__ import annotations

import pathlib
import re
import signal
import sqlite3
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECEIPT = re.compile(r"charge 1999 with key [0-9a-f]{16}:Checkout/order-7/t1/s1\n")


def agent_script(tmp_path: pathlib.Path) -> pathlib.Path:
    readme = (ROOT / "README.md").read_text()
    script = tmp_path / "agent.py"
    script.write_text(re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0])
    return script


def run(script: pathlib.Path) -> str:
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=script.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def charges(db: pathlib.Path) -> int:
    """How many charge steps the journal holds for the order (read from the file; 0 while
    the file is still being created)."""
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'records'").fetchone():
            return 0
        rows = conn.execute(
            "SELECT data FROM records JOIN streams s ON s.id = stream_id "
            "WHERE s.name = 'actor/Checkout/order-7' AND type = 'step'"
        ).fetchall()
    return sum(b"charge" in data for (data,) in rows)


def ended(db: pathlib.Path) -> bool:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (count,) = conn.execute("SELECT count(*) FROM records WHERE type = 'turn_done'").fetchone()
    return bool(count)


def test_readme_agent_example_runs(tmp_path: pathlib.Path) -> None:
    assert RECEIPT.fullmatch(run(agent_script(tmp_path)))


def test_readme_agent_example_run_twice_charges_once(tmp_path: pathlib.Path) -> None:
    script = agent_script(tmp_path)
    first = run(script)
    assert run(script) == first  # the same receipt, from the same invocation
    assert charges(tmp_path / "agents.db") == 1


def test_readme_agent_example_killed_mid_turn_resumes_and_charges_once(
    tmp_path: pathlib.Path,
) -> None:
    script = agent_script(tmp_path)
    child = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.DEVNULL)
    db = tmp_path / "agents.db"
    give_up = time.monotonic() + 30
    # The journal is read from outside; its file appears and fills as the child runs.
    while not charges(db):
        assert child.poll() is None, "the example ended before it was killed"
        assert time.monotonic() < give_up, "the charge step never reached the journal"
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert not ended(db), "killed too late: the turn had already ended"
    assert RECEIPT.fullmatch(run(script))  # resumed: the receipt of the journaled charge
    assert charges(db) == 1


def test_readme_journal_example_runs(tmp_path: pathlib.Path) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README lost its Python example"
    script = tmp_path / "example.py"
    script.write_text(blocks[1])
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "expected the stream at position 0, but it is at position 1" in done.stdout
    assert "1 StepCompleted(step='plan', result='3 steps')" in done.stdout
