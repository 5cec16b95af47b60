"""Canonical fingerprints and results: a journal written by one process replays in
another whose hash seed differs, so that equal sets of strings iterate in another order."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def child(db: pathlib.Path, phase: str, seed: int) -> list[dict[str, object]]:
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.runtime.hashseed_child", str(db), phase],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_a_set_argument_and_result_replay_in_a_process_with_another_hash_seed(
    tmp_path: pathlib.Path,
) -> None:
    db = tmp_path / "journal.db"
    [live] = child(db, "live", seed=1)
    replayed = child(db, "replay", seed=2)
    # The test means something only if the two processes iterate the set differently.
    assert replayed[0]["order"] != live["order"]
    assert replayed[-1]["error"] is None
    assert replayed[-1]["state"] == "idle"
    assert replayed[-1]["outcome"] == sorted([w.upper() for w in live["order"]] + ["DONE"])  # type: ignore[union-attr]
