"""``python -m benchmarks SUITE [--quick] [--json PATH]``: run one benchmark suite;
``python -m benchmarks compare SUITE [--base REV] ...``: compare two revisions with it
(see `benchmarks._compare`).

A suite is a module of this package with a ``run(*, quick, repeats)`` function returning a
`SuiteReport`; list it in `SUITES` to make it runnable here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import _compare
from benchmarks._report import SuiteReport, render, write_json

#: Suite name -> the module that runs it.
SUITES = {
    "journal": "benchmarks.journal",
    "runtime": "benchmarks.runtime",
    "serve": "benchmarks.serve",
    "replay": "benchmarks.replay",
    "cluster": "benchmarks.cluster",
    "streams": "benchmarks.streams",
    "values": "benchmarks.values",
}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run one of actorflow's benchmark suites and print its results table.",
        epilog="`python -m benchmarks compare SUITE --help`: compare the working tree with a "
        "git revision, running SUITE for both alternately.",
    )
    parser.add_argument("suite", choices=sorted(SUITES), help="which suite to run")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer records and one run per measurement: a smoke test, not a measurement",
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="runs per measurement, of which the median is reported (default: 3, 1 with --quick)",
    )
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the suite named on the command line, print its table, save its JSON (or run
    ``compare``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:
        _compare.main(argv[1:], list(SUITES))
        return
    args = parse(argv)
    repeats = args.repeat or (1 if args.quick else 3)
    suite = importlib.import_module(SUITES[args.suite])
    report: SuiteReport = suite.run(quick=args.quick, repeats=repeats)
    print(render(report))
    if args.json is not None:
        write_json(report, args.json)
        print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    main()
