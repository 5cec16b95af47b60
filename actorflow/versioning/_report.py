"""What a replay check found: `ReplayReport`, its `Divergence`s and the actors it could
not check, with the text and JSON forms the CLI prints."""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class Divergence(msgspec.Struct, frozen=True):
    """An actor whose unfinished turn would diverge under the code checked.

    ``position`` is the journal position where it diverges, ``recorded`` what the journal
    holds there and ``new`` what the code does instead (from `NonDeterminismError`);
    ``diff`` says both in one line. ``kind`` is ``"non-determinism"``, or ``"error"`` for a
    replay that fails otherwise and would leave the actor stuck (then ``position`` is that
    of the turn's start, and ``new`` the error). ``source`` names the journal or export
    file it was found in.
    """

    actor: str
    position: int
    recorded: str
    new: str
    diff: str
    turn: int
    handler: str
    source: str
    kind: Literal["non-determinism", "error"] = "non-determinism"


class Unchecked(msgspec.Struct, frozen=True):
    """An actor with an unfinished turn that could not be checked, and why."""

    actor: str
    reason: str
    source: str


def one_line_diff(recorded: str, new: str) -> str:
    """Recorded and new, as a one-line diff."""
    return f"- {recorded} | + {new}"


class ReplayDivergenceError(AssertionError):
    """`ReplayReport.assert_compatible`: the code would diverge from journals it checked."""

    def __init__(self, report: ReplayReport) -> None:
        self.report = report
        super().__init__("\n".join(report.lines()))


class ReplayReport(msgspec.Struct):
    """The outcome of replaying unfinished turns against new code (`actorflow replay`,
    `actorflow.testing.replay`).

    ``checked``: actors whose unfinished turn was replayed; ``diverged``: those that would
    diverge; ``unchecked``: those that could not be checked, with why. ``finished``: actors
    in the sources with no unfinished turn (nothing of theirs replays: skipped).
    """

    checked: int = 0
    diverged: list[Divergence] = msgspec.field(default_factory=list)
    unchecked: list[Unchecked] = msgspec.field(default_factory=list)
    finished: int = 0

    @property
    def ok(self) -> bool:
        """Whether no checked actor would diverge."""
        return not self.diverged

    def assert_compatible(self, *, strict: bool = False) -> None:
        """Raise `ReplayDivergenceError` (an AssertionError, its message the report) if any
        actor would diverge (with ``strict``, also if any could not be checked)."""
        if self.diverged or (strict and self.unchecked):
            raise ReplayDivergenceError(self)

    def as_json(self) -> dict[str, Any]:
        """The report as one JSON object (what ``actorflow replay --json`` prints)."""
        return {
            "ok": self.ok,
            "checked": self.checked,
            "diverged": len(self.diverged),
            "divergences": msgspec.to_builtins(self.diverged),
            "unchecked": msgspec.to_builtins(self.unchecked),
            "finished": self.finished,
        }

    def lines(self) -> list[str]:
        """The report as a person reads it."""
        out = []
        for found in self.diverged:
            out.append(
                f"DIVERGES {found.actor} (turn {found.turn}, {found.handler}) at journal "
                f"position {found.position}" + (f" in {found.source}" if found.source else "")
            )
            out.append(f"  recorded: {found.recorded}")
            out.append(f"  new code: {found.new}")
            out.append(f"  {found.diff}")
        for skipped in self.unchecked:
            where = f" in {skipped.source}" if skipped.source else ""
            out.append(f"NOT CHECKED {skipped.actor}{where}: {skipped.reason}")
        out.append(
            f"unfinished turns checked: {self.checked} (would diverge: {len(self.diverged)}, "
            f"compatible: {self.checked - len(self.diverged)}); not checked: "
            f"{len(self.unchecked)}; skipped, with no unfinished turn: {self.finished}"
        )
        return out
