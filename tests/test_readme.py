"""The README's example runs as printed."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_agent_example_runs(tmp_path: pathlib.Path) -> None:
    readme = (ROOT / "README.md").read_text()
    script = tmp_path / "agent.py"
    script.write_text(re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0])
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "charge 1999 with key Checkout/order-7/t1/s1\n"


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
