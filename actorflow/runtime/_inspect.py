"""Reading an actor's journal from outside it: its checkpoint, its queued messages, the
turn it has not finished, and the outcomes of its invocations.

For actors that are not in memory (passivated, or hosted by a process that stopped):
what `Runtime.status`, `Runtime.invocation` and `Runtime.invocations` report is read from
the journal here, so an actor says the same before and after a restart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from actorflow._events import (
    ACTOR_CODEC,
    INBOX_CODEC,
    OUTCOME_CODEC,
    ActorSnapshot,
    InvocationCancelled,
    InvocationEnded,
    MessageAccepted,
    Reply,
    SeedRecord,
    StepFailed,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    actor_stream,
    inbox_stream,
    outcomes_stream,
)
from actorflow.runtime._status import InvocationStatus
from journal import Store

#: Decodes an invocation's result (its handler's return type), given its actor id.
Decode = Callable[[str, Reply], Any]


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


# -- invocation statuses -------------------------------------------------------------------


class _Message(Protocol):
    """A queued message, as a status needs it (a `MessageAccepted`, or a host's entry)."""

    @property
    def invocation(self) -> str: ...

    @property
    def handler(self) -> str: ...


def queued_status(actor_id: str, message: _Message, cancelled: bool) -> InvocationStatus:
    """A queued invocation (``cancelled`` at once if its cancellation was requested)."""
    if not cancelled:
        return InvocationStatus(message.invocation, actor_id, "queued", handler=message.handler)
    return InvocationStatus(
        message.invocation,
        actor_id,
        "cancelled",
        error="cancelled by request",
        error_type="actorflow.Cancelled",
        handler=message.handler,
    )


def ended_status(invocation: str, actor_id: str, reply: Reply, decode: Decode) -> InvocationStatus:
    """An ended invocation, from its reply."""
    handler = reply.handler or None
    if reply.ok:
        result = decode(actor_id, reply)
        return InvocationStatus(invocation, actor_id, "completed", result, handler=handler)
    error = reply.error
    return InvocationStatus(
        invocation,
        actor_id,
        "cancelled" if reply.cancelled else "failed",
        None,
        error.message if error else None,
        error.type if error else None,
        reply.compensated,
        reply.compensation_failed,
        handler,
        not (reply.cancelled or reply.compensated or reply.compensation_failed),
    )


def outcome_status(actor_id: str, ended: InvocationEnded, decode: Decode) -> InvocationStatus:
    """An ended invocation, from its journaled outcome (retryable only with a seed)."""
    status = ended_status(ended.invocation, actor_id, ended.reply, decode)
    if status.retryable and not ended.seed:
        return msgspec.structs.replace(status, retryable=False)
    return status


async def invocation_status(
    store: Store, invocation: str, actor_id: str, decode: Decode
) -> InvocationStatus | None:
    """Where ``invocation`` is, read from the journal; None if it was never accepted."""
    found = await view(store, actor_id)
    if found.unfinished is not None and found.unfinished.invocation == invocation:
        return InvocationStatus(invocation, actor_id, "running", handler=found.unfinished.handler)
    for message in found.queued:
        if message.invocation == invocation:
            return queued_status(actor_id, message, invocation in found.cancels)
    ended = await find_outcome(store, actor_id, invocation)
    return None if ended is None else outcome_status(actor_id, ended, decode)


async def invocation_statuses(
    store: Store, actor_id: str, decode: Decode
) -> list[InvocationStatus]:
    """The actor's invocations: the running one, the queued ones in order, then the ended
    ones, the latest first."""
    found = await view(store, actor_id)
    listed: list[InvocationStatus] = []
    if found.unfinished is not None:
        started = found.unfinished
        listed.append(
            InvocationStatus(started.invocation, actor_id, "running", handler=started.handler)
        )
    for message in found.queued:
        listed.append(queued_status(actor_id, message, message.invocation in found.cancels))
    seen = {status.invocation for status in listed}
    ended = await outcomes(store, actor_id)
    for outcome in reversed(list(ended.values())):
        if outcome.invocation not in seen:
            listed.append(outcome_status(actor_id, outcome, decode))
    return listed


def not_retryable(invocation: str, status: InvocationStatus) -> str:
    """Why an operator cannot retry ``invocation``."""
    if status.state == "completed":
        return f"invocation {invocation} completed; only failed invocations can be retried"
    if status.state == "cancelled":
        return f"invocation {invocation} was cancelled; send a new message instead"
    if status.compensated or status.compensation_failed:
        return (
            f"invocation {invocation} failed and its compensations ran "
            f"({', '.join(status.compensated + status.compensation_failed)}); retrying would "
            f"build on undone effects. Send a new message instead."
        )
    return (
        f"invocation {invocation} cannot be retried: its journaled steps were not kept "
        f"(too large, or it ended before this version of actorflow)"
    )


async def retry_seed(
    store: Store, stream: str, position: int, budget: int
) -> tuple[SeedRecord, ...]:
    """A failed turn's records, from its `TurnStarted` at ``position`` on, kept with its
    outcome so an operator can retry it: the step whose error ended the turn (its last
    record) is left out, to run again. Empty if they take more than ``budget`` bytes."""
    records: list[SeedRecord] = []
    async for batch in store.read_batches(stream, position):
        records.extend(SeedRecord(record.type, record.data) for record in batch)
    entries = [ACTOR_CODEC.decode_payload(r.type, r.data, stream, 0) for r in records]
    if len(entries) > 1 and isinstance(entries[-1], StepFailed):
        failing = entries[-1].step
        records = [
            record
            for record, entry in zip(records, entries, strict=True)
            if getattr(entry, "step", None) != failing
        ]
    size = sum(len(record.data) + len(record.type) + 8 for record in records)
    return () if size > budget else tuple(records)
