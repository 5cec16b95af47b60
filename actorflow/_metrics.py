"""Counters and histograms the runtime keeps, rendered in Prometheus' text format."""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable


@dataclasses.dataclass
class Histogram:
    """Cumulative buckets of observed values (seconds, sizes)."""

    bounds: tuple[float, ...]
    counts: list[int] = dataclasses.field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, times: int = 1) -> None:
        """Record ``value`` (``times`` times)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.total += value * times
        self.count += times

    def render(self, name: str, help_text: str) -> list[str]:
        """Prometheus text lines for this histogram."""
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            lines.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {self.total:.6f}")
        lines.append(f"{name}_count {self.count}")
        return lines


LATENCY_BOUNDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 600.0, 3600.0)
BATCH_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


@dataclasses.dataclass
class Metrics:
    """What the runtime counts (exposed by `actorflow serve` at /metrics)."""

    turns: int = 0
    steps: int = 0
    appends: int = 0
    activations: int = 0
    recovered: int = 0
    turn_seconds: Histogram = dataclasses.field(default_factory=lambda: Histogram(LATENCY_BOUNDS))
    #: Budget spending settled live, by (actor type, dimension) (cost in millionths, by
    #: currency: ``cost_USD``); and reservations refused, by (actor type, dimension).
    budget_spent: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    budget_refusals: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)

    def budget_refused(self, type_name: str, dimension: str) -> None:
        """A reservation of a step of ``type_name`` did not fit in ``dimension``."""
        key = (type_name, dimension)
        self.budget_refusals[key] = self.budget_refusals.get(key, 0) + 1

    def budget_settled(self, type_name: str, parts: Iterable[tuple[str, int]]) -> None:
        """A step of ``type_name`` settled these (dimension, amount) parts."""
        for dimension, amount in parts:
            if amount:
                key = (type_name, dimension)
                self.budget_spent[key] = self.budget_spent.get(key, 0) + amount


def labelled(
    name: str, help_text: str, values: dict[tuple[str, str], int], label: str
) -> list[str]:
    """Prometheus text lines for a counter by actor type and one more label."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    for (type_name, other), value in sorted(values.items()):
        lines.append(f'{name}{{type="{type_name}",{label}="{other}"}} {value}')
    return lines


def counter(name: str, help_text: str, value: float) -> list[str]:
    """Prometheus text lines for one counter."""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value:g}"]


def gauge(name: str, help_text: str, value: float) -> list[str]:
    """Prometheus text lines for one gauge."""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value:g}"]


def batch_histogram(sizes: Iterable[tuple[int, int]]) -> Histogram:
    """A histogram of group-commit batch sizes from (size, commits) pairs."""
    histogram = Histogram(BATCH_BOUNDS)
    for size, commits in sizes:
        histogram.observe(size, commits)
    return histogram
