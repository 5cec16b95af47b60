"""Reading an actor's journal from outside it: its checkpoint, its queued messages, the
turn it has not finished, and the outcomes of its invocations.

For actors that are not in memory (passivated, or hosted by a process that stopped):
what `Runtime.status`, `Runtime.invocation` and `Runtime.invocations` report is read from
the journal here, so an actor says the same before and after a restart.
"""

from __future__ import annotations

import dataclasses

import msgspec

from actorflow._events import (
    ACTOR_CODEC,
    INBOX_CODEC,
    OUTCOME_CODEC,
    ActorSnapshot,
    InvocationCancelled,
    InvocationEnded,
    MessageAccepted,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    actor_stream,
    inbox_stream,
    outcomes_stream,
)
from journal import Store


@dataclasses.dataclass
class JournalView:
    """What the journal says of one actor, read once."""

    turns: int = 0
    #: The inbox position of the last message a turn took.
    inbox_done: int = 0
    #: The turn that started and has not ended, if any.
    unfinished: TurnStarted | None = None
    #: Messages after ``inbox_done``, in order, and the invocations asked to be cancelled.
    queued: list[MessageAccepted] = dataclasses.field(default_factory=list)
    cancels: set[str] = dataclasses.field(default_factory=set)
    attention: list[str] = dataclasses.field(default_factory=list)

    @property
    def has_work(self) -> bool:
        """Whether a turn is unfinished or a message waits for its turn."""
        return self.unfinished is not None or bool(self.queued)


async def read_checkpoint(store: Store, actor_id: str) -> ActorSnapshot | None:
    """The actor's latest checkpoint, if it has one."""
    snapshot = await store.load_snapshot(actor_stream(actor_id))
    if snapshot is None:
        return None
    return msgspec.msgpack.decode(snapshot.data, type=ActorSnapshot)


async def view(store: Store, actor_id: str) -> JournalView:
    """Read the actor's checkpoint, the actor stream after it, and the inbox after the
    last message a turn took (everything before is folded into the checkpoint)."""
    found = JournalView()
    checkpoint = await read_checkpoint(store, actor_id)
    start = 1
    if checkpoint is not None:
        found.turns, found.inbox_done = checkpoint.turn, checkpoint.inbox_done
        found.attention = list(checkpoint.attention)
        start = (await store.stream_info(actor_stream(actor_id))).snapshot_position + 1
    async for batch in store.read_batches(actor_stream(actor_id), start):
        for record in batch:
            entry = ACTOR_CODEC.decode(record)
            if isinstance(entry, TurnStarted):
                found.unfinished, found.turns = entry, entry.turn
                found.inbox_done = max(found.inbox_done, entry.inbox)
            elif isinstance(entry, TurnCompleted | TurnFailed):
                found.unfinished = None
    async for batch in store.read_batches(inbox_stream(actor_id), found.inbox_done + 1):
        for record in batch:
            item = INBOX_CODEC.decode(record)
            if isinstance(item, MessageAccepted):
                found.queued.append(item)
            elif isinstance(item, InvocationCancelled):
                found.cancels.add(item.invocation)
    return found


async def outcomes(store: Store, actor_id: str) -> dict[str, InvocationEnded]:
    """The latest outcome of each of the actor's invocations, in the order they ended."""
    ended: dict[str, InvocationEnded] = {}
    async for batch in store.read_batches(outcomes_stream(actor_id)):
        for record in batch:
            entry = OUTCOME_CODEC.decode(record)
            ended.pop(entry.invocation, None)
            ended[entry.invocation] = entry
    return ended


async def find_outcome(store: Store, actor_id: str, invocation: str) -> InvocationEnded | None:
    """The latest outcome of ``invocation``, if it ended."""
    found = None
    async for batch in store.read_batches(outcomes_stream(actor_id)):
        for record in batch:
            entry = OUTCOME_CODEC.decode(record)
            if entry.invocation == invocation:
                found = entry
    return found
