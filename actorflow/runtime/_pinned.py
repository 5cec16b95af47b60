"""Pinned actor types: a turn in flight whose replay under new code diverges is held.

An actor type declared ``versioning="pinned"`` keeps a turn in flight on the code version
that started it. With one process, that means: when this process runs another version
and the unfinished turn's replay diverges from its journal, the actor is not stuck but
**held**. Its status says ``held``, with the version that started the turn, the version
this process runs, and the divergence; new messages are accepted and wait in its inbox;
nobody waiting for its results is refused. A process running the turn's version finishes
it at its next activation (or an operator resets the actor to its last turn boundary).

A divergence in a turn that this process's own version started is a bug in the code, and
the actor is stuck, pinned or not; so is any divergence of an ``upgrade`` type.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from actorflow._errors import ActorflowError, NonDeterminismError

if TYPE_CHECKING:
    from actorflow.runtime._host import ActorHost

log = logging.getLogger("actorflow")


class TurnHeld(ActorflowError):
    """A pinned actor's turn in flight, started by another code version, would diverge
    under this process's code: it waits for a process running its version."""

    def __init__(
        self, actor: str, turn: int, started: str, running: str, position: int, why: str
    ) -> None:
        self.actor = actor
        self.turn = turn
        self.position = position
        self.started = started
        self.running = running
        self.divergence = why
        super().__init__(
            f"actor {actor} is held (versioning='pinned'): turn {turn} was started by code "
            f"version {started or '(unrecorded)'!r} and this process runs {running!r}, "
            f"under which its replay diverges: {why}. New messages wait in its inbox; the "
            f"turn finishes when a process running {started or 'its version'!r} activates "
            f"the actor, or after an operator resets it to its last turn boundary "
            f"(actorflow reset {actor} --to-last-turn)."
        )


def hold(host: ActorHost, exc: NonDeterminismError) -> bool:
    """Hold ``host``'s actor instead of marking it stuck, if its type is pinned and the
    turn that diverged was started by another code version; whether it did."""
    running = host.runtime.versions[host.type_name]
    if host.cls.__actorflow_versioning__ != "pinned" or host.version == running:
        return False
    why = (
        f"at journal position {exc.position} the journal recorded {exc.recorded}, but the "
        f"code now does {exc.requested}"
    )
    host.stuck = TurnHeld(host.actor_id, host.turns, host.version, running, exc.position, why)
    host.state = "held"
    log.warning("%s", host.stuck)
    return True


def diverged_at(host: ActorHost) -> int | None:
    """Where the replay of ``host``'s unfinished turn diverged, if that is why it is stuck
    or held (its journal position)."""
    if isinstance(host.stuck, NonDeterminismError | TurnHeld):
        return host.stuck.position
    return None
