"""`ActorHost`: one activated actor: its journal writer, inbox, replay and turn loop.

Activation claims the actor's stream (a new owner epoch), loads its latest snapshot,
replays every turn journaled after it (handlers re-run; ctx hands back journaled values),
resumes an unfinished turn at the exact step it reached, then takes inbox messages one
turn at a time. An idle actor is passivated: dropped from memory, its journal its existence.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import anyio
import msgspec

from actorflow._actor import Actor, HandlerInfo
from actorflow._context import ActorRef
from actorflow._errors import (
    ActorflowError,
    NonDeterminismError,
    Suspended,
    TurnCancelled,
)
from actorflow._events import (
    ACTOR_CODEC,
    INBOX_CODEC,
    ActorEntry,
    ActorSnapshot,
    ErrorInfo,
    EventDelivered,
    InvocationCancelled,
    MessageAccepted,
    Reply,
    ReplyTo,
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
from actorflow._replay import RecordedTurn
from actorflow._turn import Turn
from actorflow._values import error_info
from journal import StreamAppend

if TYPE_CHECKING:
    from actorflow._runtime import Runtime

log = logging.getLogger("actorflow")

_NONE = msgspec.msgpack.encode(None)

ActorState = Literal[
    "activating", "idle", "running", "waiting-timer", "waiting-event", "stuck", "stopped"
]


class _TurnGroup:
    """A turn as read from the journal: its start, steps and (maybe) end."""

    def __init__(self, position: int, started: TurnStarted) -> None:
        self.position = position
        self.started = started
        self.steps: list[tuple[int, StepEntry]] = []
        self.end: TurnEnd | None = None
        self.end_position = 0
        self.cancelled: str | None = None


class ActorHost:
    """One actor in memory; see the module docstring."""

    def __init__(self, runtime: Runtime, cls: type[Actor], key: str) -> None:
        self.runtime = runtime
        self.cls = cls
        self.key = key
        self.type_name = cls.__actorflow_name__
        self.actor_id = f"{self.type_name}/{key}"
        self.stream = actor_stream(self.actor_id)
        self.inbox = inbox_stream(self.actor_id)
        self.clock = runtime.clock
        self.store = runtime.store
        self.suspending = anyio.Event()
        self.state: ActorState = "activating"
        self.current: str | None = None
        self.stuck: ActorflowError | None = None
        self.waiting_on: str | None = None
        self.instance: Actor = cls()
        self.instance.key = key
        state_type = cls.__actorflow_state__
        self.instance.state = state_type() if state_type is not None else None
        self.turns = 0
        self.results: collections.OrderedDict[str, Reply] = collections.OrderedDict()
        self._position = 0
        self._epoch = 0
        self._inbox_read = 0
        self._message_done = 0
        self._messages: collections.deque[tuple[int, MessageAccepted]] = collections.deque()
        self._events: dict[str, collections.deque[tuple[int, EventDelivered]]] = {}
        self._consumed: set[int] = set()
        self._snapshot_turn = 0  # the turn the latest snapshot was taken after
        self.activated = anyio.Event()  # set once activation and replay are over
        self.scope = anyio.CancelScope()  # cancelled to abandon the actor at shutdown
        self._notified = anyio.Event()
        # Notifications of new inbox entries, and how many of them a completed read covers:
        # a read cut short (its waiter cancelled) leaves them unequal, so nothing is lost.
        self._notifications = 0
        self._read_up_to = 0
        self._inbox_lock = anyio.Lock()
        self.closing = False
        self.notified_late = False
        self.turn: Turn | None = None
        self.cancels: set[str] = set()
        #: Why the runtime is stopping (set by `Runtime.shutdown`), or None.
        self.stopping: str | None = None
        self.draining = anyio.Event()

    # -- the TurnHost protocol ------------------------------------------------------------

    async def journal(
        self, entries: Sequence[ActorEntry], extra: Sequence[StreamAppend] = ()
    ) -> None:
        """Append to the actor's stream (and ``extra`` parts in the same transaction),
        at the position this owner expects and under its epoch."""
        records = tuple(ACTOR_CODEC.encode(entry) for entry in entries)
        expected = self._position
        self._position += len(records)
        part = StreamAppend(self.stream, records, expected, self._epoch)
        await self.store.append_many([part, *extra])
        metrics = self.runtime.metrics
        metrics.appends += 1
        if isinstance(entries[0], StepCompleted | StepFailed):
            metrics.steps += 1

    def take_event(self, name: str) -> tuple[int, EventDelivered] | None:
        """The oldest unconsumed event called ``name`` (removed from the buffer)."""
        queue = self._events.get(name)
        if not queue:
            return None
        position, event = queue.popleft()
        self._consumed.add(position)
        return position, event

    def consumed_event(self, position: int) -> None:
        """Replay consumed the event at ``position``: drop it from the buffer."""
        self._consumed.add(position)
        for queue in self._events.values():
            if queue and queue[0][0] == position:
                queue.popleft()
                return
            for index, (at, _) in enumerate(queue):
                if at == position:
                    del queue[index]
                    return

    async def event_arrival(self) -> None:
        """Return once new inbox entries may have been buffered."""
        notified = self._notified
        if self._notifications == self._read_up_to:
            await notified.wait()
        await self.read_new()

    def prepare_send(
        self,
        target: ActorRef,
        handler: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        invocation: str,
        reply_to: ReplyTo | None,
    ) -> StreamAppend:
        """Validate a message to another actor; return the append that accepts it."""
        return self.runtime.accept_message(target, handler, args, kwargs, invocation, reply_to)

    def sent(self, target: ActorRef) -> None:
        """Wake the receiver of a committed message."""
        self.runtime.notify(target.id)

    def result_type(self, target: ActorRef, handler: str) -> Any:
        """The annotated result type of another actor's handler."""
        return self.runtime.handler_info(target.type_name, handler).result_type

    # -- inbox ----------------------------------------------------------------------------

    def notify(self) -> None:
        """New inbox entries were committed for this actor."""
        if self.closing:
            self.notified_late = True
        self._notifications += 1
        notified, self._notified = self._notified, anyio.Event()
        notified.set()

    def wake(self) -> None:
        """Wake the actor if it idles (the runtime is stopping it)."""
        notified, self._notified = self._notified, anyio.Event()
        notified.set()

    async def read_new(self) -> None:
        """Read the inbox if a notification came since the last complete read."""
        seen = self._notifications
        if seen != self._read_up_to:
            await self.read_inbox()
            self._read_up_to = max(self._read_up_to, seen)

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
                self._messages.append((position, entry))
        elif isinstance(entry, EventDelivered):
            if position not in self._consumed:
                self._events.setdefault(entry.name, collections.deque()).append((position, entry))
        elif isinstance(entry, InvocationCancelled):
            self.cancel(entry.invocation)

    def queued(self, invocation: str) -> bool:
        """Whether ``invocation`` waits in the inbox for its turn."""
        return any(message.invocation == invocation for _, message in self._messages)

    def cancel(self, invocation: str) -> None:
        """Cancel ``invocation``: now if it is running, else when its turn starts."""
        self.cancels.add(invocation)
        if self.turn is not None and self.turn.invocation == invocation:
            self.turn.cancel("cancelled by request")

    # -- activation and replay ------------------------------------------------------------

    async def activate(self) -> _TurnGroup | None:
        """Claim the stream, restore the snapshot, replay finished turns; return the
        unfinished turn to resume, if any."""
        self._epoch = await self.store.claim(self.stream)
        start = 1
        snapshot = await self.store.load_snapshot(self.stream)
        if snapshot is not None:
            self._restore(msgspec.msgpack.decode(snapshot.data, type=ActorSnapshot))
            start = snapshot.position + 1
        self._position = await self.store.last_position(self.stream)
        await self.read_inbox()
        groups = await self._read_turns(start)
        resume = groups.pop() if groups and groups[-1].end is None else None
        for group in groups:
            await self._rerun(group)
        return resume

    def _restore(self, snapshot: ActorSnapshot) -> None:
        state_type = self.cls.__actorflow_state__
        if state_type is not None:
            self.instance.state = msgspec.msgpack.decode(snapshot.state, type=state_type)
        self.turns = self._snapshot_turn = snapshot.turn
        self._message_done = snapshot.inbox_done
        self._consumed = set(snapshot.events)
        self.results.update(snapshot.results)

    async def _read_turns(self, start: int) -> list[_TurnGroup]:
        groups: list[_TurnGroup] = []
        async for batch in self.store.read_batches(self.stream, start):
            for record in batch:
                entry = ACTOR_CODEC.decode(record)
                if isinstance(entry, TurnStarted):
                    groups.append(_TurnGroup(record.position, entry))
                elif not groups:
                    raise ActorflowError(
                        f"actor {self.actor_id}: journal position {record.position} holds a "
                        f"{type(entry).__name__} outside any turn; the journal is damaged"
                    )
                elif isinstance(entry, TurnCompleted | TurnFailed):
                    groups[-1].end, groups[-1].end_position = entry, record.position
                elif isinstance(entry, TurnCancelling):
                    groups[-1].cancelled = entry.reason
                else:
                    groups[-1].steps.append((record.position, entry))
        return groups

    def _recorded(self, group: _TurnGroup) -> RecordedTurn:
        return RecordedTurn(
            self.actor_id,
            group.started,
            group.position,
            group.steps,
            group.end,
            group.end_position,
            group.cancelled,
        )

    async def _rerun(self, group: _TurnGroup) -> None:
        """Re-run a journaled turn: a finished one must end as it did; an unfinished one
        goes on live from the step where it stopped."""
        self._take_message(group.started.inbox)
        await self._run_turn(group.started, self._recorded(group))

    def _take_message(self, position: int) -> None:
        while self._messages and self._messages[0][0] <= position:
            self._messages.popleft()
        self._message_done = max(self._message_done, position)

    # -- turns ----------------------------------------------------------------------------

    async def _next_turn(self) -> None:
        position, message = self._messages[0]
        now = self.clock.now()
        limits = [message.deadline, self._handler_deadline(message.handler)]
        budget = min((d for d in limits if d is not None), default=None)
        started = TurnStarted(
            self.turns + 1,
            message.invocation,
            position,
            message.handler,
            message.args,
            now,
            self.runtime.version,
            message.reply_to,
            None if budget is None else now + budget,
        )
        self._take_message(position)
        at = self._position + 1
        await self.journal([started])
        await self._run_turn(started, RecordedTurn(self.actor_id, started, at, []))
        self.runtime.metrics.turn_seconds.observe(self.clock.now() - now)

    def _handler_deadline(self, handler: str) -> float | None:
        info = self.cls.__actorflow_handlers__.get(handler)
        return info.options.deadline if info is not None else None

    async def _run_turn(self, started: TurnStarted, recorded: RecordedTurn) -> None:
        """Run (or replay) one turn to its end; journal the end unless it was journaled."""
        self.turns = started.turn
        self.current = started.invocation
        self.state = "running"
        deadline = started.deadline if recorded.end is None else None
        turn = Turn(
            self, self.key, started.turn, started.invocation, started.at, recorded, deadline
        )
        self.turn = turn
        self.instance.ctx = turn.context
        if started.invocation in self.cancels:
            turn.cancel("cancelled by request")
        elif self.stopping is not None and self.cls.__actorflow_shutdown__ == "compensate":
            turn.cancel(self.stopping)
        try:
            reply = await self._outcome(turn, started)
        finally:
            self.turn = None
        if turn.diverged is not None:
            raise turn.diverged
        end = recorded.end
        if end is not None:
            self._check_same_end(recorded, end, reply)
        else:
            recorded.check_complete(f"the end of turn {started.turn}")
            await self._journal_end(started, reply, turn)
        self._finish(started.invocation, reply)
        if end is None:
            await self._maybe_snapshot()  # after _finish: the snapshot keeps this result too
        if self.stopping is not None:
            outcome = "compensated" if reply.cancelled else "finished"
            self.runtime.stopped_turn(self.actor_id, outcome)

    async def _outcome(self, turn: Turn, started: TurnStarted) -> Reply:
        """Run the handler; its result or error as a reply (compensating on error)."""
        try:
            info = self.runtime.handler_info(self.type_name, started.handler)
            result = await info.fn(self.instance, **info.decode_args(started.args))
            data = info.encode_result(self.type_name, result)
            return Reply(True, data, handler=started.handler)
        except (NonDeterminismError, Suspended):
            raise
        except TurnCancelled as cancelled:
            turn.compensating = True
            if turn.recorded.cancelled is None:  # live: journal it before compensating
                marker = TurnCancelling(started.turn, cancelled.reason, self.clock.now())
                await self.journal([marker])
            if turn.can_compensate:
                await turn.compensate()
            error = ErrorInfo("actorflow.Cancelled", cancelled.reason)
            return Reply(
                False,
                error=error,
                handler=started.handler,
                cancelled=True,
                compensated=tuple(turn.undone),
            )
        except Exception as exc:
            if turn.diverged is not None:
                raise turn.diverged from exc
            await self._compensate_on_error(turn, started)
            failure = error_info(exc)
            undone = tuple(turn.undone)
            return Reply(False, error=failure, handler=started.handler, compensated=undone)

    async def _compensate_on_error(self, turn: Turn, started: TurnStarted) -> None:
        handlers = self.cls.__actorflow_handlers__
        info: HandlerInfo | None = handlers.get(started.handler)
        if info is not None and info.options.compensate_on_error and turn.can_compensate:
            turn.compensating = True
            await turn.compensate()

    def _check_same_end(self, recorded: RecordedTurn, end: TurnEnd, reply: Reply) -> None:
        recorded.check_complete(f"the end of turn {end.turn}")
        if isinstance(end, TurnCompleted):
            same = reply.ok and reply.result == bytes(end.result)
            was = f"turn {end.turn} returning {msgspec.msgpack.decode(end.result)!r}"
        else:
            same = not reply.ok and reply.error is not None and reply.error.type == end.error.type
            was = f"turn {end.turn} failing with {end.error.type}: {end.error.message}"
        if not same:
            if reply.ok:
                now = f"returning {msgspec.msgpack.decode(reply.result)!r}"
            else:
                now = f"failing with {reply.error.type if reply.error else '?'}"
            raise NonDeterminismError(self.actor_id, recorded.end_position, was, now)

    async def _journal_end(self, started: TurnStarted, reply: Reply, turn: Turn) -> None:
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
            )
        extra: list[StreamAppend] = []
        if started.reply_to is not None:
            event = EventDelivered(
                started.reply_to.event, msgspec.Raw(msgspec.msgpack.encode(reply)), at
            )
            extra.append(
                StreamAppend(inbox_stream(started.reply_to.actor), (INBOX_CODEC.encode(event),))
            )
        await self.journal([entry], extra)
        if started.reply_to is not None:
            self.runtime.notify(started.reply_to.actor)

    def _finish(self, invocation: str, reply: Reply) -> None:
        self.results[invocation] = reply
        while len(self.results) > self.runtime.keep_results:
            self.results.popitem(last=False)
        self.current = None
        self.runtime.invocation_ended(invocation, reply)

    async def _maybe_snapshot(self) -> None:
        every = self.runtime.snapshot_every
        due = every and self.turns - self._snapshot_turn >= every
        if self.cls.__actorflow_state__ is None or not due:
            return
        snapshot = ActorSnapshot(
            self.turns,
            msgspec.Raw(msgspec.msgpack.encode(self.instance.state)),
            self._message_done,
            sorted(self._consumed),
            dict(self.results),
        )
        position = self._position
        await self.store.save_snapshot(
            self.stream, position, msgspec.msgpack.encode(snapshot), epoch=self._epoch
        )
        await self.store.truncate(self.stream, position, epoch=self._epoch)
        self._snapshot_turn = self.turns

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
        except NonDeterminismError as exc:
            self.stuck = exc
            self.state = "stuck"
            log.error("%s", exc)
            self.runtime.actor_stuck(self.actor_id)
        except Exception as exc:
            self.stuck = exc if isinstance(exc, ActorflowError) else ActorflowError(str(exc))
            self.state = "stuck"
            log.exception("actor %s stopped: %s", self.actor_id, exc)
            self.runtime.actor_stuck(self.actor_id)

    async def _serve(self) -> None:
        while not self.suspending.is_set() and not self.draining.is_set():
            notified = self._notified
            await self.read_new()
            if self._messages:
                await self._next_turn()
                continue
            self.state = "idle"
            with anyio.move_on_after(self.runtime.idle_timeout):
                await notified.wait()  # new messages, or `wake` when the runtime stops
            if not (notified.is_set() or self.suspending.is_set() or self.draining.is_set()):
                self.closing = True  # from here a notification re-activates the actor
                await self.read_inbox()
                if not self._messages:
                    return
                self.closing = False
        raise Suspended()

    def status_state(self) -> ActorState:
        """The state shown by the status API."""
        if self.state == "running" and self.waiting_on is not None:
            return "waiting-timer" if self.waiting_on == "timer" else "waiting-event"
        return self.state
