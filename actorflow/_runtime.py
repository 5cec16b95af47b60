"""`Runtime`: hosts actors on a journal store, embedded in your asyncio program.

It accepts messages (durably, before acknowledging), activates actors on demand, recovers
every actor with unfinished work at start, delivers events, hands back results, and reports
status. The actors' turns run in its task group.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Concatenate, Generic, Literal, ParamSpec, Self, TypeVar

import anyio
import anyio.abc
import msgspec

from actorflow._actor import Actor, HandlerInfo, check_key
from actorflow._clock import Clock, SystemClock
from actorflow._context import ActorRef, handler_name
from actorflow._errors import (
    ActorStuckError,
    HandlerFailed,
    InvalidMessageError,
    RuntimeClosedError,
    UnknownActorError,
    UnknownHandlerError,
)
from actorflow._events import (
    ACTOR_CODEC,
    IDEMPOTENCY_CODEC,
    INBOX_CODEC,
    ActorSnapshot,
    EventDelivered,
    IdempotencyClaim,
    InvocationCancelled,
    MessageAccepted,
    Reply,
    ReplyTo,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    actor_stream,
    idempotency_stream,
    inbox_stream,
)
from actorflow._host import ActorHost, ActorState
from actorflow._metrics import Metrics
from actorflow._values import decoder_for, encode
from journal import ConflictError, Store, StreamAppend

log = logging.getLogger("actorflow")

A = TypeVar("A", bound=Actor)
P = ParamSpec("P")
R = TypeVar("R")

#: Idempotency keys: 1 to 200 printable characters.
_MAX_IDEMPOTENCY_KEY = 200


class ShutdownReport(msgspec.Struct, frozen=True):
    """What `Runtime.shutdown` did with the turns that were running."""

    running: int
    checkpointed: int = 0
    finished: int = 0
    compensated: int = 0
    abandoned: int = 0
    seconds: float = 0.0


class InvocationStatus(msgspec.Struct, frozen=True):
    """Where an invocation is: ``queued``, ``running``, ``completed``, ``failed`` or
    ``cancelled`` (with what was compensated)."""

    invocation: str
    actor: str
    state: str
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    compensated: tuple[str, ...] = ()


class ActorStatus(msgspec.Struct, frozen=True):
    """What an actor is doing: ``state`` is one of ``idle`` (nothing received yet or
    waiting for messages), ``running``, ``waiting-timer``, ``waiting-event``, ``stuck``
    (see ``error``), ``completed`` (every accepted message processed), ``pending`` (work
    journaled but not active in this process)."""

    actor: str
    state: str
    invocation: str | None
    turns: int
    error: str | None = None


class JournalEntry(msgspec.Struct, frozen=True):
    """One journal record as readable data: which stream, where, what, and when."""

    stream: Literal["actor", "inbox"]
    position: int
    type: str
    at: float
    data: dict[str, Any]


class ActorHandle(Generic[A]):
    """A typed reference to one actor, from `Runtime.ref`."""

    def __init__(self, runtime: Runtime, cls: type[A], key: str) -> None:
        self._runtime = runtime
        self.ref = ActorRef(cls.__actorflow_name__, check_key(key))

    @property
    def id(self) -> str:
        """``Type/key``."""
        return self.ref.id

    async def call(
        self,
        handler: Callable[Concatenate[A, P], Coroutine[Any, Any, R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Send a message and wait for the handler's result (its error: `HandlerFailed`)."""
        invocation = await self._runtime.send(self.ref, handler_name(handler), args, kwargs)
        result: R = await self._runtime.result(invocation)
        return result

    async def send(
        self,
        handler: Callable[Concatenate[A, P], Coroutine[Any, Any, Any]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> str:
        """Send a message without waiting; return its invocation id (for `Runtime.result`)."""
        return await self._runtime.send(self.ref, handler_name(handler), args, kwargs)

    async def deliver(self, name: str, payload: Any = None) -> None:
        """Deliver the named event (for ``ctx.wait_for``)."""
        await self._runtime.deliver(self.ref, name, payload)

    async def status(self) -> ActorStatus:
        """The actor's status."""
        return await self._runtime.status(self.ref)


class Runtime:
    """Hosts actor classes on a journal `Store`; use it as an async context manager.

    ``snapshot_every`` turns, actors that declare ``state`` are snapshotted and their
    journal truncated; actors idle for ``idle_timeout`` seconds are passivated.
    ``version`` is written into every turn the runtime starts.
    """

    def __init__(
        self,
        store: Store,
        actors: Iterable[type[Actor]],
        *,
        clock: Clock | None = None,
        snapshot_every: int = 100,
        idle_timeout: float = 60.0,
        version: str = "",
        keep_results: int = 1000,
        grace: float = 25.0,
    ) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.snapshot_every = snapshot_every
        self.idle_timeout = idle_timeout
        self.version = version
        self.keep_results = keep_results
        self.grace = grace
        self.metrics = Metrics()
        self._types: dict[str, type[Actor]] = {}
        for cls in actors:
            if not (isinstance(cls, type) and issubclass(cls, Actor)) or cls is Actor:
                raise TypeError(f"Runtime hosts actorflow.Actor subclasses, got {cls!r}")
            name = cls.__actorflow_name__
            if name in self._types and self._types[name] is not cls:
                raise ValueError(f"two actor classes are both named {name!r}")
            self._types[name] = cls
        self._hosts: dict[str, ActorHost] = {}
        self._waiters: dict[str, list[anyio.Event]] = {}
        self._group: anyio.abc.TaskGroup | None = None
        self._running = False
        self._live_hosts = 0
        self._all_stopped = anyio.Event()
        self._accepting = False
        self._stop_outcomes: dict[str, str] = {}

    @property
    def actor_types(self) -> dict[str, type[Actor]]:
        """The hosted actor classes by type name."""
        return dict(self._types)

    @property
    def accepting(self) -> bool:
        """Whether the runtime accepts new messages (False once stopping)."""
        return self._accepting

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._running = True
        self._accepting = True
        try:
            await self.recover()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        group = self._group
        try:
            await self.stop()
        except BaseException as stopping:  # cancelled from outside: still close the group
            self._group = None
            await group.__aexit__(type(stopping), stopping, stopping.__traceback__)
            raise
        self._group = None
        await group.__aexit__(exc_type, exc, tb)

    async def stop(self) -> None:
        """Checkpoint every running turn at its next step boundary and stop the actors.

        What the turns journaled stays; the next runtime on this journal replays them and
        goes on from the exact step. A step still running after ``grace`` seconds is
        abandoned (cancelled); it runs again later under the same idempotency key.
        """
        self._running = self._accepting = False
        await self._checkpoint_all(self.grace)

    async def shutdown(self, budget: float | None = None) -> ShutdownReport:
        """Stop within ``budget`` seconds (default: ``grace``), each actor type by its
        declared strategy; see docs/deploys.md.

        New sends are refused at once. ``checkpoint`` turns stop at their next step
        boundary; ``drain`` turns may finish; ``compensate`` turns are cancelled and their
        compensations run (a turn past its point of no return finishes instead). Shortly
        before the budget ends, whatever still runs is checkpointed; a step still running
        when it ends is abandoned and re-run later under the same idempotency key.
        """
        budget = self.grace if budget is None else budget
        self._running = self._accepting = False
        started = anyio.current_time()
        running = [host.actor_id for host in self._hosts.values() if host.turn is not None]
        for host in list(self._hosts.values()):
            self._begin_stop(host)
        margin = min(1.0, budget * 0.2)
        if self._live_hosts:
            with anyio.move_on_after(max(0.0, budget - margin)):
                await self._all_stopped.wait()
        left = budget - (anyio.current_time() - started)
        abandoned = await self._checkpoint_all(left)  # what has not finished by now
        return self._report(running, abandoned, anyio.current_time() - started)

    async def _checkpoint_all(self, within: float) -> int:
        """Checkpoint every actor; cancel those still running after ``within`` seconds
        (their steps run again later, under the same idempotency keys). Return how many
        were cancelled."""
        for host in list(self._hosts.values()):
            host.suspending.set()
            host.wake()
        if self._live_hosts:
            with anyio.move_on_after(max(0.0, within)):
                await self._all_stopped.wait()
        abandoned = self._live_hosts
        if abandoned:
            for host in list(self._hosts.values()):
                host.scope.cancel()
            await self._all_stopped.wait()
        return abandoned

    def _begin_stop(self, host: ActorHost) -> None:
        host.stopping = "cancelled at shutdown"
        strategy = host.cls.__actorflow_shutdown__
        host.wake()
        if strategy == "checkpoint":
            host.suspending.set()
            return
        host.draining.set()
        if strategy == "compensate" and host.turn is not None:
            host.turn.cancel(host.stopping)

    def stopped_turn(self, actor_id: str, outcome: str) -> None:
        """A host says what became of its running turn during shutdown."""
        self._stop_outcomes.setdefault(actor_id, outcome)

    def _report(self, running: list[str], abandoned: int, seconds: float) -> ShutdownReport:
        outcome: dict[str, int] = {"checkpointed": 0, "finished": 0, "compensated": 0}
        for actor_id in running:
            outcome[self._stop_outcomes.get(actor_id, "checkpointed")] += 1
        return ShutdownReport(len(running), abandoned=abandoned, seconds=seconds, **outcome)

    async def recover(self) -> int:
        """Activate every actor with an unfinished turn or unprocessed messages."""
        count = 0
        for inbox in await self.store.list_streams("inbox/"):
            actor_id = inbox.removeprefix("inbox/")
            type_name = actor_id.partition("/")[0]
            if type_name in self._types and await self._has_work(actor_id):
                self._activate(actor_id)
                count += 1
        self.metrics.recovered += count
        if count:
            log.info("recovered %d actors with unfinished work", count)
        return count

    async def _has_work(self, actor_id: str) -> bool:
        stream = actor_stream(actor_id)
        info = await self.store.stream_info(stream)
        done = 0
        if info.last_position and info.last_position == info.snapshot_position:
            snapshot = await self.store.load_snapshot(stream)  # everything before was truncated
            assert snapshot is not None
            done = msgspec.msgpack.decode(snapshot.data, type=ActorSnapshot).inbox_done
        elif info.last_position:
            async for batch in self.store.read_batches(stream, info.last_position):
                entry = ACTOR_CODEC.decode(batch[-1])
                if not isinstance(entry, TurnCompleted | TurnFailed):
                    return True
                done = entry.inbox
        async for batch in self.store.read_batches(inbox_stream(actor_id), done + 1):
            if any(isinstance(INBOX_CODEC.decode(r), MessageAccepted) for r in batch):
                return True
        return False

    def _activate(self, actor_id: str) -> ActorHost:
        host = self._hosts.get(actor_id)
        if host is not None:
            return host
        if self._group is None or not self._running:
            raise RuntimeClosedError("the runtime is not running; use `async with Runtime(...)`")
        type_name, _, key = actor_id.partition("/")
        host = ActorHost(self, self._types[type_name], key)
        self._hosts[actor_id] = host
        self.metrics.activations += 1
        self._group.start_soon(self._run_host, host, name=f"actor {actor_id}")
        return host

    async def _run_host(self, host: ActorHost) -> None:
        self._live_hosts += 1
        try:
            with host.scope:
                await host.run()
        finally:
            self._live_hosts -= 1
            if not self._live_hosts:
                self._all_stopped.set()
                self._all_stopped = anyio.Event()
            if host.state != "stuck" and self._hosts.get(host.actor_id) is host:
                del self._hosts[host.actor_id]
                if host.notified_late and self._running:
                    self._activate(host.actor_id)

    def notify(self, actor_id: str) -> None:
        """New inbox entries for ``actor_id`` were committed: wake (or activate) it."""
        host = self._hosts.get(actor_id)
        if host is not None:
            host.notify()
        elif self._running and actor_id.partition("/")[0] in self._types:
            self._activate(actor_id)

    # -- messages -------------------------------------------------------------------------

    def ref(self, cls: type[A], key: str) -> ActorHandle[A]:
        """A typed reference to the actor of class ``cls`` with ``key``."""
        if cls.__actorflow_name__ not in self._types:
            raise UnknownActorError(self._unknown_type(cls.__actorflow_name__))
        return ActorHandle(self, cls, key)

    def _unknown_type(self, type_name: str) -> str:
        known = ", ".join(sorted(self._types)) or "none"
        return f"unknown actor type {type_name!r}; this runtime hosts: {known}"

    def handler_info(self, type_name: str, handler: str) -> HandlerInfo:
        """A hosted handler's checked definition (or a clear error)."""
        cls = self._types.get(type_name)
        if cls is None:
            raise UnknownActorError(self._unknown_type(type_name))
        info = cls.__actorflow_handlers__.get(handler)
        if info is None:
            known = ", ".join(sorted(cls.__actorflow_handlers__))
            raise UnknownHandlerError(
                f"actor type {type_name!r} has no handler {handler!r}; its handlers: {known}"
            )
        return info

    def accept_message(
        self,
        target: ActorRef,
        handler: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        invocation: str,
        reply_to: ReplyTo | None = None,
        idempotency_key: str | None = None,
        deadline: float | None = None,
    ) -> StreamAppend:
        """Validate a message and return the inbox append that accepts it."""
        check_key(target.key)
        info = self.handler_info(target.type_name, handler)
        data = info.encode_args(target.type_name, args, kwargs)
        if deadline is not None and not (isinstance(deadline, int | float) and deadline > 0):
            raise InvalidMessageError(
                f"deadline must be a positive number of seconds, got {deadline!r}"
            )
        message = MessageAccepted(
            invocation,
            handler,
            msgspec.Raw(data),
            self.clock.now(),
            reply_to,
            idempotency_key,
            None if deadline is None else float(deadline),
        )
        return StreamAppend(inbox_stream(target.id), (INBOX_CODEC.encode(message),))

    async def send(
        self,
        target: ActorRef,
        handler: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        deadline: float | None = None,
    ) -> str:
        """Accept a message for ``target`` durably; return its invocation id.

        A retry with the same ``idempotency_key`` (per actor) returns the first send's
        invocation instead of sending again. ``deadline`` (seconds) bounds the whole turn:
        past it the turn is cancelled and its compensations run.
        """
        self._check_accepting()
        invocation = f"{target.id}#{os.urandom(12).hex()}"
        accept = self.accept_message(
            target, handler, args, kwargs or {}, invocation, None, idempotency_key, deadline
        )
        parts = [accept]
        if idempotency_key is not None:
            _check_idempotency_key(idempotency_key)
            claim = IDEMPOTENCY_CODEC.encode(IdempotencyClaim(invocation))
            stream = idempotency_stream(target.id, idempotency_key)
            parts.append(StreamAppend(stream, (claim,), expected_position=0))
        try:
            await self.store.append_many(parts)
        except ConflictError as exc:
            if idempotency_key is None or exc.stream != parts[-1].stream:
                raise
            async for batch in self.store.read_batches(exc.stream):
                return IDEMPOTENCY_CODEC.decode(batch[0]).invocation
            raise
        self.notify(target.id)
        return invocation

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise RuntimeClosedError(
                "the runtime is not accepting messages (it is stopped or shutting down); "
                "retry against the next process"
            )

    async def cancel(self, invocation: str) -> None:
        """Cancel an invocation: a running turn stops at its next step boundary and its
        compensations run; a queued one is cancelled when its turn starts. Durable."""
        actor_id = self._actor_of(invocation)
        entry = InvocationCancelled(invocation, self.clock.now())
        await self.store.append(inbox_stream(actor_id), [INBOX_CODEC.encode(entry)])
        host = self._hosts.get(actor_id)
        if host is not None:
            host.cancel(invocation)
        else:
            self.notify(actor_id)

    def _actor_of(self, invocation: str) -> str:
        actor_id, sep, _ = invocation.rpartition("#")
        type_name, slash, key = actor_id.partition("/")
        if not (sep and slash):
            raise InvalidMessageError(
                f"{invocation!r} is not an invocation id (they look like Type/key#hex)"
            )
        if type_name not in self._types:
            raise UnknownActorError(f"invocation {invocation!r}: {self._unknown_type(type_name)}")
        check_key(key)
        return actor_id

    async def deliver(self, target: ActorRef, name: str, payload: Any = None) -> None:
        """Deliver the event ``name`` to ``target`` durably (kept until it is waited for)."""
        self._check_accepting()
        check_key(target.key)
        if target.type_name not in self._types:
            raise UnknownActorError(self._unknown_type(target.type_name))
        if not isinstance(name, str) or not name or name.startswith("\x00"):
            raise InvalidMessageError(f"event names are non-empty strings, got {name!r}")
        try:
            data = encode(payload)
        except TypeError as exc:
            raise InvalidMessageError(f"event {name!r} payload is not encodable: {exc}") from None
        event = EventDelivered(name, msgspec.Raw(data), self.clock.now())
        await self.store.append(inbox_stream(target.id), [INBOX_CODEC.encode(event)])
        self.notify(target.id)

    # -- results --------------------------------------------------------------------------

    def actor_stuck(self, actor_id: str) -> None:
        """Wake everyone waiting for a result of an actor that got stuck."""
        prefix = actor_id + "#"
        for invocation in [i for i in self._waiters if i.startswith(prefix)]:
            for event in self._waiters.pop(invocation):
                event.set()

    def invocation_ended(self, invocation: str, reply: Reply) -> None:
        """A host finished an invocation: wake whoever waits for it."""
        self.metrics.turns += 1
        for event in self._waiters.pop(invocation, []):
            event.set()

    async def result(self, invocation: str, *, timeout: float | None = None) -> Any:
        """Wait for an invocation's result (raise `HandlerFailed` for its error)."""
        actor_id = self._actor_of(invocation)
        with anyio.fail_after(math.inf if timeout is None else timeout):
            while True:
                host = self._activate(actor_id)
                await host.activated.wait()  # its snapshot may hold the result
                reply = host.results.get(invocation)
                if reply is not None:
                    return self._unwrap(invocation, reply)
                if host.state == "stuck":
                    raise ActorStuckError(f"actor {actor_id} is stuck: {host.stuck}")
                event = anyio.Event()
                self._waiters.setdefault(invocation, []).append(event)
                await event.wait()

    def _unwrap(self, invocation: str, reply: Reply) -> Any:
        if not reply.ok:
            error = reply.error
            assert error is not None
            raise HandlerFailed(invocation, error.type, error.message)
        type_name = invocation.partition("/")[0]
        kind = self.handler_info(type_name, reply.handler).result_type if reply.handler else Any
        return decoder_for(kind).decode(reply.result)

    # -- inspection -----------------------------------------------------------------------

    async def invocation(self, invocation: str) -> InvocationStatus | None:
        """Where an invocation is, and its result or error once it ended; None if unknown."""
        actor_id = self._actor_of(invocation)
        host = self._hosts.get(actor_id)
        if host is not None:
            reply = host.results.get(invocation)
            if reply is not None:
                return self._ended(invocation, actor_id, reply)
            if host.current == invocation:
                return InvocationStatus(invocation, actor_id, "running")
            if host.queued(invocation):
                return InvocationStatus(invocation, actor_id, "queued")
        return await self._invocation_from_journal(invocation, actor_id)

    def _ended(self, invocation: str, actor_id: str, reply: Reply) -> InvocationStatus:
        if reply.ok:
            return InvocationStatus(
                invocation, actor_id, "completed", self._unwrap(invocation, reply)
            )
        error = reply.error
        state = "cancelled" if reply.cancelled else "failed"
        return InvocationStatus(
            invocation,
            actor_id,
            state,
            None,
            error.message if error else None,
            error.type if error else None,
            reply.compensated,
        )

    async def _invocation_from_journal(
        self, invocation: str, actor_id: str
    ) -> InvocationStatus | None:
        handler = None
        async for batch in self.store.read_batches(actor_stream(actor_id)):
            for record in batch:
                entry = ACTOR_CODEC.decode(record)
                if getattr(entry, "invocation", None) != invocation:
                    continue
                if isinstance(entry, TurnStarted):
                    handler = entry.handler
                elif isinstance(entry, TurnCompleted):
                    reply = Reply(True, bytes(entry.result), handler=handler or "")
                    return self._ended(invocation, actor_id, reply)
                elif isinstance(entry, TurnFailed):
                    reply = Reply(
                        False,
                        error=entry.error,
                        cancelled=entry.cancelled,
                        compensated=entry.compensated,
                    )
                    return self._ended(invocation, actor_id, reply)
        if handler is not None:
            return InvocationStatus(invocation, actor_id, "running")
        async for batch in self.store.read_batches(inbox_stream(actor_id)):
            for record in batch:
                message = INBOX_CODEC.decode(record)
                if isinstance(message, MessageAccepted) and message.invocation == invocation:
                    return InvocationStatus(invocation, actor_id, "queued")
        return None

    async def list_actors(
        self, type_name: str | None = None, state: str | None = None
    ) -> list[ActorStatus]:
        """Every actor that has an inbox (of ``type_name``, in ``state`` if given)."""
        prefix = "inbox/" if type_name is None else f"inbox/{type_name}/"
        found = []
        for stream in await self.store.list_streams(prefix):
            type_of, _, key = stream.removeprefix("inbox/").partition("/")
            if type_of not in self._types:
                continue
            status = await self.status(ActorRef(type_of, key))
            if state is None or status.state == state:
                found.append(status)
        return found

    async def status(self, target: ActorRef) -> ActorStatus:
        """What the actor is doing (see `ActorStatus`)."""
        host = self._hosts.get(target.id)
        if host is not None:
            error = str(host.stuck) if host.stuck is not None else None
            return ActorStatus(target.id, host.status_state(), host.current, host.turns, error)
        if await self._has_work(target.id):
            state = "pending"
        elif await self.store.last_position(actor_stream(target.id)):
            state = "completed"
        else:
            state = "idle"
        return ActorStatus(target.id, state, None, 0)

    async def journal(self, target: ActorRef) -> list[JournalEntry]:
        """The actor's journal and inbox as readable entries, in order."""
        entries = []
        for stream, codec, label in (
            (actor_stream(target.id), ACTOR_CODEC, "actor"),
            (inbox_stream(target.id), INBOX_CODEC, "inbox"),
        ):
            async for batch in self.store.read_batches(stream):
                for record in batch:
                    value = codec.decode(record)
                    data = _readable(value)
                    at = float(data.pop("at", 0.0) or 0.0)
                    entries.append(JournalEntry(label, record.position, record.type, at, data))  # type: ignore[arg-type]
        return entries

    def running_turns(self) -> int:
        """How many actors are in the middle of a turn."""
        return sum(1 for host in self._hosts.values() if host.turn is not None)

    def hosted(self) -> dict[str, ActorState]:
        """The actors in memory now, and their states."""
        return {actor_id: host.status_state() for actor_id, host in self._hosts.items()}


def _check_idempotency_key(key: object) -> None:
    if (
        not isinstance(key, str)
        or not 1 <= len(key) <= _MAX_IDEMPOTENCY_KEY
        or not key.isprintable()
    ):
        raise InvalidMessageError(
            f"idempotency key {key!r} must be 1 to {_MAX_IDEMPOTENCY_KEY} printable characters"
        )


def _readable(value: Any) -> dict[str, Any]:
    """A journal entry as plain data, with embedded MessagePack values decoded."""
    data: dict[str, Any] = {}
    for field in value.__struct_fields__:
        item = getattr(value, field)
        if isinstance(item, msgspec.Raw):
            item = msgspec.msgpack.decode(item)
        elif isinstance(item, msgspec.Struct):
            item = _readable(item)
        data[field] = item
    return data
