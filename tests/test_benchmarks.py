"""The benchmarks' own rules and logic: public API only, and how `compare` matches and
summarises runs. Nothing here is timed (timings live only in benchmarks/)."""

from __future__ import annotations

import ast
import asyncio
import pathlib

import asyncpg
import pytest

from benchmarks._cluster_ceiling import CeilingRun, Shape, ceiling, plans
from benchmarks._cluster_handoff import Line, first_elsewhere, holders, percentile
from benchmarks._compare import Figure, figures, number, only_one_side, rows
from journal import PostgresStore

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: The private imports, said so where they are made: the journal suite's raw-sqlite3
#: ceilings write the store's own file format with its own pragmas, and the cluster
#: suite's raw asyncpg ceiling runs the PostgreSQL store's own statements.
PRIVATE_ON_PURPOSE = {
    "journal.py: journal._sqlite_schema",
    "_cluster_ceiling.py: journal._postgres_schema",
}


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


# -- the cluster suite ------------------------------------------------------------------------


def test_the_ceiling_deals_the_journals_totals_exactly_among_its_writers() -> None:
    shape = Shape(transactions=7, records=30, stream_rows=12)
    dealt = plans(shape, 3)
    assert sum(len(plan.streams) for plan in dealt) == 7
    assert sum(sum(plan.records) for plan in dealt) == 30
    assert sum(sum(plan.streams) for plan in dealt) == 12
    for plan in dealt:  # each transaction: the means, rounded, records >= streams >= 1
        assert all(1 <= s <= r for s, r in zip(plan.streams, plan.records, strict=True))
        assert max(plan.records) - min(plan.records) <= 1


def test_the_ceiling_commits_the_shape_it_is_given(postgres_dsn: str) -> None:
    shape = Shape(transactions=9, records=40, stream_rows=15)
    names = [f"actor/Walker/agent-{i:04d}" for i in range(10)]

    async def run() -> tuple[CeilingRun, list[tuple[int, ...]]]:
        store = await PostgresStore.open(postgres_dsn)  # the journal's tables, empty
        await store.close()
        done = await ceiling(postgres_dsn, shape, 2, names)
        conn = await asyncpg.connect(postgres_dsn)
        try:
            rows = await conn.fetch(
                "SELECT count(*), count(DISTINCT r.xmin::text), "
                "count(DISTINCT (r.xmin::text, r.stream_id)), "
                "(SELECT sum(last_position) FROM journal_streams)::bigint, "
                "(SELECT next_global FROM journal_meta), "
                "(SELECT count(*) FROM journal_streams s WHERE s.last_position <> "
                "(SELECT count(*) FROM journal_records x WHERE x.stream_id = s.id)) "
                "FROM journal_records r"
            )
        finally:
            await conn.close()
        return done, [tuple(row) for row in rows]

    done, rows = asyncio.run(run())
    # every record, in as many transactions, each stream row updated once per transaction
    # that wrote it, positions gapless, the global position advanced past every record
    assert rows == [(40, 9, 15, 40, 41, 0)]
    assert (done.transactions, done.records, done.stream_rows) == (9, 40, 15)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0


def test_a_moved_agents_next_step_is_the_first_another_process_ran_after_the_signal() -> None:
    lines = [
        Line("a", 4, pid=1, at=9.0),
        Line("a", 5, pid=1, at=10.5),  # the stopped worker, after the signal
        Line("b", 7, pid=2, at=9.5),  # the other worker, before it
        Line("a", 6, pid=2, at=11.2),
        Line("a", 7, pid=2, at=11.3),
        Line("b", 8, pid=2, at=11.0),
    ]
    assert holders(lines[:3]) == {"a": 1, "b": 2}
    firsts = first_elsewhere(lines, {"a"}, pid=1, t0=10.0)
    assert firsts == {"a": Line("a", 6, pid=2, at=11.2)}
