"""An actor's checkpoint: written with every turn's end, restored at activation.

The checkpoint (`ActorSnapshot`) holds what activation needs so that no finished turn
is ever replayed: the state, how far the inbox was taken, the events received and not
yet consumed. Every `ActorHost.snapshot_every` turns the records it covers are deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from actorflow._events import RULES, ActorEntry, ActorSnapshot, PendingEvent
from actorflow._values import decoder_for, encode
from actorflow.runtime._state_parts import NIL
from journal import StreamAppend

if TYPE_CHECKING:
    from actorflow.runtime._host import ActorHost


async def restore(host: ActorHost, snapshot: ActorSnapshot) -> None:
    """Put ``host`` back where ``snapshot`` says the actor was (reading the parts of its
    state, if it is kept in parts)."""
    state_type = host.cls.__actorflow_state__
    state = await host.state_parts.restore(snapshot)
    if state_type is not None:
        host.instance.state = decoder_for(state_type).decode(state)
        host._state_bytes = state
    host.turns, host.version = snapshot.turn, snapshot.version
    host._message_done = snapshot.inbox_done
    host._consumed = set(snapshot.events)
    host.attention = list(snapshot.attention)
    host.continuation = snapshot.continuation
    if snapshot.rules >= 2:  # the inbox up to inbox_done is folded into the checkpoint
        host._inbox_read = snapshot.inbox_done
        for pending in snapshot.pending:
            host._buffer_event(pending.position, pending.event)
    else:
        host.results.update(snapshot.results)


async def checkpoint(host: ActorHost, turn: int, extra: list[StreamAppend]) -> bytes:
    """The actor's checkpoint after ``turn``: state, inbox progress, pending events.

    A large state is kept in parts: the append writing the parts that changed is added to
    ``extra``, to be journaled in the same transaction (then `ActorHost.state_parts` is
    told it is committed)."""
    done = host._message_done
    pending = [
        PendingEvent(position, event)
        for queue in host._events.values()
        for position, event in queue
        if position <= done
    ]
    pending.sort(key=lambda item: item.position)
    host._consumed = {position for position in host._consumed if position > done}
    host.cancels = {invocation for invocation in host.cancels if host.queued(invocation)}
    parts, append = await host.state_parts.prepare(host._state_bytes)
    if append is not None:
        extra.append(append)
    snapshot = ActorSnapshot(
        turn,
        msgspec.Raw(NIL if parts else host._state_bytes),
        done,
        sorted(host._consumed),
        rules=RULES,
        pending=pending,
        attention=host.attention,
        version=host.version,
        continuation=host.continuation,
        parts=parts,
        parts_end=0 if parts else host.state_parts.holding,
    )
    return encode(snapshot)


async def end_turn(
    host: ActorHost, entry: ActorEntry, extra: list[StreamAppend], turn: int
) -> None:
    """Journal ``entry`` (a turn's or a segment's end) with ``extra`` and the actor's new
    checkpoint after ``turn``, in one transaction (the state parts it writes included)."""
    snapshot = await checkpoint(host, turn, extra)
    await host.journal([entry], extra, snapshot=snapshot)
    host.state_parts.committed()


async def compact(host: ActorHost, always: bool = False) -> None:
    """After every turn whose number is a multiple of ``snapshot_every`` (however often
    the actor was passivated), or ``always`` (unless ``snapshot_every`` is 0: keep
    everything), delete what the checkpoint covers: the actor's records through the
    checkpoint, the inbox through the last message taken, and the state parts no longer
    referred to (`StateParts.collect`, also run right after a checkpoint that wrote its
    parts afresh)."""
    every = host.runtime.snapshot_every
    due = bool(every) and (always or not host.turns % every)
    if not (due or host.state_parts.due):
        return
    try:
        if due:
            await host.store.truncate(host.stream, host._position, epoch=host._epoch)
            done = host._message_done
            if done:
                await host.store.save_snapshot(host.inbox, done, b"")
                await host.store.truncate(host.inbox, done)
        await host.state_parts.collect()
    except Exception as exc:
        raise host._failed(exc) from exc
