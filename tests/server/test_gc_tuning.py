"""`actorflow serve` tunes CPython's garbage collector (`actorflow.server._memory.tune_gc`):
the youngest generation is collected every ``--gc-threshold`` allocations instead of 700,
and what is alive once the runtime has started is frozen out of later collections."""

from __future__ import annotations

import gc
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import actorflow.cli
from actorflow.server import ServeConfig, _memory
from tests.server.processes import served


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()


@pytest.mark.usefixtures("restored_gc")
def test_the_threshold_is_set_and_the_living_objects_are_frozen() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    _memory.tune_gc(12_345)
    assert gc.get_threshold() == (12_345, 10, 10)
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restored_gc")
def test_zero_keeps_pythons_own_threshold() -> None:
    gc.set_threshold(700, 10, 10)
    _memory.tune_gc(0)
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize(
    ("arguments", "expected"), [([], _memory.GC_THRESHOLD), (["--gc-threshold", "0"], 0)]
)
def test_serve_takes_the_threshold_from_its_flag(
    monkeypatch: pytest.MonkeyPatch, arguments: list[str], expected: int
) -> None:
    seen: list[ServeConfig] = []

    def run(config: ServeConfig) -> Any:
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(actorflow.cli, "_run", run)
    result = CliRunner().invoke(actorflow.cli.main, ["serve", "examples.agents", *arguments])
    assert result.exit_code == 0, result.output
    assert [config.gc_threshold for config in seen] == [expected]


@pytest.mark.parametrize(
    ("arguments", "threshold"), [([], _memory.GC_THRESHOLD), (["--gc-threshold", "0"], None)]
)
def test_a_served_process_runs_with_the_threshold_and_frozen_objects(
    tmp_path: pathlib.Path, arguments: list[str], threshold: int | None
) -> None:
    if threshold is None:  # Python's own, as a fresh interpreter has it
        threshold = int(
            subprocess.check_output(
                [sys.executable, "-c", "import gc; print(gc.get_threshold()[0])"], text=True
            )
        )
    with served(tmp_path, *arguments, app="tests.server.gc_app") as server:
        answer = httpx.post(
            f"{server.url}/v1/actors/Collector/c/messages/settings?wait=10", json={}, timeout=20
        )
    assert answer.status_code == 200, answer.text
    got_threshold, frozen = answer.json()["result"]
    assert got_threshold == threshold
    assert frozen > 0
