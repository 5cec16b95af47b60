"""An actor's checkpoint: written with every turn's end, restored at activation.

The checkpoint (`ActorSnapshot`) holds what activation needs so that no finished turn
is ever replayed: the state, how far the inbox was taken, the events received and not
yet consumed. Every `ActorHost.snapshot_every` turns the records it covers are deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from actorflow._events import RULES, ActorSnapshot, PendingEvent
from actorflow._values import encode

if TYPE_CHECKING:
    from actorflow.runtime._host import ActorHost


def restore(host: ActorHost, snapshot: ActorSnapshot) -> None:
    """Put ``host`` back where ``snapshot`` says the actor was."""
    state_type = host.cls.__actorflow_state__
    if state_type is not None:
        host.instance.state = msgspec.msgpack.decode(snapshot.state, type=state_type)
        host._state_bytes = bytes(snapshot.state)
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


def checkpoint(host: ActorHost, turn: int) -> bytes:
    """The actor's checkpoint after ``turn``: state, inbox progress, pending events."""
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
    snapshot = ActorSnapshot(
        turn,
        msgspec.Raw(host._state_bytes),
        done,
        sorted(host._consumed),
        rules=RULES,
        pending=pending,
        attention=host.attention,
        version=host.version,
        continuation=host.continuation,
    )
    return encode(snapshot)


async def compact(host: ActorHost, always: bool = False) -> None:
    """After every turn whose number is a multiple of ``snapshot_every`` (however often
    the actor was passivated), or ``always``, delete what the checkpoint covers: the
    actor's records through the checkpoint, and the inbox through the last message
    taken."""
    every = host.runtime.snapshot_every
    if not always and (not every or host.turns % every):
        return
    try:
        await host.store.truncate(host.stream, host._position, epoch=host._epoch)
        done = host._message_done
        if done:
            await host.store.save_snapshot(host.inbox, done, b"")
            await host.store.truncate(host.inbox, done)
    except Exception as exc:
        raise host._failed(exc) from exc
