"""`Runtime`: hosts actors on a journal store, embedded in your asyncio program.

It accepts messages (durably, before acknowledging), activates actors on demand, recovers
every actor with unfinished work at start, delivers events, hands back results, and reports
status. The actors' turns run in its task group. An actor whose journal writes fail is
re-activated after a pause; an actor that cannot go on (non-determinism) is stuck, and
refuses new work with `ActorStuckError` until it is fixed.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

import anyio
import anyio.abc
import msgspec

from actorflow import _tracing
from actorflow._actor import Actor, check_event, check_key, source_version
from actorflow._budget import Budget, Grant
from actorflow._clock import Clock, SystemClock
from actorflow._context import DEFAULT_RETRY, ActorRef, Retry
from actorflow._errors import (
    ActorStuckError,
    HandlerFailed,
    InvalidMessageError,
    InvocationNotRetryable,
    MessageTooLarge,
    RuntimeClosedError,
    TooManyPendingEvents,
    TooManyQueuedMessages,
    UnknownActorError,
)
from actorflow._events import (
    ACTOR_CODEC,
    INBOX_CODEC,
    EventDelivered,
    InvocationCancelled,
    MessageAccepted,
    Reply,
    ReplyTo,
    TurnStarted,
    idempotency_stream,
    inbox_stream,
)
from actorflow._metrics import Metrics
from actorflow._values import encode
from actorflow.cluster import ClusterOptions, WorkerInfo
from actorflow.runtime import _idempotency, _inspect, _quarantine, _reset
from actorflow.runtime._big_values import DEFAULT_VALUE_THRESHOLD, values_store
from actorflow.runtime._budgets import default_grant, root_grant
from actorflow.runtime._handle import ActorHandle
from actorflow.runtime._host import ActorHost
from actorflow.runtime._reads import RuntimeReads
from actorflow.runtime._reset import TurnReset
from actorflow.runtime._status import (
    InvocationStatus,
    ShutdownReport,
)
from actorflow.runtime._streams import DEFAULT_STREAM_RETENTION, ChunkStreams
from actorflow.runtime._waiters import Waiters
from actorflow.runtime._worker import Worker
from journal import (
    ConflictError,
    FencingError,
    NewRecord,
    Store,
    StreamAppend,
)

log = logging.getLogger("actorflow")

A = TypeVar("A", bound=Actor)
P = ParamSpec("P")
R = TypeVar("R")

#: Longest pause before a host whose journal failed is activated again, in seconds.
MAX_RETRY_PAUSE = 30.0


class Runtime(RuntimeReads):
    """Hosts actor classes on a journal `Store`; use it as an async context manager.

    Every turn's end checkpoints the actor (state, inbox progress) in the same transaction;
    every ``snapshot_every`` turns the journal behind the checkpoint is deleted (0: never).
    Actors idle for ``idle_timeout`` seconds are passivated. Every turn records the code
    version that runs it: ``version`` (a build id) if given, else one derived from the actor
    class's source (`source_version`), per type in ``versions``. ``retry`` is the retry
    policy of steps whose step and actor type give none (default: `Retry()`). Sync step
    functions run in worker threads, at most ``step_threads`` at once. Client idempotency
    keys are kept ``idempotency_retention`` seconds. An actor holds at most
    ``max_pending_events`` events nobody has waited for yet, and ``max_queued_messages``
    messages waiting for their turns; further deliveries and sends are refused
    (`InboxFull`). An actor in memory keeps the outcomes of its last ``keep_results``
    invocations at hand; older ones (and every outcome of a passivated actor) are read from
    the journal, through their index. With ``cluster`` (on a `journal.PostgresStore`), it
    is one worker of a fleet sharing the journal: it hosts an actor only under its lease
    (see docs/cluster.md). An ended invocation's chunk stream (`Context.stream`) is
    deleted ``stream_retention`` seconds after its end (see docs/streams.md). Payloads over
    ``value_threshold`` bytes are stored once per store by digest (0 or None: never). With
    a ``tracer_provider`` (OpenTelemetry's), turns and steps are traced (docs/tracing.md).
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
        keep_results: int = 100,
        grace: float = 25.0,
        retry: Retry | None = None,
        step_threads: int = 40,
        idempotency_retention: float = _idempotency.DEFAULT_RETENTION,
        max_pending_events: int = 100,
        max_queued_messages: int = 1000,
        cluster: ClusterOptions | None = None,
        stream_retention: float = DEFAULT_STREAM_RETENTION,
        tracer_provider: Any = None,
        value_threshold: int | None = DEFAULT_VALUE_THRESHOLD,
    ) -> None:
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry= takes an actorflow.Retry, got {retry!r}")
        if not isinstance(step_threads, int) or step_threads < 1:
            raise ValueError(f"step_threads must be an integer >= 1, got {step_threads!r}")
        if not idempotency_retention > 0:
            raise ValueError(f"idempotency_retention must be > 0 s, got {idempotency_retention!r}")
        #: Payloads over ``value_threshold`` bytes are stored once, as journal values.
        self.store: Store
        self.store, self.record_limit = values_store(store, value_threshold)
        self.clock: Clock = clock or SystemClock()
        self.snapshot_every = snapshot_every
        self.idle_timeout = idle_timeout
        self.version = version
        self.keep_results = keep_results
        self.grace = grace
        self.default_retry = retry or DEFAULT_RETRY
        self.idempotency_retention = idempotency_retention
        self.max_pending_events = max_pending_events
        self.max_queued_messages = max_queued_messages
        self.key_tag: str = store.identity[:16]
        self._step_threads = step_threads
        self.step_threads: anyio.CapacityLimiter  # made in __aenter__ (needs a loop)
        self.metrics = Metrics()
        self._types: dict[str, type[Actor]] = {}
        for cls in actors:
            if not (isinstance(cls, type) and issubclass(cls, Actor)) or cls is Actor:
                raise TypeError(f"Runtime hosts actorflow.Actor subclasses, got {cls!r}")
            name = cls.__actorflow_name__
            if name in self._types and self._types[name] is not cls:
                raise ValueError(f"two actor classes are both named {name!r}")
            self._types[name] = cls
        #: The code version each type's new turns record: ``version``, or its source's.
        self.versions = {name: version or source_version(cls) for name, cls in self._types.items()}
        self._hosts: dict[str, ActorHost] = {}
        self._waiters = Waiters()
        self._group: anyio.abc.TaskGroup | None = None
        self._running = False
        self._live_hosts = 0
        self._all_stopped = anyio.Event()
        self._stopping = anyio.Event()
        self._accepting = False
        self._stop_outcomes: dict[str, str] = {}
        if cluster is not None and not isinstance(cluster, ClusterOptions):
            raise TypeError(f"cluster= takes an actorflow.ClusterOptions, got {cluster!r}")
        #: The chunk streams of streaming steps (`Context.stream`); see docs/streams.md.
        self.streams = ChunkStreams(self, stream_retention)
        #: This runtime's part in a fleet of workers (None: it is the journal's only one).
        self.worker = Worker(self, cluster) if cluster is not None else None
        self.tracing = _tracing.enable(tracer_provider)  # None: tracing off

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
        self.step_threads = anyio.CapacityLimiter(self._step_threads)
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._running = True
        self._accepting = True
        try:
            if self.worker is not None:
                await self.worker.join(self._group)
            await self.recover()
            self._group.start_soon(self._sweep_claims, name="idempotency key retention")
            self._group.start_soon(self.streams.run, name="chunk streams")
            self._group.start_soon(self._sweep_streams, name="chunk stream retention")
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
        self._stopping.set()
        await self._checkpoint_all(self.grace)
        await self.streams.close()
        if self.worker is not None:
            await self.worker.leave()

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
        self._stopping.set()
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
        await self.streams.close()
        if self.worker is not None:
            await self.worker.leave()
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
        """Activate every actor with unfinished work; quarantine any whose journal is damaged."""
        count = 0
        for inbox in await self.store.list_streams("inbox/"):
            actor_id = inbox.removeprefix("inbox/")
            type_name = actor_id.partition("/")[0]
            if actor_id in self._hosts or type_name not in self._types:
                continue
            if self.worker is not None:
                self.worker.offer(actor_id)  # it reads the journal, under the lease's rules
            elif (await _quarantine.view(self, actor_id)).has_work:
                self._activate(actor_id)
                count += 1
        self.metrics.recovered += count
        if count:
            log.info("recovered %d actors with unfinished work", count)
        return count

    def _activate(self, actor_id: str, failures: int = 0) -> ActorHost:
        host = self._hosts.get(actor_id)
        if host is not None:
            return host
        if self._group is None or not self._running:
            raise RuntimeClosedError("the runtime is not running; use `async with Runtime(...)`")
        type_name, _, key = actor_id.partition("/")
        host = ActorHost(self, self._types[type_name], key, failures)
        self._hosts[actor_id] = host
        self.metrics.activations += 1
        self._group.start_soon(self._run_host, host, name=f"actor {actor_id}")
        return host

    async def _run_host(self, host: ActorHost) -> None:
        self._live_hosts += 1
        ended = False
        try:
            with host.scope:
                await host.run()
        finally:
            if self.worker is not None and _fenced(host):
                host.fenced = True  # another worker owns the actor now
            if self._hosts.get(host.actor_id) is host:
                if host.fenced:
                    del self._hosts[host.actor_id]
                    ended = True
                elif host.state == "retrying" and self._running and self._group is not None:
                    self._group.start_soon(self._retry_later, host)
                elif host.state not in ("stuck", "held", "retrying", "corrupt"):
                    del self._hosts[host.actor_id]
                    if host.notified_late and self._running:
                        self._activate(host.actor_id)
                    else:
                        ended = True
            if ended and self.worker is not None:
                await self.worker.host_ended(host)
            self._live_hosts -= 1
            if not self._live_hosts:
                self._all_stopped.set()
                self._all_stopped = anyio.Event()

    async def _retry_later(self, host: ActorHost) -> None:
        """Activate a fresh host for an actor whose journal failed, after a pause that
        doubles with each failure in a row (the failed host stays listed meanwhile, so its
        status says why); in a fleet, only while this worker holds its lease (if it cannot
        be looked at, after another, longer pause)."""
        while True:
            with anyio.move_on_after(min(MAX_RETRY_PAUSE, 0.05 * 2**host.failures)):
                await self._stopping.wait()
            if not self._running or self._hosts.get(host.actor_id) is not host:
                return
            try:
                if self.worker is not None and not await self.worker.retries(host):
                    return
                break
            except Exception as exc:  # its lease could not be looked at: a longer pause
                log.warning("actor %s: taking its lease again failed: %s", host.actor_id, exc)
                host.failures += 1
        if self._running and self._hosts.get(host.actor_id) is host:
            del self._hosts[host.actor_id]
            self._activate(host.actor_id, host.failures + 1)
            self._waiters.wake_actor(host.actor_id)

    def notify(self, actor_id: str, position: int | None = None) -> None:
        """New inbox entries for ``actor_id`` were committed (through inbox ``position``,
        if known): wake (or activate) it."""
        host = self._hosts.get(actor_id)
        if host is not None:
            host.notify(position)
        elif self._running and actor_id.partition("/")[0] in self._types:
            self._take_on(actor_id, inbox_grew=True)

    def _take_on(self, actor_id: str, *, inbox_grew: bool = False) -> None:
        """Host ``actor_id`` here: at once, or, in a fleet, if its lease allows."""
        if self.worker is not None:
            self.worker.offer(actor_id, inbox_grew=inbox_grew)
        else:
            self._activate(actor_id)

    def hands_over(self, host: ActorHost) -> bool:
        """Whether ``host`` should leave its next turn to a worker of newer code."""
        return self.worker is not None and self.worker.hands_over(host)

    def idle_after(self, host: ActorHost) -> float:
        """How long ``host`` may idle before it is passivated."""
        return self.idle_timeout if self.worker is None else self.worker.idle_after(host)

    def _refuse_if_stuck(self, actor_id: str) -> None:
        host = self._hosts.get(actor_id)
        if host is not None and host.state in ("stuck", "corrupt"):
            raise _quarantine.refusal(host)

    # -- messages -------------------------------------------------------------------------

    def ref(self, cls: type[A], key: str) -> ActorHandle[A]:
        """A typed reference to the actor of class ``cls`` with ``key``."""
        if cls.__actorflow_name__ not in self._types:
            raise UnknownActorError(self._unknown_type(cls.__actorflow_name__))
        return ActorHandle(self, cls, key)

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
        budget: Grant | None = None,
    ) -> StreamAppend:
        """Validate a message and return the inbox append that accepts it (``budget``: what
        its invocation spends from; None: the actor type's default budget, if any)."""
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
            trace=msgspec.UNSET if self.tracing is None else self.tracing.message_trace(),
            budget=budget or default_grant(self._types.get(target.type_name), invocation, self),
        )
        record = INBOX_CODEC.encode(message)
        if len(record.data) > self.record_limit:
            raise MessageTooLarge(
                f"the arguments of {target.type_name}.{handler} take {len(record.data):,} bytes, "
                f"over the journal's record limit of {self.record_limit:,} bytes; pass a "
                f"reference to large data instead"
            )
        return StreamAppend(inbox_stream(target.id), (record,))

    async def send(
        self,
        target: ActorRef,
        handler: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        deadline: float | None = None,
        budget: Budget | None = None,
    ) -> str:
        """Accept a message for ``target`` durably; return its invocation id.

        A retry with the same ``idempotency_key`` (per actor, kept for
        ``idempotency_retention``) and the same request returns the first send's
        invocation instead of sending again; the same key with another request is refused
        (`IdempotencyKeyReused`). ``deadline`` (seconds) bounds the whole turn: past it the
        turn is cancelled and its compensations run. ``budget`` limits what the invocation
        and the ones it calls spend (docs/budgets.md).
        """
        self._check_accepting()
        self._refuse_if_stuck(target.id)
        invocation = f"{target.id}#{os.urandom(12).hex()}"
        grant = root_grant(budget, invocation, self)
        accept = self.accept_message(
            target, handler, args, kwargs or {}, invocation, None, idempotency_key, deadline, grant
        )
        parts = [accept]
        request = 0
        if idempotency_key is not None:
            _idempotency.check_key(idempotency_key)
            sent = INBOX_CODEC.decode_payload("message", accept.records[0].data, "", 0)
            assert isinstance(sent, MessageAccepted)
            request = _idempotency.request_fingerprint(handler, bytes(sent.args), sent.deadline)
            parts += _idempotency.claim_parts(
                target.id, idempotency_key, invocation, request, self.clock.now()
            )
        try:
            host = await self._room_in_queue(target.id)
        except TooManyQueuedMessages:
            if idempotency_key is not None:  # a retry of an accepted request still gets it
                stream = idempotency_stream(target.id, idempotency_key)
                first = await _idempotency.claimed(
                    self.store, stream, idempotency_key, request, target.id
                )
                if first is not None:
                    return first
            raise
        if host is not None:
            host.sending += 1
        try:
            await self._accept(target.id, parts, host)
        except ConflictError as exc:
            if idempotency_key is None or exc.stream != parts[1].stream:
                raise
            first = await _idempotency.claimed(
                self.store, exc.stream, idempotency_key, request, target.id
            )
            if first is None:  # the claim expired between the two: send again
                return await self.send(
                    target,
                    handler,
                    args,
                    kwargs,
                    idempotency_key=idempotency_key,
                    deadline=deadline,
                    budget=budget,
                )
            return first
        return invocation

    async def _room_in_queue(self, actor_id: str) -> ActorHost | None:
        """The actor's host if it is in memory (None: the send activates it), if the
        actor has room for one more message; else `TooManyQueuedMessages`. A send does not
        wait for an activation under way (that would hold every send behind the journal
        reads of a replay): until the inbox is read, only messages sent since count."""
        host = self._hosts.get(actor_id)
        if host is None:
            return None
        if host.queue_length() >= self.max_queued_messages:
            raise TooManyQueuedMessages(
                f"actor {actor_id} already has {host.queue_length()} messages waiting for "
                f"their turns (the limit is {self.max_queued_messages}); send again once it "
                f"has caught up, or raise max_queued_messages"
            )
        return host

    async def _accept(
        self, actor_id: str, parts: list[StreamAppend], sender: ActorHost | None = None
    ) -> None:
        """Append to an actor's inbox (with ``parts``' other streams) and wake the actor,
        even if the append failed: it may have committed all the same. A send counted in
        ``sender``'s queue while under way is counted as a notification from then on."""
        position = None
        try:
            appended = await self.store.append_many(parts)
            inbox = inbox_stream(actor_id)
            position = next(a.last_position for a in appended if a.stream == inbox)
        finally:
            if sender is not None:
                sender.sending -= 1
            self.notify(actor_id, position)

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise RuntimeClosedError(
                "the runtime is not accepting messages (it is stopped or shutting down); "
                "retry against the next process"
            )

    async def cancel(self, invocation: str) -> None:
        """Cancel an invocation: a running turn stops at its next step boundary and its
        compensations run; a queued one is cancelled at once (its handler never runs).
        Durable."""
        actor_id = self._actor_of(invocation)
        self._refuse_if_stuck(actor_id)
        entry = InvocationCancelled(invocation, self.clock.now())
        await self._accept(actor_id, [_inbox_part(actor_id, INBOX_CODEC.encode(entry))])
        host = self._hosts.get(actor_id)
        if host is not None:
            host.cancel(invocation)
            self._waiters.wake_actor(actor_id)

    async def retry(self, invocation: str) -> InvocationStatus:
        """Run a failed invocation again, from its last journaled step: the steps that
        completed are handed back from the journal (not run again), the step that failed
        and everything after it run live, under the same idempotency keys.

        Refused (`InvocationNotRetryable`) unless it failed without being cancelled and
        nothing was compensated (undone effects would be built upon).
        """
        actor_id = self._actor_of(invocation)
        self._refuse_if_stuck(actor_id)
        self._check_accepting()
        current = await self.invocation(invocation)
        if current is None:
            raise InvalidMessageError(f"no invocation {invocation!r} was accepted")
        if current.state in ("queued", "running"):
            raise InvocationNotRetryable(f"invocation {invocation} is {current.state}; wait for it")
        ended = await _inspect.find_outcome(self.store, actor_id, invocation)
        if ended is None or not ended.seed:
            raise InvocationNotRetryable(_inspect.not_retryable(invocation, current))
        first = ACTOR_CODEC.decode_payload(ended.seed[0].type, ended.seed[0].data, "seed", 0)
        assert isinstance(first, TurnStarted)
        message = MessageAccepted(
            invocation,
            first.handler,
            first.args,
            self.clock.now(),
            retry_of=first.key_turn or first.turn,
            seed=ended.seed,
            budget=first.budget,
        )
        host = self._hosts.get(actor_id)
        if host is not None:
            host.results.pop(invocation, None)
        await self._accept(actor_id, [_inbox_part(actor_id, INBOX_CODEC.encode(message))])
        return InvocationStatus(invocation, actor_id, "queued", handler=first.handler)

    async def reset_to_last_turn(self, target: ActorRef, discard_turn: int) -> TurnReset:
        """Reset a stuck or held actor to its last turn boundary: export, then discard,
        the journal entries of its unfinished turn, which must be turn ``discard_turn``;
        its message then runs again from the start under this code (see
        docs/versioning.md, "Stuck is never lost"). Refused with `ResetRefused`."""
        self._check_accepting()
        self._check_ref(target)
        return await _reset.reset_in(self, target.id, discard_turn)

    async def deliver(self, target: ActorRef, name: str, payload: Any = None) -> None:
        """Deliver the event ``name`` to ``target`` durably (kept until it is waited for).

        Refused before anything is written when the actor's class declares its events and
        this is not one of them or its payload has the wrong type (`InvalidMessageError`),
        when the actor already holds ``max_pending_events`` events nobody waited for
        (`TooManyPendingEvents`), or when it is stuck (`ActorStuckError`).
        """
        self._check_accepting()
        check_key(target.key)
        cls = self._types.get(target.type_name)
        if cls is None:
            raise UnknownActorError(self._unknown_type(target.type_name))
        if not isinstance(name, str) or not name or name.startswith("\x00"):
            raise InvalidMessageError(f"event names are non-empty strings, got {name!r}")
        try:
            data = encode(payload)
        except (TypeError, OverflowError) as exc:
            raise InvalidMessageError(f"event {name!r} payload is not encodable: {exc}") from None
        check_event(cls, name, data)
        trace = msgspec.UNSET if self.tracing is None else self.tracing.message_trace()
        event = EventDelivered(name, msgspec.Raw(data), self.clock.now(), trace)
        record = INBOX_CODEC.encode(event)
        if len(record.data) > self.record_limit:
            raise MessageTooLarge(
                f"event {name!r} takes {len(record.data):,} bytes, over the journal's record "
                f"limit of {self.record_limit:,} bytes"
            )
        self._refuse_if_stuck(target.id)
        if self.worker is not None and target.id not in self._hosts:
            # hosted elsewhere, or by nobody yet: the owner reads it from the inbox (and
            # the pending-events bound is checked only where the actor is hosted)
            await self._accept(target.id, [_inbox_part(target.id, record)])
            return
        host = self._activate(target.id)
        await host.activated.wait()
        self._refuse_if_stuck(target.id)
        await host.read_new()
        if host.pending_events() >= self.max_pending_events:
            raise TooManyPendingEvents(
                f"actor {target.id} already holds {host.pending_events()} events that no "
                f"turn has waited for (the limit is {self.max_pending_events}); deliver more "
                f"once it consumes them, or raise max_pending_events"
            )
        host.delivering += 1
        try:
            await self._accept(target.id, [_inbox_part(target.id, record)])
        finally:
            host.delivering -= 1

    # -- results --------------------------------------------------------------------------

    def actor_stuck(self, actor_id: str) -> None:
        """Wake everyone waiting for a result of an actor that got stuck."""
        self._waiters.wake_actor(actor_id)

    def invocation_ended(self, invocation: str, reply: Reply) -> None:
        """A host finished an invocation: wake whoever waits for it."""
        self.metrics.turns += 1
        self._waiters.wake_invocation(invocation)

    async def result(self, invocation: str, *, timeout: float | None = None) -> Any:
        """Wait for an invocation's result (raise `HandlerFailed` for its error, or for its
        cancellation; `ActorStuckError` if its actor is stuck). Finished invocations are
        read back from the journal however long ago they ended."""
        actor_id = self._actor_of(invocation)
        with anyio.fail_after(math.inf if timeout is None else timeout):
            while True:
                event = self._waiters.add(invocation)
                try:
                    settled = await self._settled(invocation, actor_id)
                    if settled is not None:
                        return settled.value
                    await event.wait()
                finally:
                    self._waiters.discard(invocation, event)

    async def _settled(self, invocation: str, actor_id: str) -> _Result | None:
        """The result of ``invocation`` if it has one (raising its error), else None."""
        host = self._hosts.get(actor_id)
        if host is not None:
            await host.activated.wait()  # then its memory answers, without a journal read
            if host.state == "stuck":
                raise ActorStuckError(f"actor {actor_id} is stuck: {host.stuck}")
        status = await self.invocation(invocation)
        if status is None:
            raise InvalidMessageError(f"no invocation {invocation!r} was accepted")
        if status.state == "completed":
            return _Result(status.result)
        if status.state in ("failed", "cancelled"):
            raise HandlerFailed(invocation, status.error_type or "", status.error or "")
        if host is None and self._running:
            self._take_on(actor_id)  # journaled work that nobody hosts: take it on
        return None

    async def workers(self) -> list[WorkerInfo]:
        """The live workers on this journal, with their capacity, load and code versions
        (none for a journal of one process)."""
        return [] if self.worker is None else await self.worker.fleet()

    def running_turns(self) -> int:
        """How many actors are in the middle of a turn."""
        return sum(1 for host in self._hosts.values() if host.turn is not None)

    def hosted(self) -> dict[str, str]:
        """The actors in memory now, and their states."""
        return {actor_id: host.status_state() for actor_id, host in self._hosts.items()}

    def in_memory(self) -> int:
        """How many actors are in memory now (`hosted`, counted)."""
        return len(self._hosts)

    # -- idempotency key retention -------------------------------------------------------

    async def expire_idempotency_keys(self) -> int:
        """Forget client idempotency keys older than ``idempotency_retention``; return how
        many. Runs by itself in the background; call it to sweep now."""
        return await _idempotency.sweep(self.store, self.idempotency_retention, self.clock.now())

    async def _sweep_claims(self) -> None:
        await _idempotency.sweep_until(self._stopping, self.idempotency_retention, self._sweep)

    async def expire_streams(self) -> int:
        """Delete the chunk streams of invocations that ended ``stream_retention`` seconds
        ago (first marking those that ended since the last sweep); return how many. Runs
        by itself in the background; call it to sweep now."""
        return await self.streams.expire()

    async def _sweep_streams(self) -> None:
        await self.streams.sweep_until(self._stopping, self._may_sweep)

    async def _may_sweep(self) -> bool:
        return self.worker is None or await self.worker.may_sweep()

    async def _sweep(self) -> int:
        """Sweep expired idempotency keys; in a fleet, only while holding the sweeper's
        lease (two sweepers could delete a key claimed again between their reads)."""
        if self.worker is not None and not await self.worker.may_sweep():
            return 0
        swept = await self.expire_idempotency_keys()
        await self.store.collect_values()  # values no record or checkpoint refers to now
        return swept


def _fenced(host: ActorHost) -> bool:
    """Whether the journal refused ``host``'s writes because another worker wrote for the
    actor: under a newer epoch, or (checked first) at the position this host expected."""
    failure = host.failure
    return failure is not None and isinstance(failure.cause, FencingError | ConflictError)


class _Result:
    """A completed invocation's result, as `Runtime._settled` hands it back."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _inbox_part(actor_id: str, record: NewRecord) -> StreamAppend:
    return StreamAppend(inbox_stream(actor_id), (record,))
