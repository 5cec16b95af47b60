"""The golden journals (exported by `tests/golden/make.py` from real runs of the example
agents, each with a turn in flight) replay against the current example agents, and each
deliberately divergent variant is reported where it diverges: the issue's "actorflow
replay finds a step renamed, a step added without a patch, and steps reordered, and passes
when the change is behind a patch", through the library call and the CLI."""

from __future__ import annotations

import json
import pathlib

import anyio
import pytest
from click.testing import CliRunner

from actorflow.cli import main
from actorflow.testing import ReplayDivergenceError, replay
from examples import agents
from tests.golden import make, variants

HERE = pathlib.Path(__file__).resolve().parent
RESEARCHER = str(HERE / "researcher-waiting-for-approval.jsonl")
CHECKOUT = str(HERE / "checkout-before-shipping.jsonl")

#: variant -> (actor, position, recorded, new, export file) of its one divergence.
EXPECTED = {
    "RENAMED": (
        "Researcher/job-1",
        6,
        "run step 'summarise' (step id 5)",
        "run step 'summarize' (step id 5)",
        RESEARCHER,
    ),
    "ADDED": (
        "Researcher/job-1",
        6,
        "run step 'summarise' (step id 5)",
        "run step 'rank' (step id 5)",
        RESEARCHER,
    ),
    "REORDERED": (
        "Checkout/order-1",
        2,
        "run step 'charge_card' (step id 1)",
        "run step 'reserve_stock' (step id 1)",
        CHECKOUT,
    ),
}


def test_every_golden_journal_replays_on_the_current_example_agents() -> None:
    report = replay(agents, exports=[HERE])
    assert (report.checked, report.diverged, report.unchecked) == (2, [], [])
    report.assert_compatible()


def test_a_change_behind_a_patch_passes() -> None:
    report = replay(variants.PATCHED, exports=[HERE])
    assert report.ok
    assert report.checked == 2


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_each_divergent_variant_is_reported_where_it_diverges(variant: str) -> None:
    report = replay(getattr(variants, variant), exports=[HERE])
    assert report.checked == 2
    [found] = report.diverged
    assert (found.actor, found.position, found.recorded, found.new, found.source) == (
        EXPECTED[variant]
    )
    assert found.diff == f"- {found.recorded} | + {found.new}"
    with pytest.raises(ReplayDivergenceError, match=f"DIVERGES {found.actor}"):
        report.assert_compatible()


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), prog_name="actorflow")
    return result.exit_code, result.output


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_the_cli_reports_each_divergence_from_exports(variant: str) -> None:
    code, out = invoke("replay", f"tests.golden.variants:{variant}", "--from-export", str(HERE))
    actor, position, recorded, new, source = EXPECTED[variant]
    assert code == 1, out
    assert f"DIVERGES {actor} " in out
    assert f"at journal position {position} in {source}" in out
    assert f"  - {recorded} | + {new}" in out


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A SQLite journal written by a real run of the example agents, turns in flight."""
    scratch = tmp_path_factory.mktemp("golden")
    path = scratch / "journal.db"
    anyio.run(make.write_journal, path, scratch)
    return path


def test_the_cli_passes_the_current_agents_and_a_patched_change_on_a_real_journal(
    journal: pathlib.Path,
) -> None:
    for app in ("examples.agents", "tests.golden.variants:PATCHED"):
        code, out = invoke("replay", app, "--journal", str(journal))
        assert code == 0, out
        assert out.endswith(
            "unfinished turns checked: 2 (would diverge: 0, compatible: 2); not checked: 0; "
            "skipped, with no unfinished turn: 0\n"
        )


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_the_cli_json_reports_each_divergence_on_a_real_journal(
    variant: str, journal: pathlib.Path
) -> None:
    code, out = invoke(
        "replay", f"tests.golden.variants:{variant}", "--journal", str(journal), "--json"
    )
    assert code == 1
    report = json.loads(out)
    actor, position, recorded, new, _ = EXPECTED[variant]
    assert (report["ok"], report["checked"], report["diverged"]) == (False, 2, 1)
    [found] = report["divergences"]
    assert (found["actor"], found["position"], found["recorded"], found["new"]) == (
        actor,
        position,
        recorded,
        new,
    )
    assert found["diff"] == f"- {recorded} | + {new}"
    assert found["source"] == str(journal)


def test_filters_and_usage_errors(journal: pathlib.Path) -> None:
    code, out = invoke(
        "replay", "tests.golden.variants:RENAMED", "--journal", str(journal), "--type", "Checkout"
    )
    assert code == 0
    assert "unfinished turns checked: 1 " in out
    code, out = invoke(
        "replay", "tests.golden.variants:RENAMED", "--journal", str(journal),
        "--actor", "Researcher/job-1",
    )  # fmt: skip
    assert code == 1
    assert "unfinished turns checked: 1 (would diverge: 1," in out
    code, out = invoke("replay", "examples.agents", "--journal", str(journal), "--actor", "A/b")
    assert code == 0
    assert "NOT CHECKED A/b: no journal of it was given" in out
    assert invoke("replay", "no_such_module_here", "--journal", str(journal))[0] == 2
    assert invoke("replay", "examples.agents")[0] == 2  # no journal given
    assert invoke("replay", "examples.agents", "--journal", str(HERE / "nope.db"))[0] == 2
    assert invoke("replay", "examples.agents", "--from-export", str(HERE / "make.py"))[0] == 2


def test_an_actor_type_missing_from_the_app_fails_only_a_strict_check() -> None:
    report = replay([agents.Researcher], exports=[HERE])
    assert (report.checked, report.ok) == (1, True)
    [skipped] = report.unchecked
    assert (skipped.actor, skipped.source) == ("Checkout/order-1", CHECKOUT)
    report.assert_compatible()
    with pytest.raises(ReplayDivergenceError, match="NOT CHECKED Checkout/order-1"):
        report.assert_compatible(strict=True)
    app = "examples.research:Researcher"
    code, out = invoke("replay", app, "--from-export", str(HERE))
    assert code == 0
    assert f"NOT CHECKED Checkout/order-1 in {CHECKOUT}: it has an unfinished turn" in out
    assert invoke("replay", app, "--from-export", str(HERE), "--strict")[0] == 1
