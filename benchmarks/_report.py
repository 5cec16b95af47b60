"""What every suite shares: the progress line, the results table, targets, the JSON file,
the event loop and the median."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

Result = dict[str, Any]
T = TypeVar("T")


# -- formatting cells ---------------------------------------------------------------------


def whole(value: float) -> str:
    """A count or a rate, rounded, with thousands separators: ``52,345``."""
    return f"{value:,.0f}"


def fraction(value: float) -> str:
    """A ratio with two decimals: ``0.43``."""
    return f"{value:.2f}"


def seconds(value: float) -> str:
    """A duration in seconds, to the millisecond: ``1.234``."""
    return f"{value:.3f}"


def one_decimal(value: float) -> str:
    """A mean with one decimal: ``99.9``."""
    return f"{value:,.1f}"


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a results table: which result key it shows and how."""

    header: str
    key: str
    format: Callable[[Any], str] = str
    numeric: bool = True

    def cell(self, result: Result) -> str:
        """The formatted value of this column in ``result``; ``-`` where it has none."""
        value = result.get(self.key)
        return "-" if value is None else self.format(value)


def table(columns: Sequence[Column], results: Sequence[Result]) -> str:
    """An aligned plain-text table: numbers right-aligned, text left-aligned."""
    rows = [[column.cell(result) for column in columns] for result in results]
    widths = [
        max(len(column.header), *(len(row[i]) for row in rows)) if rows else len(column.header)
        for i, column in enumerate(columns)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if column.numeric else cell.ljust(width)
            for cell, width, column in zip(cells, widths, columns, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line([c.header for c in columns]), rule, *(line(row) for row in rows)])


# -- targets ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    """A goal from an issue, checked against a measured figure: reported, never enforced."""

    name: str
    measured: float
    wanted: float
    format: Callable[[float], str] = whole

    @property
    def passed(self) -> bool:
        """True when the measured figure reaches the goal."""
        return self.measured >= self.wanted

    @property
    def verdict(self) -> str:
        """``pass`` or ``MISS``."""
        return "pass" if self.passed else "MISS"

    def describe(self) -> str:
        """``name: measured (want >= wanted)``."""
        return f"{self.name}: {self.format(self.measured)} (want >= {self.format(self.wanted)})"

    def as_json(self) -> Result:
        """The target as a JSON object."""
        return {
            "name": self.name,
            "measured": self.measured,
            "wanted": self.wanted,
            "passed": self.passed,
        }


@dataclasses.dataclass(frozen=True)
class AtMost(Target):
    """A target met by staying at or under the wanted figure (a duration)."""

    @property
    def passed(self) -> bool:
        """True when the measured figure stays within the goal."""
        return self.measured <= self.wanted

    def describe(self) -> str:
        """``name: measured (want <= wanted)``."""
        return f"{self.name}: {self.format(self.measured)} (want <= {self.format(self.wanted)})"

    def as_json(self) -> Result:
        """The target as a JSON object, saying which way it points."""
        return {**super().as_json(), "at_most": True}


# -- the report ---------------------------------------------------------------------------


@dataclasses.dataclass
class Section:
    """Results that need a table of their own (other columns than the suite's main table)."""

    title: str
    columns: Sequence[Column]
    results: list[Result]
    #: Lines printed under the title: what was measured and how.
    notes: Sequence[str] = ()


@dataclasses.dataclass
class SuiteReport:
    """Everything a suite measured, ready to print and to save."""

    suite: str
    quick: bool
    title: str
    columns: Sequence[Column]
    results: list[Result]
    targets: list[Target]
    #: Lines printed under the title: what was measured and how.
    notes: Sequence[str] = ()
    #: Lines printed under the table: figures quoted for comparison, not measured here.
    context: Sequence[str] = ()
    #: Extra top-level JSON fields describing the run (library versions, event loop, ...).
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Further tables, printed after the main one; their results join the JSON's.
    sections: Sequence[Section] = ()

    def all_results(self) -> list[Result]:
        """The main table's results, then every section's."""
        return [*self.results, *(r for section in self.sections for r in section.results)]


def render(report: SuiteReport) -> str:
    """The report as text: a heading, the results table, the quoted context, further
    sections' tables, and the targets section."""
    heading = f"{report.title}{' [--quick]' if report.quick else ''}"
    parts = [heading, *report.notes, "", table(report.columns, report.results)]
    if report.context:
        parts += ["", *report.context]
    for section in report.sections:
        parts += ["", section.title, *section.notes, "", table(section.columns, section.results)]
    if report.targets:
        width = max(len(target.describe()) for target in report.targets)
        parts += ["", "targets (from the issue; reported, not enforced):"]
        parts += [f"  {t.describe().ljust(width)}  {t.verdict}" for t in report.targets]
        if report.quick:
            parts.append("  (--quick runs are short and noisy; judge targets on a full run)")
    return "\n".join(parts)


def machine() -> Result:
    """What the numbers were measured on."""
    return {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "python_implementation": platform.python_implementation(),
    }


def write_json(report: SuiteReport, path: Path) -> None:
    """Save the report as one JSON object at ``path``."""
    document = {
        "suite": report.suite,
        "quick": report.quick,
        "python": platform.python_version(),
        **report.environment,
        "machine": machine(),
        "results": report.all_results(),
        "targets": [target.as_json() for target in report.targets],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


# -- running ------------------------------------------------------------------------------


def middle(values: Sequence[float]) -> float:
    """The median, taking the upper one of two middles so that it is a run that happened."""
    return sorted(values)[len(values) // 2]


def on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop, or on plain asyncio where uvloop isn't installed (Windows)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main)
    return uvloop.run(main)


def loop_name() -> str:
    """Which event loop `on_uvloop` runs."""
    try:
        return f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "asyncio"


# -- progress -----------------------------------------------------------------------------


class Progress:
    """A one-line status on stderr while a suite runs.

    On a terminal the line is redrawn in place at every step; elsewhere (CI logs, a pipe)
    one line per scenario is printed and the steps are skipped, to keep logs short.
    """

    def __init__(self, suite: str, scenarios: int, stream: TextIO | None = None) -> None:
        self._suite = suite
        self._total = scenarios
        self._stream = stream if stream is not None else sys.stderr
        self._live = self._stream.isatty()
        self._started = time.perf_counter()
        self._index = 0
        self._scenario = ""

    def scenario(self, label: str) -> None:
        """Announce the next scenario."""
        self._index += 1
        self._scenario = label
        if self._live:
            self.step("starting")
        else:
            self._stream.write(f"{self._prefix()} {label}\n")
            self._stream.flush()

    def step(self, detail: str) -> None:
        """Show what the current scenario is doing now (terminal only)."""
        if self._live:
            self._stream.write(f"\r\x1b[K{self._prefix()} {self._scenario}: {detail}")
            self._stream.flush()

    def finish(self) -> None:
        """Clear the status line and say how long the suite took."""
        elapsed = time.perf_counter() - self._started
        clear = "\r\x1b[K" if self._live else ""
        self._stream.write(f"{clear}{self._suite}: {self._index} scenarios in {elapsed:.1f}s\n")
        self._stream.flush()

    def _prefix(self) -> str:
        elapsed = time.perf_counter() - self._started
        return f"{self._suite} [{self._index}/{self._total} {elapsed:5.1f}s]"
