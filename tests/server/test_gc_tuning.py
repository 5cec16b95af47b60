"""`actorflow serve` tunes CPython's garbage collector (`actorflow.server._memory.tune_gc`):
the youngest generation is collected every ``--gc-threshold`` allocations instead of 700,
and what is alive once the runtime has started is frozen out of later collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

import actorflow.cli
from actorflow.server import ServeConfig, _memory


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
