"""The benchmarks' own rules and logic: public API only, and how `compare` matches and
summarises runs. Nothing here is timed (timings live only in benchmarks/)."""

from __future__ import annotations

import ast
import pathlib

import pytest

from benchmarks._compare import Figure, figures, number, only_one_side, rows

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: The one private import, said so where it is made: the journal suite's raw-sqlite3
#: ceilings write the store's own file format with its own pragmas.
PRIVATE_ON_PURPOSE = {"journal.py: journal._sqlite_schema"}


def test_benchmarks_use_only_the_public_api() -> None:
    offenders = []
    for path in (ROOT / "benchmarks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            else:
                continue
            offenders += [
                f"{path.name}: {module}"
                for module in modules
                if module.split(".")[0] in {"actorflow", "journal"} and "._" in module
            ]
    assert set(offenders) <= PRIVATE_ON_PURPOSE, (
        f"benchmarks/ must use public names only: {offenders}"
    )


def run(*results: dict[str, object]) -> dict[str, dict[str, object]]:
    """One suite run's results by row, as `compare` reads them from its JSON."""
    return rows({"results": list(results)})


def test_rows_are_named_by_scenario_and_setup_and_repeats_kept_apart() -> None:
    found = run(
        {"scenario": "steps", "durability": "full", "actors": 1, "per_s": 10.0},
        {"scenario": "steps", "durability": "full", "actors": 100, "per_s": 20.0},
        {"scenario": "steps", "durability": "full", "actors": 100, "per_s": 30.0},
        {"scenario": "long-lived", "measure": "journal bytes", "last": 5},
    )
    assert list(found) == [
        "steps durability=full actors=1",
        "steps durability=full actors=100",
        "steps durability=full actors=100 #2",
        "long-lived measure=journal bytes",
    ]


def test_figures_compare_numbers_that_moved_and_list_the_rest_apart() -> None:
    def steps(per_s: float, commits: int) -> dict[str, object]:
        return {
            "scenario": "steps",
            "actors": 1,
            "steps": 500,
            "per_s": per_s,
            "commits": commits,
            "stopped": False,
            "repeats": 3,
            "series": [[1, 2]],
        }

    base = [run(steps(100.0, 504)), run(steps(110.0, 504))]
    new = [run(steps(90.0, 504)), run(steps(99.0, 504))]
    moved, same = figures(base, new)
    assert [(f.row, f.name) for f in moved] == [("steps actors=1", "per_s")]
    assert moved[0].ratio == pytest.approx(94.5 / 105.0)
    assert same == {"steps actors=1": {"steps": 500, "commits": 504}}


def test_a_row_only_one_side_reported_is_listed_not_compared() -> None:
    base = [run({"scenario": "steps", "per_s": 1.0}, {"scenario": "gone", "per_s": 1.0})]
    new = [run({"scenario": "steps", "per_s": 2.0}, {"scenario": "added", "per_s": 1.0})]
    moved, _ = figures(base, new)
    assert [f.row for f in moved] == ["steps"]
    assert only_one_side(base, new) == (["gone"], ["added"])


def test_spread_needs_two_rounds_and_ratio_a_nonzero_base() -> None:
    assert Figure("r", "f", [1.0], [2.0]).spread is None
    assert Figure("r", "f", [1.0, 3.0], [2.0, 2.0]).spread == pytest.approx(1.0)
    assert Figure("r", "f", [0.0], [2.0]).ratio is None


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (52345.6, "52,346"),
        (504, "504"),
        (12.345, "12.35"),
        (0.0123, "0.0123"),
        (0.00081, "0.00081"),
    ],
)
def test_numbers_are_shown_readably_at_any_size(value: float, shown: str) -> None:
    assert number(value) == shown
