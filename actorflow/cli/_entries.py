"""An actor's journal entries as a person reads them, one line each: shared by
`actorflow journal ACTOR` (through a server) and `actorflow journal inspect` (offline).

Every time is shown in ISO 8601, in UTC, marked ``Z`` (``2026-11-30T09:17:51.123Z``): the
same wherever the command runs, and comparable with the server's logs.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import msgspec

from actorflow.runtime._status import JournalEntry


def iso(seconds: float | None) -> str:
    """``seconds`` since the epoch as an ISO 8601 UTC time, to the millisecond; "-" for
    none (0 or None: a record journaled before its time was)."""
    if not seconds:
        return "-"
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def journal_lines(entries: list[JournalEntry]) -> list[str]:
    """The journal as a person reads it: one line per entry, durations between steps."""
    previous: dict[int, float] = {}
    return [journal_line(entry, previous) for entry in entries]


def journal_line(entry: JournalEntry, previous: dict[int, float]) -> str:
    """One entry as a person reads it; ``previous`` holds the time of each turn's latest
    entry so far (updated), to show how long each step took."""
    turn = entry.data.get("turn")
    took = ""
    if isinstance(turn, int) and entry.at:
        if turn in previous:
            took = f"+{entry.at - previous[turn]:.3f}s"
        previous[turn] = entry.at
    return (
        f"{entry.stream:5} {entry.position:>5}  {iso(entry.at):24}  {entry.type:15} "
        f"{describe(entry):50} {took}"
    ).rstrip()


def describe(entry: JournalEntry) -> str:
    """What one entry says, in a few words."""
    data = entry.data
    kind = entry.type
    if kind == "turn":
        return f"turn {data['turn']}: {data['handler']}({short(data['args'])})"
    if kind == "timer":
        return (
            f"turn {data['turn']} step {data['step']} {data['name']}: {data.get('kind', 'sleep')} "
            f"timer due {iso(data['fire_at'])}"
        )
    if kind == "step_retry":
        return (
            f"turn {data['turn']} step {data['step']} {data['name']}: attempt "
            f"{data['attempt']} failed ({_error(data['error'])}); retry at {iso(data['retry_at'])}"
        )
    if kind == "step_started":
        return (
            f"turn {data['turn']} step {data['step']} {data['name']}: attempt "
            f"{data.get('attempt', 1)} started"
        )
    if kind in ("step", "step_failed"):
        step = f"turn {data['turn']} step {data['step']} {data['name']}"
        if data.get("kind") == "undo":
            step += " (compensation)"
        elif data.get("kind") not in (None, "run"):
            step += f" ({data['kind']})"
        attempts = f" after {data['attempts']} attempts" if data.get("attempts", 1) > 1 else ""
        if kind == "step_failed":
            return f"{step}: failed{attempts}: {_error(data['error'])}"
        return f"{step}: {short(data.get('value'))}{attempts}"
    if kind == "turn_done":
        return f"turn {data['turn']} -> {short(data.get('result'))}{_compensated(data)}"
    if kind == "turn_failed":
        how = "cancelled" if data.get("cancelled") else "failed"
        return f"turn {data['turn']} {how}: {_error(data['error'])}{_compensated(data)}"
    if kind == "turn_cancelling":
        return f"turn {data['turn']} cancelling ({data['reason']}): compensations run"
    if kind == "turn_continued":
        return f"turn {data['turn']} continues as new: {data['handler']}({short(data['args'])})"
    if kind == "message":
        return f"{data['handler']}({short(data['args'])}) as {data['invocation']}"
    if kind == "event":
        return f"event {data['name']}: {short(data.get('payload'))}"
    if kind == "cancel":
        return f"cancel requested for {data['invocation']}"
    return short(data)


def _error(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('type', '?')}: {short(error.get('message', ''), 60)}"
    return short(error)


def _compensated(data: dict[str, Any]) -> str:
    text = ""
    if data.get("compensated"):
        text += f"; compensated {', '.join(data['compensated'])}"
    if data.get("compensation_failed"):
        text += f"; compensation FAILED: {', '.join(data['compensation_failed'])}"
    return text


def short(value: Any, width: int = 40) -> str:
    """``value`` as JSON, cut to ``width`` characters."""
    text = json.dumps(msgspec.to_builtins(value), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"
