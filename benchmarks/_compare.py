"""``python -m benchmarks compare SUITE [--base REV] [--rounds N] [--quick] [--json PATH]``.

Measures the working tree's ``actorflow`` and ``journal`` against those of git revision REV,
in the same time window, so that a claim such as "the runtime stays within 10% of the
previous commit" can be checked on a shared, noisy machine, where figures from different
hours cannot be compared.

- **What is compared.** REV is checked out into a temporary ``git worktree`` (removed
  afterwards). Both sides run the *working tree's* benchmarks (copied once, when the
  command starts): the instrument stays the same and only what it measures changes, so a
  scenario means the same work on both sides. Each run is a subprocess,
  ``python -m benchmarks SUITE --json PATH``, whose ``PYTHONPATH`` puts that copy first and
  the measured tree second; the command checks (and prints, once per side) that
  ``actorflow`` and ``journal`` really come from the measured tree and not from the
  editable install. Both sides use this interpreter and its installed dependencies.
- **The default REV.** ``HEAD`` when the working tree has uncommitted changes (what do my
  edits do?); otherwise the merge-base with ``main`` (what does this branch do?); and
  ``HEAD~1`` when that is ``HEAD`` itself, as on ``main`` (what did the last commit do?).
  ``--base HEAD`` on a clean tree compares the tree with itself: the ratios then show
  how much this machine's noise alone moves each figure.
- **How.** N rounds (default 3); each round runs both sides, alternating which goes first
  so that a drift in the machine's load favours neither. Per scenario and figure it prints
  each side's median over the rounds, new / base, and the spread (the larger side's
  (max - min) / median), which says how big a ratio the noise alone can explain.
  Scenarios are matched by name and setup (`SETUP` fields); a scenario only one side
  reported is listed, not compared. Figures equal in every run on both sides (workload
  sizes, exact counts such as the journal's bytes) are listed apart, without a ratio.

Every run has a time limit (`RUN_LIMIT`); a run that fails or hangs stops the command with
the tail of its output, and the worktree is removed whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks._report import Column, Result, table

#: The working tree that runs this command (its benchmarks/ is the instrument).
ROOT = Path(__file__).resolve().parents[1]
#: Fields that, with the scenario's name, say which row of a suite a result is.
SETUP = ("store", "durability", "actors", "writers", "workers", "measure")
#: Fields never compared: bookkeeping, not figures.
NOT_FIGURES = frozenset({"repeats"})
#: Seconds a suite run may take before it counts as hung: (full run, --quick run).
RUN_LIMIT = (1800.0, 600.0)
#: Lines of a failed run's output quoted in the error.
TAIL = 40


class CompareError(RuntimeError):
    """The comparison could not be made (bad revision, a run failed or hung, ...)."""


# -- the command line ---------------------------------------------------------------------


def parse(argv: Sequence[str], suites: Sequence[str]) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks compare",
        description="Run SUITE for the working tree and for git revision REV, alternately, "
        "and print each figure's median on both sides and their ratio.",
    )
    parser.add_argument("suite", choices=sorted(suites), help="which suite to run")
    parser.add_argument(
        "--base",
        metavar="REV",
        help="the git revision to compare with (default: HEAD if the tree has uncommitted "
        "changes, else the merge-base with main, else HEAD~1)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, metavar="N", help="runs of each side (default: 3)"
    )
    parser.add_argument("--quick", action="store_true", help="run the suite with --quick")
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the comparison as JSON to PATH"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    return args


def main(argv: Sequence[str], suites: Sequence[str]) -> None:
    """Run the comparison the command line asks for and print it."""
    args = parse(argv, suites)
    try:
        comparison = compare(args.suite, args.base, args.rounds, args.quick)
    except CompareError as exc:
        sys.exit(f"compare: {exc}")
    print(render(comparison))
    if args.json is not None:
        args.json.write_text(json.dumps(comparison.as_json(), indent=2) + "\n", encoding="utf-8")
        print(f"\ncomparison written to {args.json}")


# -- git ----------------------------------------------------------------------------------


def git(*args: str) -> str:
    """Run git in this working tree; its output, stripped. A failure is a `CompareError`."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise CompareError(f"`git {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout.strip()


def default_base() -> tuple[str, str]:
    """The revision to compare with when none is given, and why it was chosen."""
    if git("status", "--porcelain"):
        return "HEAD", "the working tree has uncommitted changes"
    try:
        fork = git("merge-base", "HEAD", "main")
    except CompareError:
        return "HEAD~1", "the tree is clean and there is no main branch to fork from"
    if fork != git("rev-parse", "HEAD"):
        return fork, "the merge-base with main"
    return "HEAD~1", "the tree is clean and HEAD adds nothing to main"


@dataclasses.dataclass(frozen=True)
class Revision:
    """A resolved commit: its hash and one-line description."""

    commit: str
    described: str


def resolve(rev: str) -> Revision:
    """``rev`` as a commit; a `CompareError` naming it if git does not know it."""
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except CompareError:
        raise CompareError(
            f"git knows no commit {rev!r} in {ROOT}; give --base a branch, tag or commit"
        ) from None
    return Revision(commit, git("log", "-1", "--format=%h %s", commit))


@contextlib.contextmanager
def checked_out(commit: str, folder: Path) -> Iterator[Path]:
    """``commit`` in a temporary detached worktree under ``folder``, removed afterwards."""
    tree = folder / "base"
    git("worktree", "add", "--detach", "--quiet", str(tree), commit)
    try:
        yield tree
    finally:
        try:
            git("worktree", "remove", "--force", str(tree))
        except CompareError:
            shutil.rmtree(tree, ignore_errors=True)
            git("worktree", "prune")


# -- running one side ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Side:
    """One side of the comparison: the tree measured and what it is."""

    name: str
    tree: Path
    described: str

    def environment(self, instrument: Path) -> dict[str, str]:
        """This process's environment, with the instrument and the tree on PYTHONPATH."""
        return {**os.environ, "PYTHONPATH": os.pathsep.join([str(instrument), str(self.tree)])}


@dataclasses.dataclass(frozen=True)
class Run:
    """What every run of the comparison shares: the instrument, the suite, where to write."""

    instrument: Path
    suite: str
    quick: bool
    folder: Path


PROBE = (
    "import json, actorflow, journal, benchmarks; print(json.dumps({m.__name__: m.__file__ "
    "for m in (actorflow, journal, benchmarks)}))"
)


def prove_imports(side: Side, instrument: Path) -> dict[str, str]:
    """Where ``side``'s runs import actorflow, journal and benchmarks from (announced once);
    a `CompareError` unless from the measured tree (and the instrument)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=instrument,
        env=side.environment(instrument),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise CompareError(f"the {side.name} side cannot import actorflow: {done.stderr}")
    found: dict[str, str] = json.loads(done.stdout)
    wanted = {"actorflow": side.tree, "journal": side.tree, "benchmarks": instrument}
    for module, folder in wanted.items():
        if not Path(found[module]).resolve().is_relative_to(folder.resolve()):
            raise CompareError(
                f"the {side.name} side imports {module} from {found[module]}, not from "
                f"{folder}: the tree has no {module}, or an installed (non-editable) copy "
                f"shadows it; run from a venv with an editable install"
            )
    announce(f"{side.name}: {side.described}")
    for module, path in found.items():
        announce(f"  {module} from {path}")
    return found


def run_suite(side: Side, run: Run, output: Path) -> dict[str, Any]:
    """Run the suite once for ``side``, writing its JSON to ``output``; the document."""
    suite, quick = run.suite, run.quick
    command = [sys.executable, "-m", "benchmarks", suite, "--json", str(output)]
    if quick:
        command.append("--quick")
    log = output.with_suffix(".log")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=run.instrument,
            env=side.environment(run.instrument),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its servers too are stopped if it has to be killed
        )
        try:
            code = proc.wait(timeout=RUN_LIMIT[quick])
        except subprocess.TimeoutExpired:
            stop_group(proc)
            raise CompareError(
                f"the {side.name} side's `{suite}` run hung: not done after "
                f"{RUN_LIMIT[quick]:g}s\n{tail(log)}"
            ) from None
        except BaseException:
            stop_group(proc)
            raise
    if code != 0:
        raise CompareError(
            f"the {side.name} side's `{suite}` run failed (exit {code}):\n{tail(log)}"
        )
    document: dict[str, Any] = json.loads(output.read_text(encoding="utf-8"))
    return document


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process group ``proc`` leads (it and whatever it started) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def tail(log: Path) -> str:
    """The last `TAIL` lines of a run's output, indented."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-TAIL:]
    return "\n".join(f"  | {line}" for line in lines)


# -- matching and summarising -------------------------------------------------------------


def label(result: Result) -> str:
    """Which row ``result`` is: its scenario and its `SETUP` fields."""
    setup = " ".join(f"{key}={result[key]}" for key in SETUP if key in result)
    return f"{result['scenario']} {setup}".strip()


def rows(document: Mapping[str, Any]) -> dict[str, Result]:
    """A run's results by `label` (a repeated label gets ``#2``, ``#3``, ...)."""
    found: dict[str, Result] = {}
    for result in document["results"]:
        name = first = label(result)
        n = 1
        while name in found:
            n += 1
            name = f"{first} #{n}"
        found[name] = result
    return found


def is_figure(value: Any) -> bool:
    """A number that can be compared (not a flag, not missing, finite)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class Figure:
    """One figure of one row, over every run of both sides."""

    row: str
    name: str
    base: list[float]
    new: list[float]

    @property
    def ratio(self) -> float | None:
        """new / base, of the medians (None when the base median is 0)."""
        base = statistics.median(self.base)
        return statistics.median(self.new) / base if base else None

    @property
    def spread(self) -> float | None:
        """The larger side's (max - min) / median: how far noise alone moved this figure
        (None from a single round, which cannot tell)."""
        spreads = [
            (max(runs) - min(runs)) / abs(statistics.median(runs))
            for runs in (self.base, self.new)
            if len(runs) > 1 and statistics.median(runs)
        ]
        return max(spreads) if spreads else None

    def as_json(self) -> Result:
        """The figure as a JSON object."""
        return {
            "row": self.row,
            "figure": self.name,
            "base": statistics.median(self.base),
            "new": statistics.median(self.new),
            "ratio": self.ratio,
            "spread": self.spread,
            "base_runs": self.base,
            "new_runs": self.new,
        }


def figures(
    base_runs: Sequence[dict[str, Result]], new_runs: Sequence[dict[str, Result]]
) -> tuple[list[Figure], dict[str, dict[str, float]]]:
    """Every figure of every row that every run reported, in the new side's order; and,
    apart, those that were the same in every run (workload sizes, deterministic counts)."""
    every = [*base_runs, *new_runs]
    found = []
    same: dict[str, dict[str, float]] = {}
    for row in (name for name in new_runs[0] if all(name in run for run in every)):
        for field in new_runs[0][row]:
            values = [run[row].get(field) for run in every]
            if field in SETUP or field in NOT_FIGURES or not all(map(is_figure, values)):
                continue
            if len(set(values)) == 1:
                same.setdefault(row, {})[field] = values[0]
            else:
                found.append(Figure(row, field, values[: len(base_runs)], values[len(base_runs) :]))
    return found, same


def only_one_side(
    base_runs: Sequence[dict[str, Result]], new_runs: Sequence[dict[str, Result]]
) -> tuple[list[str], list[str]]:
    """Rows that only the base side, and only the new side, reported."""
    base = set().union(*base_runs)
    new = set().union(*new_runs)
    return sorted(base - new), sorted(new - base)


# -- the comparison -----------------------------------------------------------------------


@dataclasses.dataclass
class Comparison:
    """What the command measured, ready to print and to save."""

    suite: str
    quick: bool
    rounds: int
    base: Side
    new: Side
    why: str
    imports: dict[str, dict[str, str]]
    figures: list[Figure]
    same: dict[str, dict[str, float]]
    only_base: list[str]
    only_new: list[str]
    started: str
    seconds: float

    def as_json(self) -> Result:
        """The comparison as one JSON object."""
        return {
            "suite": self.suite,
            "quick": self.quick,
            "rounds": self.rounds,
            "base": {"described": self.base.described, "chosen": self.why},
            "new": {"described": self.new.described},
            "imports": self.imports,
            "started": self.started,
            "seconds": round(self.seconds, 1),
            "figures": [figure.as_json() for figure in self.figures],
            "same_in_every_run": self.same,
            "only_base": self.only_base,
            "only_new": self.only_new,
        }


def compare(suite: str, base_rev: str | None, rounds: int, quick: bool) -> Comparison:
    """Run ``suite`` ``rounds`` times on each side, alternating; match and summarise."""
    why = "given with --base"
    if base_rev is None:
        base_rev, why = default_base()
    base_commit = resolve(base_rev)
    head = resolve("HEAD")
    dirty = " with uncommitted changes" if git("status", "--porcelain") else ""
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="actorflow-compare-") as tmp:
        folder = Path(tmp)
        instrument = folder / "instrument"
        shutil.copytree(
            ROOT / "benchmarks",
            instrument / "benchmarks",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        with checked_out(base_commit.commit, folder) as tree:
            base = Side("base", tree, f"{base_rev} = {base_commit.described}")
            new = Side("new", ROOT, f"working tree at {head.described}{dirty}")
            imports = {side.name: prove_imports(side, instrument) for side in (base, new)}
            runs = alternate(base, new, Run(instrument, suite, quick, folder), rounds)
    differing, same = figures(runs[base.name], runs[new.name])
    only_base, only_new = only_one_side(runs[base.name], runs[new.name])
    return Comparison(
        suite,
        quick,
        rounds,
        base,
        new,
        why,
        imports,
        differing,
        same,
        only_base,
        only_new,
        started,
        time.perf_counter() - clock,
    )


def alternate(base: Side, new: Side, run: Run, rounds: int) -> dict[str, list[dict[str, Result]]]:
    """Each side's results by row, one dict a round; the side going first alternates."""
    runs: dict[str, list[dict[str, Result]]] = {base.name: [], new.name: []}
    for n in range(1, rounds + 1):
        for side in (new, base) if n % 2 else (base, new):
            announce(f"round {n}/{rounds}: {run.suite} for the {side.name} side ...")
            began = time.perf_counter()
            output = run.folder / f"{side.name}-{n}.json"
            document = run_suite(side, run, output)
            runs[side.name].append(rows(document))
            announce(f"  done in {time.perf_counter() - began:.1f}s")
    return runs


def announce(line: str) -> None:
    """A progress line on stderr (the comparison itself goes to stdout)."""
    print(f"compare: {line}", file=sys.stderr, flush=True)


# -- printing -----------------------------------------------------------------------------


def number(value: float) -> str:
    """A figure of any size, readably: ``52,345``, ``12.35``, ``0.00081``."""
    if isinstance(value, int) or value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.2g}" if abs(value) < 0.001 else f"{value:.3g}"


def times(value: float) -> str:
    """A ratio: ``1.04``."""
    return f"{value:.2f}"


def percent(value: float) -> str:
    """A spread: ``7%``."""
    return f"{value * 100:.0f}%"


COLUMNS = [
    Column("row", "row", numeric=False),
    Column("figure", "figure", numeric=False),
    Column("base", "base", number),
    Column("new", "new", number),
    Column("new/base", "ratio", times),
    Column("spread", "spread", percent),
]


def render(comparison: Comparison) -> str:
    """The comparison as text: what was compared, then one line per figure."""
    c = comparison
    plural = "s" if c.rounds > 1 else ""
    parts = [
        f"compare {c.suite}{' --quick' if c.quick else ''}: median of {c.rounds} run{plural} "
        f"a side, alternating, from {c.started} for {c.seconds:.0f}s",
        f"base: {c.base.described} ({c.why})",
        f"new:  {c.new.described}",
        "both sides ran the working tree's benchmarks; actorflow imported from "
        f"{c.imports['base']['actorflow']} (base) and {c.imports['new']['actorflow']} (new)",
        "spread: the larger side's (max - min) / median over its runs; a ratio within it is noise",
        "",
        table(COLUMNS, [figure.as_json() for figure in c.figures]),
    ]
    if c.same:
        parts += ["", "the same in every run on both sides (workload sizes, exact counts):"]
        parts += [
            f"  {row}: " + ", ".join(f"{name} {number(value)}" for name, value in fields.items())
            for row, fields in c.same.items()
        ]
    if c.only_base or c.only_new:
        parts.append("")
        parts += [f"only the base side reported: {row}" for row in c.only_base]
        parts += [f"only the new side reported: {row}" for row in c.only_new]
    return "\n".join(parts)
