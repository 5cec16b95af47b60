"""The deterministic core: a turn's recorded steps, matched against what the code asks for.

No I/O here. A `RecordedTurn` holds what the journal recorded for one turn, keyed by step
id; each request from the handler is checked against it: a match hands back the record,
a request past the end runs live, and anything else is non-determinism, reported with the
journal position, what was recorded and what the code did.

Step ids are paths: ``"3"`` is the main handler's third step; ``"4.1.2"`` is the second
step of the first branch that the handler's fourth operation (a ``ctx.gather``) started.
Keying steps by path rather than by arrival order is what lets concurrent steps complete
in any order, live or on replay.
"""

from __future__ import annotations

import dataclasses

from actorflow._errors import NonDeterminismError
from actorflow._events import (
    StepCompleted,
    StepEntry,
    StepFailed,
    StepRetrying,
    StepStarted,
    TimerStarted,
    TraceContext,
    TurnEnd,
    TurnFailed,
    TurnStarted,
)


@dataclasses.dataclass(slots=True)
class Recorded:
    """What the journal holds for one step id."""

    position: int  # journal position of the first record of this step
    name: str
    kind: str
    fingerprint: int = 0
    started: StepStarted | None = None
    retrying: StepRetrying | None = None  # the latest failed attempt that was retried
    timer: TimerStarted | None = None
    outcome: StepCompleted | StepFailed | None = None

    @property
    def attempts(self) -> int:
        """How many attempts of the step ended (failed and were retried)."""
        return self.retrying.attempt if self.retrying is not None else 0

    @property
    def in_flight(self) -> bool:
        """Whether an attempt was journaled as started and never ended: it was executing
        when the process stopped (only steps with reconcile= or at_most_once journal
        their starts)."""
        return (
            self.outcome is None
            and self.started is not None
            and self.started.attempt > self.attempts
        )


def describe(kind: str, name: str, step: str) -> str:
    """How a step is named in non-determinism reports."""
    return f"{kind} step {name!r} (step id {step})"


class RecordedTurn:
    """The journal of one turn, consumed step by step as the handler replays."""

    def __init__(
        self,
        actor: str,
        started: TurnStarted,
        position: int,
        steps: list[tuple[int, StepEntry]],
        end: TurnEnd | None = None,
        end_position: int = 0,
        cancelled: str | None = None,
    ) -> None:
        self.actor = actor
        self.started = started
        self.position = position
        self.end = end
        self.end_position = end_position
        #: Why the turn was cancelled, if its journal says it was (None otherwise).
        self.cancelled = cancelled
        if cancelled is None and isinstance(end, TurnFailed) and end.cancelled:
            self.cancelled = end.error.message
        self._steps: dict[str, Recorded] = {}
        self._consumed: set[str] = set()
        for at, entry in steps:
            self._add(at, entry)

    def _add(self, at: int, entry: StepEntry) -> None:
        found = self._steps.get(entry.step)
        kind = entry.kind
        if found is None:
            fingerprint = getattr(entry, "fingerprint", 0)
            found = self._steps[entry.step] = Recorded(at, entry.name, kind, fingerprint)
        if isinstance(entry, StepStarted):
            found.started = entry
        elif isinstance(entry, StepRetrying):
            found.retrying = entry
        elif isinstance(entry, TimerStarted):
            found.timer = entry
        else:
            found.outcome = entry

    def take(self, step: str, name: str, kind: str, fingerprint: int = 0) -> Recorded | None:
        """The record of ``step`` if the journal has one that matches the request.

        Returns None when the journal has nothing for this step (it runs live); raises
        `NonDeterminismError` when the journal recorded something else there.
        """
        found = self._steps.get(step)
        if found is None:
            if self.end is not None:
                raise NonDeterminismError(
                    self.actor,
                    self.end_position,
                    f"the end of turn {self.started.turn}",
                    describe(kind, name, step),
                )
            return None
        if found.name != name or found.kind != kind:
            raise NonDeterminismError(
                self.actor,
                found.position,
                describe(found.kind, found.name, step),
                describe(kind, name, step),
            )
        if fingerprint and found.fingerprint and fingerprint != found.fingerprint:
            raise NonDeterminismError(
                self.actor,
                found.position,
                f"{describe(found.kind, found.name, step)} with inputs {found.fingerprint:#x}",
                f"the same step with different inputs ({fingerprint:#x})",
            )
        self._consumed.add(step)
        return found

    def has(self, step: str) -> bool:
        """Whether the journal holds anything for ``step`` (without consuming it)."""
        return step in self._steps

    @property
    def empty(self) -> bool:
        """Whether the turn journaled no step at all."""
        return not self._steps

    def has_beyond(self, prefix: str, seq: int) -> bool:
        """Whether the journal holds steps of branch ``prefix`` numbered ``seq`` or later."""
        for step in self._steps:
            head, _, last = step.rpartition(".")
            if head == prefix and last.isdigit() and int(last) >= seq:
                return True
        return False

    def position_beyond(self, prefix: str, seq: int) -> int:
        """The journal position of the first step of branch ``prefix`` numbered ``seq`` or
        later (of the turn's end if there is none)."""
        positions = []
        for step, found in self._steps.items():
            head, _, last = step.rpartition(".")
            if head == prefix and last.isdigit() and int(last) >= seq:
                positions.append(found.position)
        return min(positions, default=self.end_position)

    def unconsumed(self) -> list[tuple[str, Recorded]]:
        """Recorded steps the code never asked for (non-determinism at turn end)."""
        return [(step, found) for step, found in self._steps.items() if step not in self._consumed]

    def check_complete(self, doing: str) -> None:
        """Raise `NonDeterminismError` if recorded steps were skipped by the code."""
        left = self.unconsumed()
        if left:
            step, found = min(left, key=lambda item: item[1].position)
            raise NonDeterminismError(
                self.actor, found.position, describe(found.kind, found.name, step), doing
            )

    def traces(self) -> list[TraceContext]:
        """The spans of earlier resumed runs of the turn, as each journaled them on the
        first step outcome it wrote (tracing on), in journal order."""
        outcomes = [
            (found.position, found.outcome)
            for found in self._steps.values()
            if isinstance(found.outcome, StepCompleted | StepFailed)
        ]
        outcomes.sort(key=lambda pair: pair[0])
        return [o.trace for _, o in outcomes if isinstance(o.trace, TraceContext)]
