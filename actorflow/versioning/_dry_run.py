"""A dry run of one actor's unfinished turn: replayed against the code at hand, executing
nothing.

`DryRunHost` is an `ActorHost` over a private copy of the actor's streams (a
`journal.MemoryStore`), that is suspending from the start: the first operation of its
turn that the journal does not hold (`Turn._live`: a step to call, a timer or an event to
wait for, a message to send, a patch marker to write) stops the turn with `Suspended`
instead of running, exactly as a checkpointing shutdown stops a turn at its next step
boundary. As a second guard, every journal write is refused (even to the copy), and a
turn that would end from its journal alone stops before its end is written.

What the run ends with is the verdict: a `NonDeterminismError` (a step the journal did
not record where it recorded another, a recorded step the code skipped) is a divergence;
anything else that would leave the actor stuck is one too; stopping at the journal's end
means the new code goes on from there, compatible.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import anyio

from actorflow._actor import Actor
from actorflow._errors import NonDeterminismError, Suspended
from actorflow._events import ActorEntry, Reply, TurnStarted
from actorflow.replay._recorded import RecordedTurn
from actorflow.replay._turn import Turn
from actorflow.runtime._host import ActorHost
from actorflow.runtime._runtime import Runtime
from journal import MemoryStore, StreamAppend


class DryRunWrite(Exception):
    """A dry run tried to write to the journal (refused: it executes nothing)."""

    def __init__(self, entries: Sequence[ActorEntry]) -> None:
        self.entries = list(entries)
        kinds = ", ".join(type(entry).__name__ for entry in entries) or "nothing"
        super().__init__(f"a dry run writes nothing (it tried to write {kinds})")


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """How one actor's unfinished turn replays under the code at hand.

    ``outcome``: ``"live"`` (the replay matched the journal up to its end; the new code goes
    on live from there), ``"ends"`` (the journal held the whole turn but its end: it would
    end now, as ``detail`` says), ``"diverged"`` (``error`` says where and how), or
    ``"error"`` (the replay failed otherwise; ``detail`` says how).
    """

    actor: str
    turn: int
    handler: str
    position: int  # of the turn's start in the journal
    outcome: Literal["live", "ends", "diverged", "error"]
    detail: str = ""
    error: NonDeterminismError | None = None


def dry_runtime(store: MemoryStore, classes: Sequence[type[Actor]]) -> Runtime:
    """A `Runtime` over ``store`` that is never entered: it starts no actor by itself
    (no recovery), and hosts only the dry runs made on it."""
    runtime = Runtime(store, classes, version="dry-run", step_threads=1)
    runtime.step_threads = anyio.CapacityLimiter(1)  # (made on entering a runtime)
    return runtime


class DryRunHost(ActorHost):
    """An actor replaying its unfinished turn without executing anything (see module)."""

    def __init__(self, runtime: Runtime, cls: type[Actor], key: str) -> None:
        super().__init__(runtime, cls, key)
        # The guard: a turn that reaches an operation its journal does not hold stops
        # there (Turn._live raises Suspended) instead of executing it.
        self.suspending.set()
        self.started: TurnStarted | None = None
        self.position = 0
        self.ended: Reply | None = None
        self.refused: DryRunWrite | None = None

    async def journal(
        self,
        entries: Sequence[ActorEntry],
        extra: Sequence[StreamAppend] = (),
        snapshot: bytes | None = None,
    ) -> None:
        """Refuse every write: a dry run executes nothing, not even on its copy."""
        self.refused = DryRunWrite(entries)
        raise self._failed(self.refused)

    async def _outcome(self, turn: Turn, started: TurnStarted) -> Reply:
        self.started, self.position = started, turn.recorded.position
        return await super()._outcome(turn, started)

    async def _journal_end(
        self, started: TurnStarted, reply: Reply, turn: Turn, recorded: RecordedTurn
    ) -> None:
        self.ended = reply
        raise Suspended()

    async def dry_run(self) -> Verdict:
        """Activate on the copy, replay the unfinished turn, say how it went."""
        await self.run()
        started = self.started
        turn = started.turn if started is not None else self.turns
        handler = started.handler if started is not None else ""
        at = (self.actor_id, turn, handler, self.position)
        if started is not None and handler not in self.cls.__actorflow_handlers__:
            known = ", ".join(sorted(self.cls.__actorflow_handlers__)) or "none"
            detail = (
                f"no handler {handler!r} in {self.type_name} (it has: {known}): the turn would fail"
            )
            return Verdict(*at, "error", detail)
        if isinstance(self.stuck, NonDeterminismError):
            return Verdict(*at, "diverged", str(self.stuck), self.stuck)
        if self.state in ("stuck", "corrupt"):
            return Verdict(*at, "error", str(self.stuck))
        if self.failure is not None and self.refused is None:
            cause = self.failure.cause
            return Verdict(*at, "error", f"{type(cause).__name__}: {cause}")
        if self.ended is not None:
            return Verdict(*at, "ends", _ending(self.ended))
        return Verdict(*at, "live")


def _ending(reply: Reply) -> str:
    if reply.ok:
        return "completed"
    error = reply.error
    return f"failed: {error.type}: {error.message}" if error is not None else "failed"
