"""Reset an actor to its last turn boundary: discard its unfinished turn's journal.

An actor stuck (or held) on its unfinished turn can be set back to where that turn
began: its journal entries are exported (the records of `actorflow export`), then
discarded, and the message that started the turn runs again from the start under the
deployed code, steps that had completed included.

Only the last boundary is offered. Every turn before the unfinished one ended, and its
outcome was delivered (a reply to its caller, a result to whoever waited, messages to
other actors); setting the actor further back would not take those back, only make its
state disagree with what the world was told.

How the entries are discarded: the checkpoint written at the end of the previous turn
(state, inbox progress, pending events) is saved again, unchanged, as covering the
stream through its last record, then the records it now covers are deleted. Saving the
checkpoint is the single write that commits the reset (activation starts after it, and
so reads the turn's message from the inbox again); the deletion only frees the space,
and a reset interrupted between the two leaves records that no activation reads. Both
happen under a new owner epoch of the stream, so a writer that still believes it owns
the actor is refused. An actor whose unfinished turn is its first (no checkpoint yet)
has its journal stream deleted instead, as it held nothing else.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING

import msgspec

from actorflow._errors import ActorflowError
from actorflow._events import ACTOR_CODEC, TurnCompleted, TurnFailed, TurnStarted, actor_stream
from actorflow.runtime._quarantine import ExportedRecord, exported
from journal import Snapshot, Store

if TYPE_CHECKING:
    from actorflow.runtime._host import ActorHost
    from actorflow.runtime._runtime import Runtime

log = logging.getLogger("actorflow")


class ResetRefused(ActorflowError):
    """The actor cannot be reset to its last turn boundary (the message says why)."""


class UnfinishedTurn(msgspec.Struct, frozen=True):
    """An actor's unfinished turn, as a reset to its last turn boundary discards it:
    its number, invocation, handler and code version, and its journal positions."""

    actor: str
    turn: int
    invocation: str
    handler: str
    version: str
    first: int
    last: int


class TurnReset(msgspec.Struct, frozen=True):
    """What a reset to the last turn boundary discarded: the turn, and its journal
    entries as exported (one `ExportedRecord` per record, in order)."""

    actor: str
    turn: int
    invocation: str
    handler: str
    version: str
    discarded: list[ExportedRecord]


def confirmation(turn: UnfinishedTurn) -> str:
    """What an operator confirms before the reset (the CLI's prompt and refusal)."""
    count = turn.last - turn.first + 1
    return (
        f"This discards turn {turn.turn} of {turn.actor} ({turn.handler}, invocation "
        f"{turn.invocation}, started by code version {turn.version or '(unrecorded)'!r}): "
        f"its {count} journal entries, at positions {turn.first} to {turn.last}, are "
        f"exported, then deleted. The message that started it then runs again from the "
        f"start under the deployed code: the steps it had completed run again (their "
        f"effects happen twice unless they are idempotent), and nothing is compensated."
    )


async def unfinished_turn(store: Store, actor_id: str) -> UnfinishedTurn | None:
    """The actor's unfinished turn, if it has one (what a reset would discard).

    Refuses (`ResetRefused`) a journal that has finished turns after its checkpoint
    (written before checkpoints came with every turn): the boundary is not the
    checkpoint's, and such a journal is not reset this way.
    """
    stream = actor_stream(actor_id)
    snapshot = await store.load_snapshot(stream)
    start = snapshot.position + 1 if snapshot is not None else 1
    started: tuple[int, TurnStarted] | None = None
    last = 0
    async for batch in store.read_batches(stream, start):
        for record in batch:
            entry = ACTOR_CODEC.decode(record)
            last = record.position
            if started is None:
                if not isinstance(entry, TurnStarted):
                    raise ResetRefused(
                        f"actor {actor_id}: journal position {record.position} holds a "
                        f"{type(entry).__name__} outside any turn; the journal is damaged"
                    )
                started = (record.position, entry)
            elif isinstance(entry, TurnCompleted | TurnFailed):
                raise ResetRefused(
                    f"actor {actor_id}: its journal has finished turns after its checkpoint "
                    f"(it was written before every turn's end came with one); let the "
                    f"actor finish a turn under code that matches its journal first"
                )
    if started is None:
        return None
    first, begun = started
    return UnfinishedTurn(
        actor_id, begun.turn, begun.invocation, begun.handler, begun.version, first, last
    )


async def export_turn(store: Store, turn: UnfinishedTurn) -> list[ExportedRecord]:
    """The unfinished turn's journal records, as `actorflow export` writes them."""
    stream = actor_stream(turn.actor)
    found: list[ExportedRecord] = []
    async for record in store.salvage(stream, turn.first):
        if record.position > turn.last:
            break
        found.append(exported(record, ACTOR_CODEC))
    return found


async def discard(store: Store, turn: UnfinishedTurn) -> None:
    """Discard the unfinished turn's records under a new owner epoch (see the module
    docstring). Refused if the stream moved since ``turn`` was read."""
    stream = actor_stream(turn.actor)
    epoch = await store.claim(stream)
    snapshot: Snapshot | None = await store.load_snapshot(stream)
    last = await store.last_position(stream)
    if last != turn.last or (snapshot is not None and snapshot.position >= turn.first):
        raise ResetRefused(
            f"actor {turn.actor}: its journal changed while it was being reset (now up to "
            f"position {last}); nothing was discarded, look at it again"
        )
    if snapshot is None:
        await store.delete_stream(stream, epoch=epoch)
        return
    await store.save_snapshot(stream, turn.last, snapshot.data, epoch=epoch)
    await store.truncate(stream, turn.last, epoch=epoch)


async def reset_in(runtime: Runtime, actor_id: str, discard_turn: int) -> TurnReset:
    """Reset a stuck or held actor of a running ``runtime`` to its last turn boundary,
    if ``discard_turn`` names its unfinished turn; then activate it again."""
    host = runtime._hosts.get(actor_id)
    if host is None or host.state not in ("stuck", "held"):
        state = "not in memory" if host is None else host.status_state()
        raise ResetRefused(
            f"actor {actor_id} is {state}; only an actor stuck or held on its unfinished "
            f"turn is reset to its last turn boundary"
        )
    if host in _resetting:  # a second request, while the first one rewrites the journal
        raise ResetRefused(f"actor {actor_id} is being reset by another request")
    _resetting.add(host)
    try:
        return await _reset_host(runtime, host, discard_turn)
    finally:
        _resetting.discard(host)


#: The hosts whose actors are being reset (one reset at a time per actor).
_resetting: weakref.WeakSet[ActorHost] = weakref.WeakSet()


async def _reset_host(runtime: Runtime, host: ActorHost, discard_turn: int) -> TurnReset:
    actor_id = host.actor_id
    # The stuck host stays listed while its journal is rewritten: a message arriving
    # meanwhile wakes it (a no-op) rather than activating a second host.
    turn = await unfinished_turn(runtime.store, actor_id)
    if turn is None:
        raise ResetRefused(f"actor {actor_id} has no unfinished turn to discard")
    if turn.turn != discard_turn:
        raise ResetRefused(
            f"actor {actor_id}'s unfinished turn is turn {turn.turn}, not {discard_turn}; "
            f"nothing was discarded (look at its status again)"
        )
    entries = await export_turn(runtime.store, turn)
    await discard(runtime.store, turn)
    log.warning(
        "actor %s: turn %d (%s) reset to its start by an operator: %d journal entries "
        "discarded; the message runs again under code version %r",
        actor_id,
        turn.turn,
        turn.invocation,
        len(entries),
        runtime.versions[actor_id.partition("/")[0]],
    )
    if runtime._hosts.get(actor_id) is host:
        del runtime._hosts[actor_id]
    runtime.notify(actor_id)  # activates a fresh host, which takes the message again
    return TurnReset(actor_id, turn.turn, turn.invocation, turn.handler, turn.version, entries)
