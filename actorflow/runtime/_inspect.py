"""Reading an actor's journal from outside it: its checkpoint, its queued messages, the
turn it has not finished, and the outcomes of its invocations.

For actors that are not in memory (passivated, or hosted by a process that stopped):
what `Runtime.status`, `Runtime.invocation` and `Runtime.invocations` report is read from
the journal here, so an actor says the same before and after a restart.

An invocation's outcome is found through its index (`InvocationIndexed`, on its own
``invocation/`` stream, written by `OutcomeLog` with the outcome): a few small reads,
however many invocations the actor has run. Outcomes journaled before the index existed
are found by scanning them, as before; their number never grows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import msgspec

from actorflow._events import (
    ACTOR_CODEC,
    INBOX_CODEC,
    INDEX_CODEC,
    OUTCOME_CODEC,
    ActorSnapshot,
    InvocationCancelled,
    InvocationEnded,
    InvocationIndexed,
    MessageAccepted,
    Reply,
    SeedRecord,
    StepFailed,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    actor_stream,
    inbox_stream,
    invocation_stream,
    outcomes_stream,
)
from actorflow.runtime._status import InvocationStatus
from journal import Store, StreamAppend, StreamInfo

#: Decodes an invocation's result (its handler's return type), given its actor id.
Decode = Callable[[str, Reply], Any]


@dataclasses.dataclass(frozen=True)
class Queued:
    """A message waiting for its turn: where it is in the inbox, and what it asks."""

    position: int
    invocation: str
    handler: str


@dataclasses.dataclass
class JournalView:
    """What the journal says of one actor, read once."""

    turns: int = 0
    #: The inbox position of the last message a turn took.
    inbox_done: int = 0
    #: The turn that started and has not ended, if any.
    unfinished: TurnStarted | None = None
    #: Messages after ``inbox_done``, in order, and the invocations asked to be cancelled.
    queued: list[Queued] = dataclasses.field(default_factory=list)
    cancels: set[str] = dataclasses.field(default_factory=set)
    attention: list[str] = dataclasses.field(default_factory=list)
    #: The code version of the latest turn ("" if unknown).
    version: str = ""

    @property
    def has_work(self) -> bool:
        """Whether a turn is unfinished or a message waits for its turn."""
        return self.unfinished is not None or bool(self.queued)

    def invocations_in_progress(self) -> set[str]:
        """The invocations running or queued."""
        running = {self.unfinished.invocation} if self.unfinished is not None else set()
        return running | {message.invocation for message in self.queued}


async def read_checkpoint(store: Store, actor_id: str) -> ActorSnapshot | None:
    """The actor's latest checkpoint, if it has one."""
    snapshot = await store.load_snapshot(actor_stream(actor_id))
    if snapshot is None:
        return None
    return msgspec.msgpack.decode(snapshot.data, type=ActorSnapshot)


async def view(store: Store, actor_id: str) -> JournalView:
    """Read the actor's checkpoint, the actor stream after it, and the inbox after the
    last message a turn took (everything before is folded into the checkpoint)."""
    checkpoint = await read_checkpoint(store, actor_id)
    start = 0
    if checkpoint is not None:
        start = (await store.stream_info(actor_stream(actor_id))).snapshot_position
    return await view_after(store, actor_id, checkpoint, start)


async def view_after(
    store: Store, actor_id: str, checkpoint: ActorSnapshot | None, snapshot_position: int
) -> JournalView:
    """`view`, given the checkpoint and the actor-stream position it covers."""
    found = JournalView()
    if checkpoint is not None:
        found.turns, found.inbox_done = checkpoint.turn, checkpoint.inbox_done
        found.attention = list(checkpoint.attention)
        found.version = checkpoint.version
        continuation = checkpoint.continuation
        if continuation is not None:  # its next turn is not journaled yet
            found.unfinished = TurnStarted(
                checkpoint.turn + 1,
                continuation.invocation,
                continuation.inbox,
                continuation.handler,
                continuation.args,
                0.0,
                checkpoint.version,
            )
    async for batch in store.read_batches(actor_stream(actor_id), snapshot_position + 1):
        for record in batch:
            entry = ACTOR_CODEC.decode(record)
            if isinstance(entry, TurnStarted):
                found.unfinished, found.turns = entry, entry.turn
                found.version = entry.version
                found.inbox_done = max(found.inbox_done, entry.inbox)
            elif isinstance(entry, TurnCompleted | TurnFailed):
                found.unfinished = None
    async for batch in store.read_batches(inbox_stream(actor_id), found.inbox_done + 1):
        for record in batch:
            item = INBOX_CODEC.decode(record)
            if isinstance(item, MessageAccepted):
                found.queued.append(Queued(record.position, item.invocation, item.handler))
            elif isinstance(item, InvocationCancelled):
                found.cancels.add(item.invocation)
    return found


async def quick_view(
    store: Store, actor_id: str, actor: StreamInfo | None, inbox: StreamInfo
) -> JournalView:
    """`view`, in one read when nothing was journaled after the checkpoint (its actor and
    inbox stream infos say so): the usual case of an actor at rest."""
    checkpoint = None if actor is None else await read_checkpoint(store, actor_id)
    if (
        actor is None
        or checkpoint is None
        or actor.last_position > actor.snapshot_position
        or inbox.last_position > checkpoint.inbox_done
    ):
        position = 0 if actor is None or checkpoint is None else actor.snapshot_position
        return await view_after(store, actor_id, checkpoint, position)
    attention = list(checkpoint.attention)
    return JournalView(
        checkpoint.turn, checkpoint.inbox_done, attention=attention, version=checkpoint.version
    )


# -- outcomes and their index -------------------------------------------------------------


class OutcomeLog:
    """Writes an actor's outcomes with their index: each outcome at the position its
    writer expects, and that position on the invocation's ``invocation/`` stream, in the
    turn's end transaction. One per activation of the actor (its only writer)."""

    def __init__(self, store: Store, actor_id: str) -> None:
        self.store = store
        self.actor_id = actor_id
        self.stream = outcomes_stream(actor_id)
        self._last: int | None = None  # the outcomes' last position, once read
        self._unindexed: int | None = None

    def known(self, last: int) -> None:
        """The outcomes' last position, as the caller just read it."""
        self._last = last
        self._unindexed = 0 if last == 0 else None

    async def parts(self, ended: InvocationEnded) -> list[StreamAppend]:
        """The appends that journal ``ended`` and index it; call `committed` once they
        are."""
        if self._last is None:
            self._last = await self.store.last_position(self.stream)
        if self._unindexed is None:
            self._unindexed = await unindexed_through(self.store, self.actor_id, self._last)
        index = InvocationIndexed(self._last + 1, self._unindexed)
        return [
            StreamAppend(self.stream, (OUTCOME_CODEC.encode(ended),), self._last),
            StreamAppend(invocation_stream(ended.invocation), (INDEX_CODEC.encode(index),)),
        ]

    def committed(self) -> None:
        """The parts of the last `parts` call were committed."""
        assert self._last is not None
        self._last += 1


async def latest_index(store: Store, invocation: str) -> InvocationIndexed | None:
    """Where the latest outcome of ``invocation`` is, if it ended since the index exists."""
    found = None
    async for batch in store.read_batches(invocation_stream(invocation)):
        found = INDEX_CODEC.decode(batch[-1])
    return found


async def outcome_at(store: Store, actor_id: str, position: int) -> InvocationEnded | None:
    """The outcome at ``position`` of the actor's ``outcomes/`` stream (one record read)."""
    async for batch in store.read_batches(outcomes_stream(actor_id), position, limit=1):
        if batch[0].position == position:
            return OUTCOME_CODEC.decode(batch[0])
    return None


async def unindexed_through(store: Store, actor_id: str, last: int) -> int:
    """How many of the actor's first outcomes (of ``last``) were written before the index
    existed: what the latest outcome's index says, or all of them if it has none."""
    if last == 0:
        return 0
    newest = await outcome_at(store, actor_id, last)
    index = None if newest is None else await latest_index(store, newest.invocation)
    return index.unindexed if index is not None and index.position == last else last


async def find_outcome(store: Store, actor_id: str, invocation: str) -> InvocationEnded | None:
    """The latest outcome of ``invocation``, if it ended: through its index, or among the
    outcomes written before the index existed."""
    index = await latest_index(store, invocation)
    if index is not None:
        return await outcome_at(store, actor_id, index.position)
    last = await store.last_position(outcomes_stream(actor_id))
    unindexed = await unindexed_through(store, actor_id, last)
    found = (await unindexed_outcomes(store, actor_id, unindexed)).get(invocation)
    return None if found is None else found[1]


async def unindexed_outcomes(
    store: Store, actor_id: str, through: int
) -> dict[str, tuple[int, InvocationEnded]]:
    """The latest of the actor's outcomes at positions 1 to ``through`` (those written
    before the index existed) for each invocation, with its position."""
    ended: dict[str, tuple[int, InvocationEnded]] = {}
    if through:
        async for batch in store.read_batches(outcomes_stream(actor_id), limit=through):
            for record in batch:
                entry = OUTCOME_CODEC.decode(record)
                ended[entry.invocation] = (record.position, entry)
    return ended


# -- invocation statuses -------------------------------------------------------------------


def queued_status(
    actor_id: str, invocation: str, handler: str, cancelled: bool
) -> InvocationStatus:
    """A queued invocation (``cancelled`` at once if its cancellation was requested)."""
    if not cancelled:
        return InvocationStatus(invocation, actor_id, "queued", handler=handler)
    return InvocationStatus(
        invocation,
        actor_id,
        "cancelled",
        error="cancelled by request",
        error_type="actorflow.Cancelled",
        handler=handler,
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
    """Where ``invocation`` is, read from the journal; None if it was never accepted.

    An outcome that cannot change (it completed, was cancelled, or cannot be retried) is
    the answer at once; otherwise the actor's unfinished turn and queue say whether it
    runs (again)."""
    outcomes = await store.last_position(outcomes_stream(actor_id))
    ended = await find_outcome(store, actor_id, invocation)
    if ended is not None and not ended.seed:
        return outcome_status(actor_id, ended, decode)
    found = await view(store, actor_id)
    if found.unfinished is not None and found.unfinished.invocation == invocation:
        return InvocationStatus(invocation, actor_id, "running", handler=found.unfinished.handler)
    for message in found.queued:
        if message.invocation == invocation:
            cancelled = invocation in found.cancels
            return queued_status(actor_id, invocation, message.handler, cancelled)
    if ended is None and await store.last_position(outcomes_stream(actor_id)) != outcomes:
        # It may have ended between the two reads (on a fleet, another worker runs it).
        ended = await find_outcome(store, actor_id, invocation)
    return None if ended is None else outcome_status(actor_id, ended, decode)


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
