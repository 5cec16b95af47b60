"""Step functions that count their executions, for tests of code versions: a test clears
`executions` before it runs and checks, after restarts and resets, how often each step
really ran."""

from __future__ import annotations

from collections import Counter

#: Executions of each step, by "<step> <item>".
executions: Counter[str] = Counter()


def reserve(item: str) -> str:
    executions[f"reserve {item}"] += 1
    return f"reserved {item}"


def quote(item: str) -> str:
    executions[f"quote {item}"] += 1
    return f"quoted {item}"


def charge(item: str) -> str:
    executions[f"charge {item}"] += 1
    return f"charged {item}"
