"""`ActorHost`: one activated actor: its journal writer, inbox, replay and turn loop.

Activation claims the actor's stream (a new owner epoch), restores its latest checkpoint
(the journal snapshot written with every turn's end), re-runs the one turn that had not
ended, if any, at the exact step it reached, then takes inbox messages one turn at a time.
A finished turn is never replayed. An idle actor is passivated: dropped from memory, its
journal its existence.

If the journal fails under the actor, the host stops (`JournalFailure`) and the runtime
activates a fresh one after a pause: nothing the handler did after the failed write
happened, and the fresh host replays from what the journal holds.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import anyio
import msgspec

from actorflow import _tracing
from actorflow._actor import Actor, HandlerInfo
from actorflow._budget import Amount, Decision, Grant
from actorflow._context import ActorRef
from actorflow._errors import (
    ActorflowError,
    ContinuedAsNew,
    JournalFailure,
    NonDeterminismError,
    Suspended,
    TurnCancelled,
)
from actorflow._events import (
    ACTOR_CODEC,
    INBOX_CODEC,
    RULES,
    ActorEntry,
    ActorSnapshot,
    Continuation,
    ErrorInfo,
    EventDelivered,
    InvocationCancelled,
    InvocationEnded,
    MessageAccepted,
    Reply,
    ReplyTo,
    SeedRecord,
    StepCompleted,
    StepEntry,
    StepFailed,
    TurnCancelling,
    TurnCompleted,
    TurnEnd,
    TurnFailed,
    TurnStarted,
    actor_stream,
    inbox_stream,
)
from actorflow._values import decoder_for, encode, error_info
from actorflow.replay._recorded import RecordedTurn
from actorflow.replay._turn import Turn
from actorflow.runtime import (
    _budgets,
    _checkpoint,
    _continuation,
    _inspect,
    _pinned,
    _quarantine,
    _turn_end,
)
from actorflow.runtime._state_parts import StateParts
from actorflow.runtime._turn_groups import TurnGroup, read_turns
from journal import (
    Appended,
    ConflictError,
    FencingError,
    StorageError,
    StoreClosedError,
    StreamAppend,
)

if TYPE_CHECKING:
    from actorflow.runtime._runtime import Runtime
    from actorflow.runtime._status import Damage

log = logging.getLogger("actorflow")

ActorState = Literal[
    "activating",
    "idle",
    "running",
    "waiting-timer",
    "waiting-event",
    "waiting-retry",
    "retrying",
    "stuck",
    "held",
    "corrupt",
    "stopped",
]

#: How many invocations with failed compensations an actor's status lists.
MAX_ATTENTION = 100


#: Queued messages whose arguments an actor keeps in memory; the others are read back from
#: the inbox, by position, when their turn comes (a busy actor's queue costs an int and an
#: id per message, not its arguments).
HELD_MESSAGES = 32


class Queued(NamedTuple):
    """A message waiting for its turn: where it is in the inbox, its invocation and
    handler, and (for the first `HELD_MESSAGES` of the queue) the message itself."""

    position: int
    invocation: str
    handler: str
    message: MessageAccepted | None


#: Journal failures that may go away by themselves (a busy or full store, a lost
#: ownership), unlike those that need a fix (a damaged record, a bug).
_TRANSIENT = (StorageError, ConflictError, FencingError, StoreClosedError)


class ActorHost:
    """One actor in memory; see the module docstring."""

    def __init__(self, runtime: Runtime, cls: type[Actor], key: str, failures: int = 0) -> None:
        self.runtime = runtime
        self.cls = cls
        self.key = key
        self.type_name = cls.__actorflow_name__
        self.actor_id = f"{self.type_name}/{key}"
        self.stream = actor_stream(self.actor_id)
        self.inbox = inbox_stream(self.actor_id)
        self.outcomes = _inspect.OutcomeLog(runtime.store, self.actor_id)
        self.state_parts = StateParts(
            runtime.store, self.actor_id, collecting=bool(runtime.snapshot_every)
        )
        self.clock = runtime.clock
        self.store = runtime.store
        self.record_limit = runtime.record_limit
        self.step_threads = runtime.step_threads
        self.retry = cls.__actorflow_retry__ or runtime.default_retry
        self.key_tag = runtime.key_tag
        self.events = cls.__actorflow_events__
        self.chunks = runtime.streams.sink(self)  # where ctx.stream sends chunks
        self.suspending = anyio.Event()
        self.state: ActorState = "activating"
        self.current: str | None = None
        self.stuck: ActorflowError | None = None
        #: Where its journal is damaged, once it is quarantined (state ``corrupt``).
        self.damage: Damage | None = None
        #: Why the journal stopped this host, if it did (the runtime retries the actor).
        self.failure: JournalFailure | None = None
        #: Journal failures in a row before this host (for the runtime's backoff).
        self.failures = failures
        self.waiting_on: str | None = None
        self.instance: Actor = cls()
        self.instance.key = key
        state_type = cls.__actorflow_state__
        self.instance.state = state_type() if state_type is not None else None
        self._state_bytes = encode(self.instance.state)  # the state as last checkpointed
        self.turns = 0
        self.version = ""  # the code version of its latest turn ("": none, or unrecorded)
        #: An invocation between two segments (`Context.continue_as_new`), if any.
        self.continuation: Continuation | None = None
        self.results: collections.OrderedDict[str, Reply] = collections.OrderedDict()
        self.attention: list[str] = []
        self._position = 0  # the actor stream's last position known to be committed
        self._reserved = 0  # ... and including appends under way
        self._epoch = 0
        self._inbox_read = 0
        self._message_done = 0
        self._messages: collections.deque[Queued] = collections.deque()
        self._held = 0  # how many queued messages keep their arguments in memory
        #: Sends to this actor under way (for the queued-messages bound).
        self.sending = 0
        self._events: dict[str, collections.deque[tuple[int, EventDelivered]]] = {}
        self._buffered_events = 0
        self._consumed: set[int] = set()
        self.activated = anyio.Event()  # set once activation and replay are over
        self.scope = anyio.CancelScope()  # cancelled to abandon the actor at shutdown
        self._notified = anyio.Event()
        # Notifications of new inbox entries, and how many of them a completed read covers:
        # a read cut short (its waiter cancelled) leaves them unequal, so nothing is lost.
        self._notifications = 0
        self._read_up_to = 0
        # For the queue bound: the last inbox position known committed, and notifications
        # of appends whose positions are unknown (they failed, and may have committed).
        self._committed = 0
        self._unplaced = 0
        self._inbox_lock = anyio.Lock()
        self.closing = False
        self.notified_late = False
        #: Another worker owns the actor now (its lease was taken): write nothing more.
        self.fenced = False
        self.turn: Turn | None = None
        self.cancels: set[str] = set()
        #: Deliveries of events to this actor under way (for the pending-events bound).
        self.delivering = 0
        #: Why the runtime is stopping (set by `Runtime.shutdown`), or None.
        self.stopping: str | None = None
        self.draining = anyio.Event()

    # -- the TurnHost protocol ------------------------------------------------------------

    async def journal(
        self,
        entries: Sequence[ActorEntry],
        extra: Sequence[StreamAppend] = (),
        snapshot: bytes | None = None,
    ) -> None:
        """Append to the actor's stream (and ``extra`` parts in the same transaction),
        at the position this owner expects and under its epoch; with ``snapshot``, replace
        the actor's checkpoint in the same transaction.

        A failure of the journal stops the running turn (`JournalFailure`); this host
        writes nothing more, and the runtime replays the actor in a fresh one.
        """
        if self.failure is not None:
            raise self.failure
        entries = _tracing.stamped(self, entries)
        encode = ACTOR_CODEC.encode
        records = (encode(entries[0]),) if len(entries) == 1 else tuple(map(encode, entries))
        expected = self._reserved
        self._reserved = end = expected + len(records)
        part = StreamAppend(self.stream, records, expected, self._epoch, snapshot)
        appended: Sequence[Appended] = ()
        try:
            appended = await self.store.append_many([part, *extra] if extra else (part,))
        except Exception as exc:
            raise self._failed(exc) from exc
        finally:
            # Wake the receivers of messages and replies, even when the write failed: it
            # may have committed all the same (its acknowledgement lost), and a spurious
            # wakeup costs a read where a missed one would leave them waiting.
            if extra:
                landed = {where.stream: where.last_position for where in appended}
                for other in extra:
                    if other.stream.startswith("inbox/"):
                        receiver = other.stream.removeprefix("inbox/")
                        self.runtime.notify(receiver, landed.get(other.stream))
        if end > self._position:
            self._position = end
        _tracing.journaled(self, entries)
        metrics = self.runtime.metrics
        metrics.appends += 1
        if entries and isinstance(entries[0], (StepCompleted, StepFailed)):
            metrics.steps += 1

    def _failed(self, exc: BaseException) -> JournalFailure:
        if self.failure is None:
            self.failure = JournalFailure(self.actor_id, exc)
            if self.turn is not None:
                self.turn.abort(self.failure)
        return self.failure

    def take_event(self, name: str) -> tuple[int, EventDelivered] | None:
        """The oldest unconsumed event called ``name`` (removed from the buffer)."""
        queue = self._events.get(name)
        if not queue:
            return None
        position, event = queue.popleft()
        self._buffered_events -= 1
        self._consumed.add(position)
        _tracing.event_taken(self, event.trace)
        return position, event

    def consumed_event(self, position: int) -> None:
        """Replay consumed the event at ``position``: drop it from the buffer."""
        self._consumed.add(position)
        for queue in self._events.values():
            for index, (at, _) in enumerate(queue):
                if at == position:
                    del queue[index]
                    self._buffered_events -= 1
                    return

    async def event_arrival(self) -> None:
        """Return once new inbox entries may have been buffered."""
        notified = self._notified
        if self._notifications == self._read_up_to:
            await notified.wait()
        try:
            await self.read_new()
        except Exception as exc:  # a damaged or failed read stops the turn, never reaches it
            raise self._failed(exc) from exc

    def prepare_send(
        self,
        target: ActorRef,
        handler: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        invocation: str,
        reply_to: ReplyTo | None,
        budget: Grant | None = None,
    ) -> StreamAppend:
        """Validate a message to another actor; return the append that accepts it."""
        return self.runtime.accept_message(
            target, handler, args, kwargs, invocation, reply_to, budget=budget
        )

    async def reserve(
        self,
        grant: Grant,
        hold: str,
        asked: Amount,
        open_ended: bool,
        entry: Callable[[Decision], StepCompleted],
        actor_id: str,
    ) -> Decision:
        """Reserve from a budget's ledger (`actorflow.runtime._budgets.reserve`)."""
        return await _budgets.reserve(self, grant, hold, asked, open_ended, entry)

    def spent(self, amount: Amount) -> None:
        """A step of this actor settled ``amount`` (counted by actor type)."""
        self.runtime.metrics.budget_settled(self.type_name, _budgets.parts(amount))

    def result_type(self, target: ActorRef, handler: str) -> Any:
        """The annotated result type of another actor's handler."""
        return self.runtime.handler_info(target.type_name, handler).result_type

    def continuation_args(
        self, handler: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bytes:
        """The next segment's arguments, checked (`Context.continue_as_new`)."""
        return _continuation.encode_args(self, handler, args, kwargs)

    # -- inbox ----------------------------------------------------------------------------

    def notify(self, position: int | None = None) -> None:
        """New inbox entries were committed for this actor, through inbox ``position``
        (None: an append that failed, and may have committed)."""
        if self.closing:
            self.notified_late = True
        self._notifications += 1
        if position is None:
            self._unplaced += 1
        elif position > self._committed:
            self._committed = position
        notified, self._notified = self._notified, anyio.Event()
        notified.set()

    def wake(self) -> None:
        """Wake the actor if it idles (the runtime is stopping it)."""
        notified, self._notified = self._notified, anyio.Event()
        notified.set()

    def notified(self) -> bool:
        """Whether inbox entries were committed that this actor has not read yet."""
        return self._notifications != self._read_up_to

    async def read_new(self) -> None:
        """Read the inbox if a notification came since the last complete read."""
        seen, unplaced = self._notifications, self._unplaced
        if seen != self._read_up_to:
            await self.read_inbox()
            self._read_up_to = max(self._read_up_to, seen)
            self._unplaced -= unplaced

    async def read_inbox(self) -> None:
        """Buffer inbox entries appended since the last read."""
        async with self._inbox_lock:
            async for batch in self.store.read_batches(self.inbox, self._inbox_read + 1):
                for record in batch:
                    self._buffer(record.position, INBOX_CODEC.decode(record))
                self._inbox_read = batch[-1].position

    def _buffer(self, position: int, entry: Any) -> None:
        if isinstance(entry, MessageAccepted):
            if position > self._message_done:
                held = entry if self._held < HELD_MESSAGES else None
                self._held += held is not None
                self._messages.append(Queued(position, entry.invocation, entry.handler, held))
        elif isinstance(entry, EventDelivered):
            if position not in self._consumed:
                self._buffer_event(position, entry)
        elif isinstance(entry, InvocationCancelled):
            self.cancel(entry.invocation)

    def _buffer_event(self, position: int, event: EventDelivered) -> None:
        self._events.setdefault(event.name, collections.deque()).append((position, event))
        self._buffered_events += 1

    def pending_events(self) -> int:
        """Events delivered and not consumed yet, with deliveries under way."""
        return self._buffered_events + self.delivering

    def queued(self, invocation: str) -> bool:
        """Whether ``invocation`` waits for its turn (in the inbox, or to continue)."""
        if self.continuation is not None and self.continuation.invocation == invocation:
            return True
        return any(queued.invocation == invocation for queued in self._messages)

    def queued_messages(self) -> list[Queued]:
        """The messages waiting for their turns, in order."""
        return list(self._messages)

    def queue_length(self) -> int:
        """Messages waiting for their turns, with sends under way and inbox entries
        committed but not read yet (counted as messages: an upper bound, without a read).

        Entries not read yet are counted by position (the last committed, less the last
        read), so an entry buffered by a read under way is not counted twice; an append
        whose position is unknown (it failed) counts as one until the next read."""
        unread = max(0, self._committed - self._inbox_read) + self._unplaced
        return len(self._messages) + self.sending + unread

    def cancel(self, invocation: str) -> None:
        """Cancel ``invocation``: now if it is running, else when its turn starts."""
        self.cancels.add(invocation)
        if self.turn is not None and self.turn.invocation == invocation:
            self.turn.cancel("cancelled by request")

    # -- activation and replay ------------------------------------------------------------

    async def activate(self) -> TurnGroup | None:
        """Claim the stream, restore the checkpoint, replay turns journaled after it that
        ended (only journals written before checkpoints came with every turn have any);
        return the unfinished turn to resume, if any."""
        self._epoch = await self.store.claim(self.stream)
        # One read says what there is to read (a new actor has neither a checkpoint nor
        # turns, one passivated at a turn's end has no turn after its checkpoint) and where
        # its outcomes end (only this host appends to them while it holds the stream).
        info, outcomes = await self.runtime.stream_infos((self.stream, self.outcomes.stream))
        self.outcomes.known(outcomes.last_position)
        start = 1
        snapshot = await self.store.load_snapshot(self.stream) if info.snapshot_position else None
        if snapshot is not None:
            checkpoint = msgspec.msgpack.decode(snapshot.data, type=ActorSnapshot)
            await _checkpoint.restore(self, checkpoint)
            start = snapshot.position + 1
        self._position = self._reserved = info.last_position
        await self.read_inbox()
        groups: list[TurnGroup] = []
        if info.last_position >= start:
            groups = await read_turns(self.store, self.stream, self.actor_id, start)
        if groups and self.continuation is not None:
            self.continuation = None  # its turn is journaled
        resume = groups.pop() if groups and groups[-1].end is None else None
        for group in groups:
            await self._rerun(group)
        return resume

    async def _rerun(self, group: TurnGroup) -> None:
        """Re-run a journaled turn: a finished one must end as it did; an unfinished one
        goes on live from the step where it stopped."""
        self._take_message(group.started.inbox)
        await self._run_turn(group.started, group.recorded(self.actor_id))

    def _take_message(self, position: int) -> None:
        while self._messages and self._messages[0].position <= position:
            self._held -= self._messages.popleft().message is not None
        self._message_done = max(self._message_done, position)

    async def _head_message(self) -> tuple[int, MessageAccepted]:
        """The first queued message, its arguments read back from the inbox if they were
        not kept (and the arguments of the next ones kept, up to `HELD_MESSAGES`)."""
        head = self._messages[0]
        if head.message is None:
            await self._hold_next(head.position)
        head = self._messages[0]
        assert head.message is not None
        return head.position, head.message

    async def _hold_next(self, start: int) -> None:
        """Read back the arguments of the queue's messages from inbox position ``start``
        on: the head's, then the next ones' while fewer than `HELD_MESSAGES` are kept
        (a page of the inbox at a time; the rest of each page is let go)."""
        wanted = {q.position: i for i, q in enumerate(self._messages) if q.message is None}
        last = max(wanted)
        async for batch in self.store.read_batches(self.inbox, start):
            for record in batch:
                index = wanted.get(record.position)
                if index is not None:
                    entry = INBOX_CODEC.decode(record)
                    assert isinstance(entry, MessageAccepted)
                    self._messages[index] = self._messages[index]._replace(message=entry)
                    self._held += 1
                if record.position >= last or (index != 0 and self._held >= HELD_MESSAGES):
                    return

    # -- turns ----------------------------------------------------------------------------

    async def _continue(self) -> None:
        """Start the turn that continues an invocation in a fresh segment."""
        started = _continuation.next_segment(self)
        if self.runtime.tracing is not None:
            started = self.runtime.tracing.begin(self, started, msgspec.UNSET)
        self.current, self.continuation = started.invocation, None
        at = self._reserved + 1
        await self.journal([started])
        await self._run_turn(started, RecordedTurn(self.actor_id, started, at, []))

    async def _next_turn(self) -> None:
        position, message = await self._head_message()
        now = self.clock.now()
        info = self.cls.__actorflow_handlers__.get(message.handler)
        limits = [message.deadline, info.options.deadline if info is not None else None]
        budget = min((d for d in limits if d is not None), default=None)
        started = TurnStarted(
            self.turns + 1,
            message.invocation,
            position,
            message.handler,
            message.args,
            now,
            self.runtime.versions[self.type_name],
            message.reply_to,
            None if budget is None else now + budget,
            RULES,
            message.retry_of,
            budget=message.budget,
        )
        if self.runtime.tracing is not None:  # the turn's span starts, to journal it
            started = self.runtime.tracing.begin(self, started, message.trace)
        seeded = self._seeded(started, message.seed)
        self.current = message.invocation  # before it leaves the queue: always findable
        self._take_message(position)
        at = self._reserved + 1
        await self.journal([started, *seeded])
        steps = [(at + 1 + index, entry) for index, entry in enumerate(seeded)]
        await self._run_turn(started, RecordedTurn(self.actor_id, started, at, steps))
        self.runtime.metrics.turn_seconds.observe(self.clock.now() - now)

    def _seeded(self, started: TurnStarted, seed: Sequence[SeedRecord]) -> list[StepEntry]:
        """The steps a retried turn starts with: the failed turn's, renumbered."""
        entries: list[StepEntry] = []
        for index, record in enumerate(seed[1:], start=1):  # seed[0]: the failed TurnStarted
            entry = ACTOR_CODEC.decode_payload(record.type, record.data, "seed", index)
            if isinstance(entry, StepEntry):
                entries.append(msgspec.structs.replace(entry, turn=started.turn))
        return entries

    async def _run_turn(self, started: TurnStarted, recorded: RecordedTurn) -> None:
        """Run (or replay) one turn to its end; journal the end unless it was journaled."""
        self.turns, self.version = started.turn, started.version
        self.current = started.invocation
        self.state = "running"
        deadline = started.deadline if recorded.end is None else None
        turn = Turn(self, self.key, started, recorded, deadline)
        self.turn = turn
        self.instance.ctx = turn.context
        if started.invocation in self.cancels:
            turn.cancel("cancelled by request")
        elif self.stopping is not None and self.cls.__actorflow_shutdown__ == "compensate":
            turn.cancel(self.stopping)
        continued: ContinuedAsNew | None = None
        try:
            if self.runtime.tracing is None or recorded.end is not None:
                reply = await self._outcome(turn, started)
            else:  # in the turn's span (a finished turn re-run from an old journal has none)
                reply = await self.runtime.tracing.run_turn(
                    self, started, self._outcome(turn, started), recorded.traces()
                )
        except ContinuedAsNew as exc:
            continued = exc
        finally:  # the context holds the turn, the turn this host: no cycle outlives a turn
            self.turn = None
            turn.context.close()
        if continued is not None:
            if recorded.end is not None:  # journaled by older code, ending otherwise
                now = "continuing as new"
                raise NonDeterminismError(self.actor_id, recorded.end_position, "its end", now)
            recorded.check_complete(f"the end of turn {started.turn}'s segment")
            await _continuation.end_segment(self, started, continued)
            return
        end = recorded.end
        if end is not None:  # a turn journaled before checkpoints came with every turn
            _turn_end.check_same_end(self, recorded, end, reply)
            if not reply.ok and started.rules >= 2:
                self._revert_state()
        else:
            recorded.check_complete(f"the end of turn {started.turn}")
            reply = _turn_end.fit(self, started, reply)
            if not reply.ok:
                self._revert_state()
            await self._journal_end(started, reply, turn, recorded)
        self._finish(started.invocation, reply)
        self.cancels.discard(started.invocation)
        if self.stopping is not None:
            outcome = "compensated" if reply.cancelled else "finished"
            self.runtime.stopped_turn(self.actor_id, outcome)

    async def _outcome(self, turn: Turn, started: TurnStarted) -> Reply:
        """Run the handler (in a scope `Turn.abort` can cancel); its result or error as a
        reply, compensating on error; raise why the turn was aborted, if it was."""
        try:
            if turn.cancel_reason is not None and turn.recorded.empty and not turn.recorded.end:
                raise TurnCancelled(turn.cancel_reason)  # cancelled before it began
            info = self.runtime.handler_info(self.type_name, started.handler)
            with anyio.CancelScope() as scope:
                turn.scope = scope
                result = await info.fn(self.instance, **info.decode_args(started.args))
            if scope.cancelled_caught:
                turn.raise_if_aborted()
                raise Suspended()  # pragma: no cover - only abort cancels this scope
            if turn.recorded.cancelled is not None or turn.cancellable:
                # Cancelled while it ran without a step boundary to stop at.
                raise TurnCancelled(turn.recorded.cancelled or turn.cancel_reason or "cancelled")
            data = info.encode_result(self.type_name, result)
            return Reply(True, data, handler=started.handler)
        except (NonDeterminismError, Suspended, JournalFailure):
            raise
        except TurnCancelled as cancelled:
            turn.compensating = True
            if turn.recorded.cancelled is None:  # live: journal it before compensating
                marker = TurnCancelling(started.turn, cancelled.reason, self.clock.now())
                await self.journal([marker])
            if turn.can_compensate:
                await turn.compensate_all()
            error = ErrorInfo("actorflow.Cancelled", cancelled.reason)
            return self._failure(started, turn, error, cancelled=True)
        except Exception as exc:
            if turn.diverged is not None:
                raise turn.diverged from exc
            if turn.failure is not None:
                raise turn.failure from exc
            await self._compensate_on_error(turn, started)
            return self._failure(started, turn, error_info(exc))

    def _failure(
        self, started: TurnStarted, turn: Turn, error: ErrorInfo, cancelled: bool = False
    ) -> Reply:
        return Reply(
            False,
            error=error,
            handler=started.handler,
            cancelled=cancelled,
            compensated=tuple(turn.undone),
            compensation_failed=tuple(turn.undo_failed),
        )

    async def _compensate_on_error(self, turn: Turn, started: TurnStarted) -> None:
        handlers = self.cls.__actorflow_handlers__
        info: HandlerInfo | None = handlers.get(started.handler)
        if info is not None and info.options.compensate_on_error and turn.can_compensate:
            turn.compensating = True
            await turn.compensate_all()

    def _revert_state(self) -> None:
        """A turn that did not complete leaves the state as it was before it."""
        state_type = self.cls.__actorflow_state__
        if state_type is not None:
            self.instance.state = decoder_for(state_type).decode(self._state_bytes)

    async def _journal_end(
        self, started: TurnStarted, reply: Reply, turn: Turn, recorded: RecordedTurn
    ) -> None:
        """Journal the turn's end, its outcome and the actor's new checkpoint as one
        transaction (with the reply to a caller, if any)."""
        at = self.clock.now()
        entry: TurnEnd
        if reply.ok:
            result = msgspec.Raw(reply.result)
            entry = TurnCompleted(started.turn, started.invocation, result, at, started.inbox)
        else:
            error = reply.error or ErrorInfo("builtins.Exception", "unknown")
            entry = TurnFailed(
                started.turn,
                started.invocation,
                error,
                at,
                started.inbox,
                reply.compensated,
                reply.cancelled,
                reply.compensation_failed,
            )
            if reply.compensation_failed:
                self.attention = [*self.attention, started.invocation][-MAX_ATTENTION:]
        seed: tuple[SeedRecord, ...] = ()
        if not (reply.ok or reply.cancelled or reply.compensated or reply.compensation_failed):
            seed = await _inspect.retry_seed(
                self.store, self.stream, recorded.position, self.store.max_record_bytes // 2
            )
            if not seed:
                log.warning(
                    "actor %s: invocation %s failed with too many journaled steps to keep "
                    "for a retry; it cannot be retried",
                    self.actor_id,
                    started.invocation,
                )
        ended = InvocationEnded(started.invocation, started.turn, reply, at, seed)
        extra = await self.outcomes.parts(ended)
        extra += await _budgets.at_end(self, turn)  # what the turn still holds of its budget
        if started.reply_to is not None:
            event = EventDelivered(started.reply_to.event, msgspec.Raw(encode(reply)), at)
            extra.append(
                StreamAppend(inbox_stream(started.reply_to.actor), (INBOX_CODEC.encode(event),))
            )
        if reply.ok:
            self._state_bytes = encode(self.instance.state)
        await _checkpoint.end_turn(self, entry, extra, started.turn)
        self.outcomes.committed()
        await _checkpoint.compact(self)

    def _finish(self, invocation: str, reply: Reply) -> None:
        self.results[invocation] = reply
        self.results.move_to_end(invocation)
        while len(self.results) > self.runtime.keep_results:
            self.results.popitem(last=False)
        self.current = None
        self.runtime.invocation_ended(invocation, reply)

    # -- the actor's life -----------------------------------------------------------------

    async def run(self) -> None:
        """Activate, then process turns until idle long enough, stuck, or stopped."""
        try:
            try:
                resume = await self.activate()
            finally:
                self.activated.set()
            if resume is not None:
                await self._rerun(resume)
            await self._serve()
        except Suspended:
            if self.current is not None:
                self.runtime.stopped_turn(self.actor_id, "checkpointed")
            self.state = "stopped"
        except JournalFailure as failure:
            if not _quarantine.quarantine_if_damaged(self, failure.cause):
                self._retrying(failure)
        except NonDeterminismError as exc:
            if not _pinned.hold(self, exc):
                self._stuck(exc)
        except Exception as exc:
            if _quarantine.quarantine_if_damaged(self, exc):
                pass
            elif self.failure is not None:  # a read failed after a write did
                self._retrying(self.failure)
            elif isinstance(exc, _TRANSIENT):
                self._retrying(JournalFailure(self.actor_id, exc))
            else:
                self._stuck(exc)

    def _retrying(self, failure: JournalFailure) -> None:
        self.failure = failure
        self.state = "retrying"
        log.warning("%s; retrying", failure)

    def _stuck(self, exc: Exception) -> None:
        self.stuck = exc if isinstance(exc, ActorflowError) else ActorflowError(str(exc))
        self.state = "stuck"
        if isinstance(exc, NonDeterminismError):
            log.error("%s", exc)
        else:
            log.error("actor %s is stuck: %s", self.actor_id, exc, exc_info=exc)
        self.runtime.actor_stuck(self.actor_id)

    async def _serve(self) -> None:
        while not self.suspending.is_set():
            if self.continuation is not None:  # the invocation runs on, even when draining
                await self._continue()
                continue
            if self.draining.is_set():
                break
            notified = self._notified
            await self.read_new()
            if self._messages:
                if self.runtime.hands_over(self):  # newer code runs elsewhere: it goes there
                    return
                await self._next_turn()
                continue
            self.state = "idle"
            with anyio.move_on_after(self.runtime.idle_after(self)):
                await notified.wait()  # new messages, or `wake` when the runtime stops
            if not (notified.is_set() or self.suspending.is_set() or self.draining.is_set()):
                self.closing = True  # from here a notification re-activates the actor
                await self.read_inbox()
                if not self._messages:
                    return
                self.closing = False
        raise Suspended()

    def status_state(self) -> str:
        """The state shown by the status API (one of `ACTOR_STATES`)."""
        if self.state == "running" and self.waiting_on is not None:
            return f"waiting-{self.waiting_on}"
        if self.state in ("activating", "stopped"):
            return "pending"  # between processes or activations: work may be journaled
        return self.state
