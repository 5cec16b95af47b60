"""`Runtime`: hosts actors on a journal store, embedded in your asyncio program.

It accepts messages (durably, before acknowledging), activates actors on demand, recovers
every actor with unfinished work at start, delivers events, hands back results, and reports
status. The actors' turns run in its task group.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import uuid
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
    EventDelivered,
    IdempotencyClaim,
    MessageAccepted,
    Reply,
    ReplyTo,
    TurnCompleted,
    TurnFailed,
    actor_stream,
    idempotency_stream,
    inbox_stream,
)
from actorflow._host import ActorHost, ActorState
from actorflow._values import decoder_for, encode
from journal import ConflictError, Store, StreamAppend

log = logging.getLogger("actorflow")

A = TypeVar("A", bound=Actor)
P = ParamSpec("P")
R = TypeVar("R")

#: Idempotency keys: 1 to 200 printable characters.
_MAX_IDEMPOTENCY_KEY = 200


@dataclasses.dataclass
class Metrics:
    """Counters for the status and metrics endpoints."""

    turns: int = 0
    appends: int = 0
    activations: int = 0
    recovered: int = 0


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

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._running = True
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
        await self.stop()
        assert self._group is not None
        group, self._group = self._group, None
        await group.__aexit__(exc_type, exc, tb)

    async def stop(self) -> None:
        """Checkpoint every running turn at its next step boundary and stop the actors.

        What the turns journaled stays; the next runtime on this journal replays them and
        goes on from the exact step. A step still running after ``grace`` seconds is
        abandoned (cancelled); it runs again later under the same idempotency key.
        """
        self._running = False
        for host in list(self._hosts.values()):
            host.suspending.set()
        if self._live_hosts:
            with anyio.move_on_after(self.grace):
                await self._all_stopped.wait()
        if self._live_hosts and self._group is not None:
            self._group.cancel_scope.cancel()

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
        last = await self.store.last_position(stream)
        done = 0
        if last:
            async for batch in self.store.read_batches(stream, last):
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
    ) -> StreamAppend:
        """Validate a message and return the inbox append that accepts it."""
        check_key(target.key)
        info = self.handler_info(target.type_name, handler)
        data = info.encode_args(target.type_name, args, kwargs)
        message = MessageAccepted(
            invocation,
            handler,
            msgspec.Raw(data),
            self.clock.now(),
            reply_to,
            idempotency_key,
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
    ) -> str:
        """Accept a message for ``target`` durably; return its invocation id.

        A retry with the same ``idempotency_key`` (per actor) returns the first send's
        invocation instead of sending again.
        """
        invocation = f"{target.id}#{uuid.uuid4().hex[:24]}"
        accept = self.accept_message(
            target, handler, args, kwargs or {}, invocation, None, idempotency_key
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

    async def deliver(self, target: ActorRef, name: str, payload: Any = None) -> None:
        """Deliver the event ``name`` to ``target`` durably (kept until it is waited for)."""
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

    def invocation_ended(self, invocation: str, reply: Reply) -> None:
        """A host finished an invocation: wake whoever waits for it."""
        self.metrics.turns += 1
        for event in self._waiters.pop(invocation, []):
            event.set()

    async def result(self, invocation: str, *, timeout: float | None = None) -> Any:
        """Wait for an invocation's result (raise `HandlerFailed` for its error)."""
        actor_id, _, _ = invocation.rpartition("#")
        type_name = actor_id.partition("/")[0]
        if type_name not in self._types:
            raise UnknownActorError(f"invocation {invocation!r}: {self._unknown_type(type_name)}")
        with anyio.fail_after(math.inf if timeout is None else timeout):
            while True:
                host = self._activate(actor_id)
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
