"""`Turn`: one handler invocation, run live or replayed from the journal.

The turn implements the `TurnOps` protocol behind `Context`. Each ctx operation gets a
step id (see `actorflow._replay`), is looked up in the turn's `RecordedTurn`, and either
hands back what was journaled or runs live and journals its outcome, durably, before
the handler sees it. Everything the turn writes goes through its `TurnHost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import anyio
import msgspec

from actorflow._clock import Clock
from actorflow._context import ActorRef, Context, StepOptions, current_step_key
from actorflow._errors import (
    ActorflowError,
    HandlerFailed,
    InvalidResultError,
    NonDeterminismError,
    StepOutcomeUnknown,
    Suspended,
    TurnCancelled,
)
from actorflow._events import (
    ActorEntry,
    EventDelivered,
    Reply,
    ReplyTo,
    StepCompleted,
    StepFailed,
    StepStarted,
    TimerStarted,
)
from actorflow._replay import Recorded, RecordedTurn
from actorflow._values import (
    decoder_for,
    derive,
    encode,
    encode_result,
    error_info,
    fingerprint,
    rebuild_error,
    result_type_of,
)
from journal import StreamAppend

#: The branch of the running task ("" for the handler itself; "4.2" for the second branch
#: of the gather that was step 4).
_branch: contextvars.ContextVar[str] = contextvars.ContextVar("actorflow_branch", default="")

_REPLY_PREFIX = "\x00reply:"
_NONE = encode(None)


class TurnHost(Protocol):
    """What a turn needs from the actor that hosts it."""

    actor_id: str
    clock: Clock
    suspending: anyio.Event
    waiting_on: str | None

    async def journal(
        self, entries: Sequence[ActorEntry], extra: Sequence[StreamAppend] = ()
    ) -> None:
        """Append entries to the actor's journal (and ``extra`` in the same transaction)."""
        ...

    def take_event(self, name: str) -> tuple[int, EventDelivered] | None:
        """The oldest unconsumed event called ``name``, removed from the buffer."""
        ...

    def consumed_event(self, position: int) -> None:
        """Replay consumed the event at this inbox position."""
        ...

    async def event_arrival(self) -> None:
        """Return when a new event may have arrived."""
        ...

    def prepare_send(
        self,
        target: ActorRef,
        handler: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        invocation: str,
        reply_to: ReplyTo | None,
    ) -> StreamAppend:
        """Validate a message to another actor and return the append that accepts it."""
        ...

    def sent(self, target: ActorRef) -> None:
        """A message to ``target`` was committed: wake it."""
        ...

    def result_type(self, target: ActorRef, handler: str) -> Any:
        """The annotated result type of another actor's handler."""
        ...


def _accepts_key(fn: Callable[..., Any]) -> bool:
    try:
        return "idempotency_key" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


_accepts_key_cached = functools.lru_cache(maxsize=1024)(_accepts_key)


def _step_order(step: str) -> tuple[int, ...]:
    return tuple(int(part) for part in step.split(".") if part.isdigit())


class Turn:
    """One turn of one actor: the implementation behind its `Context`."""

    def __init__(
        self,
        host: TurnHost,
        key: str,
        turn: int,
        invocation: str,
        started_at: float,
        recorded: RecordedTurn,
        deadline: float | None = None,
    ) -> None:
        self.host = host
        self.actor_id = host.actor_id
        self.key = key
        self.turn = turn
        self.invocation = invocation
        self.recorded = recorded
        self.context = Context(self)
        self.diverged: NonDeterminismError | None = None
        self.point_of_no_return: str | None = None
        self._seed = derive(self.actor_id, str(turn), invocation)
        self._counters: dict[str, int] = {}
        # Which task may take steps on each branch: the turn's own task for the handler,
        # and the task ctx.gather/ctx.first started for each of their branches.
        self._owners: dict[str, asyncio.Task[Any] | None] = {"": asyncio.current_task()}
        self._times: dict[str, float] = {"": started_at}
        self._entropy: dict[str, int] = {}
        self._compensations: list[tuple[tuple[int, ...], str, str, Callable[[Any], Any], Any]] = []
        self._compensated: set[str] = set()
        self.undone: list[str] = []
        self.cancel_reason: str | None = None
        self._cancel = anyio.Event()
        self.compensating = False
        self.deadline = deadline

    # -- step ids, time, checks ----------------------------------------------------------

    def _next(self) -> tuple[str, str]:
        if self.diverged is not None:
            raise self.diverged
        branch = _branch.get()
        task = asyncio.current_task()
        if self._owners.get(branch) is not task:
            raise ActorflowError(
                f"actor {self.actor_id}: a ctx operation ran in a task that ctx.gather or "
                f"ctx.first did not start; the order of such steps is not deterministic. "
                f"Run concurrent steps with `await ctx.gather(ctx.run(a), ctx.run(b))`."
            )
        seq = self._counters.get(branch, 0) + 1
        self._counters[branch] = seq
        return branch, f"{branch}.{seq}" if branch else str(seq)

    def _take(self, step: str, name: str, kind: str, fp: int = 0) -> Recorded | None:
        cancelled = self.recorded.cancelled
        if cancelled is not None and not self.recorded.has(step) and not step.endswith("~undo"):
            raise TurnCancelled(cancelled)  # replay: this is where it was cancelled
        try:
            return self.recorded.take(step, name, kind, fp)
        except NonDeterminismError as exc:
            self.diverged = exc
            raise

    def cancel(self, reason: str) -> None:
        """Cancel the turn at its next step boundary (or wait), unless it has passed its
        point of no return; its compensations then run."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self._cancel.set()

    @property
    def _cancellable(self) -> bool:
        return (
            self.cancel_reason is not None
            and self.point_of_no_return is None
            and not self.compensating
        )

    def _live(self) -> None:
        """About to do something live: stop here if the turn is checkpointed or cancelled."""
        if self.host.suspending.is_set():
            raise Suspended()
        if self.deadline is not None and self.host.clock.now() >= self.deadline:
            self.cancel("deadline exceeded")
        if self._cancellable:
            raise TurnCancelled(self.cancel_reason or "cancelled")

    async def _expire(self, deadline: float) -> None:
        await self.host.clock.sleep_until(deadline)
        self.cancel("deadline exceeded")

    def _cancelled_here(self, branch: str) -> bool:
        """Replaying a cancelled turn: was it cancelled while waiting at this step?"""
        if self.recorded.cancelled is None:
            return False
        return not self.recorded.has_beyond(branch, self._counters.get(branch, 0) + 1)

    def _advance(self, branch: str, at: float) -> None:
        if at > self._times.get(branch, 0.0):
            self._times[branch] = at

    def now(self) -> float:
        """The logical time of the running branch."""
        branch = _branch.get()
        while branch not in self._times:
            branch = branch.rpartition(".")[0]
        return self._times[branch]

    def entropy(self) -> bytes:
        """Deterministic random bytes: a new draw per call, per branch."""
        branch = _branch.get()
        draw = self._entropy.get(branch, 0) + 1
        self._entropy[branch] = draw
        return derive(self._seed.hex(), branch, str(draw))

    def key_for(self, step: str) -> str:
        """The idempotency key of a step: stable across every re-execution of that step."""
        return f"{self.actor_id}/t{self.turn}/s{step}"

    async def _until_suspended(self, waiter: Callable[[], Awaitable[Any]]) -> Any:
        """Await ``waiter()`` unless the turn is checkpointed (raise Suspended) or
        cancelled (raise TurnCancelled) first."""
        outcome: list[Any] = []
        async with anyio.create_task_group() as group:

            async def wait() -> None:
                outcome.append(await waiter())
                group.cancel_scope.cancel()

            async def watch(event: anyio.Event) -> None:
                await event.wait()
                group.cancel_scope.cancel()

            group.start_soon(wait)
            group.start_soon(watch, self.host.suspending)
            if self.point_of_no_return is None and not self.compensating:
                group.start_soon(watch, self._cancel)
                if self.deadline is not None:
                    group.start_soon(self._expire, self.deadline)
        if outcome:
            return outcome[0]
        self._live()
        raise Suspended()  # not reached: _live raised

    # -- steps ----------------------------------------------------------------------------

    async def run(self, fn: Callable[..., Any], args: tuple[Any, ...], options: StepOptions) -> Any:
        """Run a step once (or hand back its journaled outcome)."""
        branch, step = self._next()
        fp = fingerprint(args)
        rec = self._take(step, options.name, "run", fp)
        kind = options.result_type if options.result_type is not None else result_type_of(fn)
        if rec is not None and rec.outcome is not None:
            return self._replayed(branch, step, rec.outcome, options, kind)
        self._live()
        key = self.key_for(step)
        if rec is not None and rec.started is not None:  # it was running at the crash
            if options.reconcile is not None:
                answer = options.reconcile(key)
                if inspect.isawaitable(answer):
                    answer = await answer
                if answer is not None:
                    return await self._completed(branch, step, options, fp, answer.result, kind, 0)
            elif options.at_most_once:
                unknown = StepOutcomeUnknown(options.name, key)
                await self._failed(branch, step, options.name, "run", fp, unknown, 0)
                raise unknown
        elif options.reconcile is not None or options.at_most_once:
            at = self.host.clock.now()
            await self.host.journal([StepStarted(self.turn, step, options.name, "run", fp, at)])
        try:
            value, attempts = await self._execute(fn, args, options, key)
        except Exception as exc:
            attempts = getattr(exc, "__actorflow_attempts__", 1)
            raise await self._failed(branch, step, options.name, "run", fp, exc, attempts) from exc
        return await self._completed(branch, step, options, fp, value, kind, attempts)

    async def _execute(
        self, fn: Callable[..., Any], args: tuple[Any, ...], options: StepOptions, key: str
    ) -> tuple[Any, int]:
        extra = {"idempotency_key": key} if _accepts_key_cached(fn) else {}
        attempt = 0
        while True:
            attempt += 1
            token = current_step_key.set(key)
            try:
                value = fn(*args, **extra)
                if inspect.isawaitable(value):
                    value = await value
                return value, attempt
            except Exception as exc:
                retry = options.retry
                if (
                    retry is None
                    or attempt >= retry.attempts
                    or not isinstance(exc, retry.retry_on)
                ):
                    with contextlib.suppress(AttributeError):  # some exceptions refuse attributes
                        exc.__actorflow_attempts__ = attempt  # type: ignore[attr-defined]
                    raise
                draw = int.from_bytes(derive(key, str(attempt), size=4), "big") / 2**32
                delay = retry.delay(attempt, draw)
            finally:
                current_step_key.reset(token)
            await anyio.sleep(delay)
            self._live()

    def _replayed(
        self,
        branch: str,
        step: str,
        outcome: StepCompleted | StepFailed,
        options: StepOptions,
        kind: Any,
    ) -> Any:
        self._advance(branch, outcome.at)
        if isinstance(outcome, StepFailed):
            raise rebuild_error(options.name, outcome.error)
        try:
            value = decoder_for(kind).decode(outcome.value)
        except msgspec.ValidationError as exc:
            raise InvalidResultError(
                f"actor {self.actor_id}: the journaled result of step {options.name!r} "
                f"(step id {step}) no longer decodes as {kind!r}: {exc}"
            ) from None
        self._register(step, options, value)
        return value

    async def _completed(
        self,
        branch: str,
        step: str,
        options: StepOptions,
        fp: int,
        value: Any,
        kind: Any,
        attempts: int,
    ) -> Any:
        try:
            data, decoded = encode_result(options.name, value, kind)
        except InvalidResultError as exc:
            raise await self._failed(branch, step, options.name, "run", fp, exc, attempts) from None
        at = self.host.clock.now()
        entry = StepCompleted(
            self.turn, step, options.name, "run", msgspec.Raw(data), fp, 0, attempts, at
        )
        await self.host.journal([entry])
        self._advance(branch, at)
        self._register(step, options, decoded)
        return decoded

    async def _failed(
        self,
        branch: str,
        step: str,
        name: str,
        kind: str,
        fp: int,
        exc: BaseException,
        attempts: int,
    ) -> Exception:
        """Journal a step's final error; return what the handler sees (as on replay)."""
        info = error_info(exc)
        at = self.host.clock.now()
        await self.host.journal([StepFailed(self.turn, step, name, kind, info, fp, attempts, at)])
        self._advance(branch, at)
        return rebuild_error(name, info)

    def _register(self, step: str, options: StepOptions, value: Any) -> None:
        if options.compensate is not None:
            self._compensations.append(
                (_step_order(step), step, options.name, options.compensate, value)
            )
        if options.irreversible and self.point_of_no_return is None:
            self.point_of_no_return = options.name

    # -- timers and events ----------------------------------------------------------------

    async def sleep(self, seconds: float, name: str) -> None:
        """A durable timer ``seconds`` from now."""
        await self._timer(name, lambda: self.host.clock.now() + seconds)

    async def sleep_until(self, deadline: float, name: str) -> None:
        """A durable timer until ``deadline``."""
        await self._timer(name, lambda: deadline)

    async def _timer(self, name: str, deadline: Callable[[], float]) -> None:
        branch, step = self._next()
        rec = self._take(step, name, "sleep")
        if rec is not None and rec.timer is not None:
            if self._cancelled_here(branch):
                raise TurnCancelled(self.recorded.cancelled or "cancelled")
            fire_at = rec.timer.fire_at
        else:
            self._live()
            fire_at = deadline()
            at = self.host.clock.now()
            await self.host.journal([TimerStarted(self.turn, step, name, fire_at, "sleep", at)])
        if self.host.clock.now() < fire_at:
            self.host.waiting_on = "timer"
            try:
                await self._until_suspended(lambda: self.host.clock.sleep_until(fire_at))
            finally:
                self.host.waiting_on = None
        self._advance(branch, fire_at)

    async def wait_for(self, name: str, timeout: float | None, kind: Any) -> Any:
        """Wait durably for the next event called ``name``."""
        branch, step = self._next()
        payload = await self._event_step(branch, step, name, timeout)
        try:
            return decoder_for(kind).decode(payload)
        except msgspec.ValidationError as exc:
            raise InvalidResultError(f"event {name!r} does not decode as {kind!r}: {exc}") from None

    async def _event_step(self, branch: str, step: str, name: str, timeout: float | None) -> bytes:
        rec = self._take(step, name, "event")
        if rec is not None and rec.outcome is not None:
            self._advance(branch, rec.outcome.at)
            if isinstance(rec.outcome, StepFailed):
                raise rebuild_error(name, rec.outcome.error)
            self.host.consumed_event(rec.outcome.ref)
            return bytes(rec.outcome.value)
        deadline: float | None = None
        if rec is not None and rec.outcome is None and self._cancelled_here(branch):
            raise TurnCancelled(self.recorded.cancelled or "cancelled")
        if rec is not None and rec.timer is not None:
            deadline = rec.timer.fire_at
        elif timeout is not None:
            self._live()
            deadline = self.host.clock.now() + timeout
            at = self.host.clock.now()
            await self.host.journal([TimerStarted(self.turn, step, name, deadline, "event", at)])
        while True:
            self._live()
            found = self.host.take_event(name)
            if found is not None:
                position, event = found
                at = self.host.clock.now()
                value = msgspec.Raw(bytes(event.payload))
                entry = StepCompleted(self.turn, step, name, "event", value, 0, position, 1, at)
                await self.host.journal([entry])
                self._advance(branch, at)
                return bytes(event.payload)
            if deadline is not None and self.host.clock.now() >= deadline:
                raise await self._failed(
                    branch, step, name, "event", 0, TimeoutError(f"no event {name!r}"), 1
                )
            self.host.waiting_on = "event"
            try:
                await self._until_suspended(lambda: self._arrival_or(deadline))
            finally:
                self.host.waiting_on = None

    async def _arrival_or(self, deadline: float | None) -> None:
        if deadline is None:
            await self.host.event_arrival()
            return
        async with anyio.create_task_group() as group:

            async def timer() -> None:
                await self.host.clock.sleep_until(deadline)
                group.cancel_scope.cancel()

            async def arrival() -> None:
                await self.host.event_arrival()
                group.cancel_scope.cancel()

            group.start_soon(timer)
            group.start_soon(arrival)

    # -- other actors ---------------------------------------------------------------------

    async def send(
        self,
        target: ActorRef,
        handler: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        call: bool,
    ) -> Any:
        """Message another actor exactly once; for a call, await its reply durably."""
        branch, step = self._next()
        rec = self._take(step, f"{target.id}.{handler}", "send")
        if rec is not None and isinstance(rec.outcome, StepCompleted):
            invocation: str = msgspec.msgpack.decode(rec.outcome.value, type=str)
            self._advance(branch, rec.outcome.at)
        else:
            self._live()
            invocation = f"{target.id}#{derive(self.key_for(step), size=12).hex()}"
            reply_to = ReplyTo(self.actor_id, _REPLY_PREFIX + invocation) if call else None
            accept = self.host.prepare_send(target, handler, args, kwargs, invocation, reply_to)
            at = self.host.clock.now()
            value = msgspec.Raw(encode(invocation))
            entry = StepCompleted(
                self.turn, step, f"{target.id}.{handler}", "send", value, 0, 0, 1, at
            )
            await self.host.journal([entry], [accept])
            self._advance(branch, at)
            self.host.sent(target)
        if not call:
            return invocation
        _, reply_step = self._next()
        data = await self._event_step(branch, reply_step, _REPLY_PREFIX + invocation, None)
        reply = msgspec.msgpack.decode(data, type=Reply)
        if not reply.ok:
            error = reply.error
            assert error is not None
            raise HandlerFailed(invocation, error.type, error.message)
        kind = self.host.result_type(target, handler)
        return decoder_for(kind).decode(reply.result)

    # -- versioning -----------------------------------------------------------------------

    async def patched(self, patch_id: str) -> bool:
        """True on runs that reach this point live or journaled the marker before."""
        if self.diverged is not None:
            raise self.diverged
        branch = _branch.get()
        step = f"{branch}.p:{patch_id}" if branch else f"p:{patch_id}"
        if self.recorded.has(step):
            self._take(step, patch_id, "patch")
            return True
        nxt = self._counters.get(branch, 0) + 1
        if self.recorded.end is not None or self.recorded.has_beyond(branch, nxt):
            return False  # journaled before the patch: keep to the old path
        self._live()
        at = self.host.clock.now()
        value = msgspec.Raw(encode(True))
        await self.host.journal([StepCompleted(self.turn, step, patch_id, "patch", value, at=at)])
        return True

    # -- concurrency ----------------------------------------------------------------------

    async def gather(self, awaitables: tuple[Awaitable[Any], ...], first: bool) -> Any:
        """Run awaitables as branches ``<step>.1``, ``<step>.2``, ...; see Context.gather."""
        branch, step = self._next()
        names = [f"{step}.{index}" for index in range(1, len(awaitables) + 1)]
        if first:
            rec = self._take(step, "first", "first")
            if rec is not None and isinstance(rec.outcome, StepCompleted):
                winner = int(msgspec.msgpack.decode(rec.outcome.value, type=int))
                value = await self._replay_winner(awaitables, names, winner)
                self._advance(branch, rec.outcome.at)  # as the live run did when it journaled
                return winner, value
        now = self.now()
        tasks = [
            self._start_branch(name, now, aw) for name, aw in zip(names, awaitables, strict=True)
        ]
        if not first:
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                    raise outcome  # Suspended or cancellation outrank errors
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            for name in names:
                self._advance(branch, self._times.get(name, 0.0))
            return list(outcomes)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            winner = min(tasks.index(task) for task in done)
            self._live()
            at = self.host.clock.now()
            value = msgspec.Raw(encode(winner))
            await self.host.journal(
                [StepCompleted(self.turn, step, "first", "first", value, at=at)]
            )
            self._advance(branch, at)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for index, name in enumerate(names):
            if index != winner:
                self.recorded.abandon(name)
        return winner, tasks[winner].result()

    def _start_branch(self, name: str, now: float, awaitable: Awaitable[Any]) -> asyncio.Task[Any]:
        context = contextvars.copy_context()
        context.run(_branch.set, name)
        self._times[name] = now
        task = asyncio.get_running_loop().create_task(_await(awaitable), context=context)
        self._owners[name] = task
        return task

    async def _replay_winner(
        self, awaitables: tuple[Awaitable[Any], ...], names: list[str], winner: int
    ) -> Any:
        for index, (name, awaitable) in enumerate(zip(names, awaitables, strict=True)):
            if index != winner:
                self.recorded.abandon(name)
                if inspect.iscoroutine(awaitable):
                    awaitable.close()
        return await self._start_branch(names[winner], self.now(), awaitables[winner])

    # -- compensation ---------------------------------------------------------------------

    async def compensate(self) -> list[str]:
        """Undo completed steps that registered compensations, newest first, exactly once."""
        if self.point_of_no_return is not None:
            raise ActorflowError(
                f"actor {self.actor_id}: turn {self.turn} passed its point of no return "
                f"(irreversible step {self.point_of_no_return!r}); it can no longer be "
                f"compensated. Put irreversible steps last in a saga."
            )
        undone = []
        for _, step, name, undo, value in sorted(self._compensations, reverse=True):
            if step in self._compensated:
                continue
            await self._undo(step, name, undo, value)
            self._compensated.add(step)
            undone.append(name)
            self.undone.append(name)
        return undone

    async def _undo(self, step: str, name: str, undo: Callable[[Any], Any], value: Any) -> None:
        undo_step = f"{step}~undo"
        rec = self._take(undo_step, name, "undo")
        if rec is not None and rec.outcome is not None:
            if isinstance(rec.outcome, StepFailed):
                raise rebuild_error(f"undo {name}", rec.outcome.error)
            return
        self._live()
        options = StepOptions(f"undo {name}")
        try:
            await self._execute(undo, (value,), options, self.key_for(undo_step))
        except Exception as exc:
            raise await self._failed("", undo_step, name, "undo", 0, exc, 1) from exc
        at = self.host.clock.now()
        entry = StepCompleted(self.turn, undo_step, name, "undo", msgspec.Raw(_NONE), at=at)
        await self.host.journal([entry])

    @property
    def can_compensate(self) -> bool:
        """Whether completed steps registered compensations not yet run, and the turn has
        not passed its point of no return."""
        return self.point_of_no_return is None and any(
            step not in self._compensated for _, step, *_ in self._compensations
        )


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
