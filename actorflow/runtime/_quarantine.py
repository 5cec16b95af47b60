"""Quarantine: a damaged journal takes down its actor, never the runtime.

A record of an actor's journal that fails its checksum (`journal.CorruptionError`: a
flipped bit on disk, a torn copy) cannot be replayed, and guessing would be worse than
stopping. The actor is quarantined instead: its status says ``corrupt`` with the stream and
position of the damage, and it refuses messages, events, cancellations and result waits
with `ActorCorruptError` (HTTP 409 ``actor_corrupt``) until it is repaired. Every other
actor is recovered and served as usual.

Quarantine is not stored anywhere: the journal is the truth, and each start finds the damage
again until it is repaired.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from actorflow._errors import ActorStuckError
from actorflow.runtime import _inspect
from actorflow.runtime._inspect import JournalView
from actorflow.runtime._status import Damage, QuarantinedStatus
from journal import CorruptionError, Store

if TYPE_CHECKING:
    from actorflow.runtime._host import ActorHost

log = logging.getLogger("actorflow")


class ActorCorruptError(ActorStuckError):
    """The actor's journal is damaged: it is quarantined and accepts nothing until an
    operator repairs it (restores the journal, or resets the actor)."""

    def __init__(self, actor: str, stream: str, position: int, detail: str) -> None:
        self.actor = actor
        self.stream = stream
        self.position = position
        self.detail = detail
        super().__init__(
            f"actor {actor} is quarantined: its journal is damaged at stream {stream!r} "
            f"position {position} ({detail}), so it cannot be replayed. It accepts no "
            f"messages, events, cancellations or result waits until it is repaired; other "
            f"actors are not affected. Export what can be read with `actorflow export "
            f"{actor} --out FILE`, then restore the journal from a backup, or start the "
            f"actor afresh with `actorflow reset {actor} --yes` (which deletes its state, "
            f"queued messages and results) while no server has the journal open."
        )

    @classmethod
    def of(cls, actor: str, damage: Damage) -> ActorCorruptError:
        """The error that refuses work for ``actor``, damaged as ``damage`` says."""
        return cls(actor, damage.stream, damage.position, damage.detail)


def damage_of(exc: CorruptionError) -> Damage:
    """Where the journal is damaged, as an actor's status reports it."""
    return Damage(exc.stream, exc.position, exc.detail)


def quarantine(host: ActorHost, damage: Damage) -> None:
    """Set ``host``'s actor apart: its journal is damaged where ``damage`` says. It refuses
    all work from now on, and whoever waits for its results is woken (to be refused)."""
    host.damage = damage
    host.stuck = ActorCorruptError.of(host.actor_id, damage)
    host.state = "corrupt"
    host.activated.set()
    log.error("%s", host.stuck)
    host.runtime.actor_stuck(host.actor_id)


def refusal(host: ActorHost) -> ActorStuckError:
    """Why a stuck or quarantined actor refuses work."""
    if host.damage is not None:
        return ActorCorruptError.of(host.actor_id, host.damage)
    return ActorStuckError(
        f"actor {host.actor_id} is stuck and accepts nothing until it is fixed: {host.stuck}"
    )


def status(host: ActorHost) -> QuarantinedStatus:
    """What a quarantined actor's status says: ``corrupt``, why, and where."""
    error = str(host.stuck)
    attention = list(host.attention)
    return QuarantinedStatus(
        host.actor_id, "corrupt", host.current, host.turns, error, attention, host.damage
    )


async def view(store: Store, actor_id: str) -> JournalView | Damage:
    """What the journal says of the actor (see `_inspect.view`), or where it is damaged."""
    try:
        return await _inspect.view(store, actor_id)
    except CorruptionError as exc:
        return damage_of(exc)
