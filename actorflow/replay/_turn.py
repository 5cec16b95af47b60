"""`Turn`: one handler invocation, run live or replayed from the journal.

The turn implements the `TurnOps` protocol behind `Context`. Each ctx operation gets a
step id (see `actorflow.replay._recorded`), is looked up in the turn's `RecordedTurn`, and either
hands back what was journaled or runs live and journals its outcome, durably, before
the handler sees it. Everything the turn writes goes through its `TurnHost`, and a write
once begun is never cut short by a cancellation (it is shielded): what the journal holds
and what the turn did in memory always agree.

The journal failing is not a step outcome: the host raises `JournalFailure` (a
BaseException) and aborts the turn, which stops where it stands and is replayed later.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import anyio
import msgspec

from actorflow import _tracing
from actorflow._budget import Budget
from actorflow._context import DECLARED, ActorRef, Context, Retry, StepOptions, current_step_key
from actorflow._errors import (
    ActorflowError,
    CompensationFailed,
    ContextMisuseError,
    ContinuedAsNew,
    HandlerFailed,
    InvalidResultError,
    JournalFailure,
    NonDeterminismError,
    StepOutcomeUnknown,
    StepResultTooLarge,
    Suspended,
    TurnCancelled,
)
from actorflow._events import (
    RULES,
    ActorEntry,
    ErrorInfo,
    Reply,
    ReplyTo,
    StepCompleted,
    StepFailed,
    StepRetrying,
    StepStarted,
    TimerStarted,
    TurnStarted,
)
from actorflow._values import (
    check_result_type,
    decoder_for,
    derive,
    encode,
    encode_result,
    error_info,
    fingerprint,
    legacy_fingerprint,
    rebuild_error,
)
from actorflow.replay import _branches, _budget_gate
from actorflow.replay._branches import _branch, _Lost
from actorflow.replay._protocol import TurnHost
from actorflow.replay._recorded import Recorded, RecordedTurn
from actorflow.replay._steps import Shape, call_step, refuse_inside_step, shape
from journal import StreamAppend

_REPLY_PREFIX = "\x00reply:"
_NONE = encode(None)
#: Bytes a step record needs besides its result (field names, ids, times): a result
#: within this distance of the journal's record limit is measured exactly.
_ENVELOPE = 1024


def _step_order(step: str) -> tuple[int, ...]:
    return tuple(int(part) for part in step.split(".") if part.isdigit())


class Turn:
    """One turn of one actor: the implementation behind its `Context`."""

    def __init__(
        self,
        host: TurnHost,
        key: str,
        started: TurnStarted,
        recorded: RecordedTurn,
        deadline: float | None = None,
    ) -> None:
        self.host = host
        self.actor_id = host.actor_id
        self.key = key
        self.turn = started.turn
        self.invocation = started.invocation
        self.rules = started.rules
        self.key_turn = started.key_turn or started.turn
        self.recorded = recorded
        self.chunks = getattr(host, "chunks", None)  # where ctx.stream sends chunks
        self.context = Context(self)
        self.diverged: NonDeterminismError | None = None
        #: Why the turn was aborted (the journal failed under it), if it was.
        self.failure: JournalFailure | None = None
        #: The scope the handler runs in; `abort` cancels it.
        self.scope: anyio.CancelScope | None = None
        self.point_of_no_return: str | None = None
        self._seed = derive(self.actor_id, str(self.key_turn), self.invocation)
        self._counters: dict[str, int] = {}
        # Which task may take steps on each branch: the turn's own task for the handler,
        # and the task ctx.gather/ctx.first started for each of their branches.
        _branch.set("")  # an actor activated from a branch's send does not inherit it
        self._owners: dict[str, asyncio.Task[Any] | None] = {"": asyncio.current_task()}
        self._times: dict[str, float] = {"": started.at}
        self._entropy: dict[str, int] = {}
        self._lost: set[str] = set()  # branches of ctx.first that lost their race
        self._compensations: list[
            tuple[tuple[int, ...], str, str, Callable[[Any], Any], Any, Retry]
        ] = []
        self._compensated: set[str] = set()
        self.undone: list[str] = []
        self.undo_failed: list[str] = []
        self.cancel_reason: str | None = None
        self._cancel = anyio.Event()
        self.compensating = False
        self.deadline = deadline
        self.budget, self.holds = started.budget, _budget_gate.holds()  # see _budget_gate

    # -- step ids, time, checks ----------------------------------------------------------

    def _next(self, operation: str = "ctx") -> tuple[str, str]:
        if current_step_key.get(None) is not None:
            refuse_inside_step(self.actor_id, operation)
        if self.failure is not None or self.diverged is not None:
            self._check_going()
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

    def _check_going(self) -> None:
        if self.failure is not None:
            raise self.failure
        if self.diverged is not None:
            raise self.diverged

    def _take(self, step: str, name: str, kind: str, fp: int = 0) -> Recorded | None:
        cancelled = self.recorded.cancelled
        if cancelled is not None and not self.recorded.has(step) and not step.endswith("~undo"):
            raise TurnCancelled(cancelled)  # replay: this is where it was cancelled
        try:
            return self.recorded.take(step, name, kind, fp)
        except NonDeterminismError as exc:
            self.diverged = exc
            self.abort()
            raise

    def abort(self, failure: JournalFailure | None = None) -> None:
        """Stop the whole turn where it stands (the journal failed, or replay diverged);
        the host then reports why."""
        if failure is not None and self.failure is None:
            self.failure = failure
        if self.scope is not None:
            self.scope.cancel()

    def raise_if_aborted(self) -> None:
        """After the handler's scope: raise why the turn was aborted, if it was."""
        self._check_going()

    def cancel(self, reason: str) -> None:
        """Cancel the turn at its next step boundary (or wait), unless it has passed its
        point of no return; its compensations then run."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self._cancel.set()

    @property
    def cancellable(self) -> bool:
        """Whether a requested cancellation takes effect now."""
        return (
            self.cancel_reason is not None
            and self.point_of_no_return is None
            and not self.compensating
        )

    def _is_lost(self, branch: str) -> bool:
        if not self._lost:
            return False
        return any(branch == lost or branch.startswith(lost + ".") for lost in self._lost)

    def _live(self, branch: str = "") -> None:
        """About to do something live: stop here if the turn is checkpointed or cancelled,
        or if this branch lost its race."""
        if self.failure is not None or self.diverged is not None:
            self._check_going()
        if self._lost and self._is_lost(branch):
            raise _Lost()
        if self.host.suspending.is_set():
            raise Suspended()
        if self.deadline is not None and self.host.clock.now() >= self.deadline:
            self.cancel("deadline exceeded")
        if self.cancel_reason is not None and self.cancellable:
            raise TurnCancelled(self.cancel_reason)

    async def _expire(self, deadline: float) -> None:
        await self.host.clock.sleep_until(deadline)
        self.cancel("deadline exceeded")

    def _ends_here(self, branch: str) -> bool:
        """Replaying: does the journal hold nothing of this branch after this step?"""
        return not self.recorded.has_beyond(branch, self._counters.get(branch, 0) + 1)

    def _stop_replay_here(self, branch: str) -> None:
        """Replaying a wait the journal recorded no end of: a cancelled turn was cancelled
        here, and a lost branch of ctx.first stops here (it was cancelled live)."""
        if self.recorded.cancelled is not None and self._ends_here(branch):
            raise TurnCancelled(self.recorded.cancelled)
        if self._is_lost(branch) and self._ends_here(branch):
            raise _Lost()

    def _advance(self, branch: str, at: float) -> None:
        if at > self._times.get(branch, 0.0):
            self._times[branch] = at

    def now(self) -> float:
        """The logical time of the running branch."""
        refuse_inside_step(self.actor_id, "ctx.now()")
        branch = _branch.get()
        while branch not in self._times:
            branch = branch.rpartition(".")[0]
        return self._times[branch]

    def entropy(self) -> bytes:
        """Deterministic random bytes: a new draw per call, per branch."""
        refuse_inside_step(self.actor_id, "ctx.random()/ctx.uuid()")
        branch = _branch.get()
        draw = self._entropy.get(branch, 0) + 1
        self._entropy[branch] = draw
        return derive(self._seed.hex(), branch, str(draw))

    def key_for(self, step: str) -> str:
        """The idempotency key of a step: stable across every re-execution of that step,
        and (since rules 2) unique to this journal."""
        if self.rules < 2:
            return f"{self.actor_id}/t{self.turn}/s{step}"
        return f"{self.host.key_tag}:{self.actor_id}/t{self.key_turn}/s{step}"

    def _write(
        self, entries: Sequence[ActorEntry], extra: Sequence[StreamAppend] = ()
    ) -> Awaitable[None]:
        """Journal ``entries``. In a branch of ctx.gather/ctx.first, a cancellation (a lost
        race) waits until the write is over, so that the bookkeeping after it happens once
        the records are in the journal. The handler's own task needs no shield: it is only
        cancelled when the whole turn is abandoned, and its host with it."""
        if not _branch.get():
            return self.host.journal(entries, extra)
        return self._shielded(entries, extra)

    async def _shielded(self, entries: Sequence[ActorEntry], extra: Sequence[StreamAppend]) -> None:
        with anyio.CancelScope(shield=True):
            await self.host.journal(entries, extra)

    async def _until_suspended(self, waiter: Callable[[], Awaitable[Any]]) -> Any:
        """Await ``waiter()`` unless the turn is checkpointed (raise Suspended) or
        cancelled (raise TurnCancelled) first."""
        outcome: list[Any] = []
        async with anyio.create_task_group() as group:

            async def wait() -> None:
                # A read failing under the turn aborts it: `_live` below raises why.
                with contextlib.suppress(JournalFailure):
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
        self._live(_branch.get())
        raise Suspended()  # not reached: _live raised

    async def _wait(self, state: str, waiter: Callable[[], Awaitable[Any]]) -> Any:
        self.host.waiting_on = state
        try:
            return await self._until_suspended(waiter)
        finally:
            self.host.waiting_on = None

    # -- steps ----------------------------------------------------------------------------

    def _identify(
        self, fn: Callable[..., Any], args: tuple[Any, ...], options: StepOptions
    ) -> tuple[str, int, Any, Shape]:
        """A step's name, the fingerprint of its inputs (by the turn's rules), the type its
        result decodes as, and its function's shape."""
        how = shape(fn)
        kind = options.result_type if options.result_type is not None else how.result_type
        if self.rules < 2:
            legacy = getattr(fn, "__name__", None) or type(fn).__name__
            return options.name or legacy, legacy_fingerprint(args), kind, how
        inputs: Any = [how.bound, list(args)] if how.bound else args
        return options.name or how.name, fingerprint(inputs), kind, how

    async def run(self, fn: Callable[..., Any], args: tuple[Any, ...], options: StepOptions) -> Any:
        """Run a step once (or hand back its journaled outcome)."""
        branch, step = self._next("ctx.run")
        name, fp, kind, how = self._identify(fn, args, options)
        check_result_type(name, kind)  # before the call: a paid result is never lost
        if _budget_gate.gated(self, options):
            await _budget_gate.gate(self, branch, step, name, options)
        rec = self._take(step, name, "run", fp)
        if rec is not None and rec.outcome is not None:
            return self._replayed(branch, step, name, rec.outcome, options, kind)
        if rec is not None and self._is_lost(branch):
            raise _Lost()  # a lost branch whose step never ended: it was cancelled here
        self._live(branch)
        key = self.key_for(step)
        _tracing.step_began(step, name)  # a live step (replayed ones are not traced)
        if rec is not None and rec.in_flight:  # it was running when the process stopped
            attempt = rec.started.attempt if rec.started is not None else 1
            if options.reconcile is not None:
                answer = options.reconcile(key)
                if inspect.isawaitable(answer):
                    answer = await answer
                if answer is not None:
                    return await self._completed(
                        branch, step, name, options, fp, answer.result, kind, attempt
                    )
            elif options.at_most_once:
                unknown = StepOutcomeUnknown(name, key)
                raise await self._failed(branch, step, name, "run", fp, unknown, attempt)
        policy = options.retry or self.host.retry
        starts = options.reconcile is not None or options.at_most_once
        threads = self.host.step_threads
        failed: Exception | None = None
        if rec is None and not starts:  # a first attempt with nothing to journal before it
            try:
                value = await call_step(fn, args, key, threads, how)
            except Exception as exc:
                failed = exc
            else:
                return await self._completed(branch, step, name, options, fp, value, kind, 1)
        ok, value, attempt = await self._attempts(
            branch,
            step,
            name,
            "run",
            fp,
            policy,
            rec,
            starts,
            lambda: call_step(fn, args, key, threads, how),
            failed,
        )
        if not ok:
            raise await self._failed(branch, step, name, "run", fp, value, attempt) from value
        return await self._completed(branch, step, name, options, fp, value, kind, attempt)

    async def _attempts(
        self,
        branch: str,
        step: str,
        name: str,
        kind: str,
        fp: int,
        policy: Retry,
        rec: Recorded | None,
        journal_starts: bool,
        call: Callable[[], Awaitable[Any]],
        failed: Exception | None = None,
    ) -> tuple[bool, Any, int]:
        """Call the step until an attempt succeeds or the policy gives up; return
        (succeeded, result or final exception, attempt number). ``failed``: the first
        attempt was already made, and raised this.

        Every failed attempt that will be retried is journaled with the time of the next
        one, so a restart resumes the count and the backoff where they were.
        """
        ended = rec.attempts if rec is not None else 0
        retry_at = rec.retrying.retry_at if rec is not None and rec.retrying else None
        while True:
            attempt = ended + 1
            if failed is None:
                if retry_at is not None:
                    await self._backoff(retry_at)
                    self._live(branch)
                if journal_starts:
                    at = self.host.clock.now()
                    await self._write([StepStarted(self.turn, step, name, kind, fp, at, attempt)])
                try:
                    return True, await call(), attempt
                except Exception as raised:
                    failed = raised
            error, failed = failed, None
            if isinstance(error, ContextMisuseError) or not policy.retries(error, attempt):
                return False, error, attempt
            draw = int.from_bytes(derive(self.key_for(step), str(attempt), size=4), "big")
            now = self.host.clock.now()
            retry_at = now + policy.delay(attempt, draw / 2**32)
            entry = StepRetrying(
                self.turn, step, name, kind, attempt, error_info(error), retry_at, fp, now
            )
            await self._write([entry])
            ended = attempt

    async def _backoff(self, retry_at: float) -> None:
        if self.host.clock.now() < retry_at:
            await self._wait("retry", lambda: self.host.clock.sleep_until(retry_at))

    def _replayed(
        self,
        branch: str,
        step: str,
        name: str,
        outcome: StepCompleted | StepFailed,
        options: StepOptions,
        kind: Any,
    ) -> Any:
        self._advance(branch, outcome.at)
        if isinstance(outcome, StepFailed):
            raise rebuild_error(name, outcome.error)
        try:
            value = decoder_for(kind).decode(outcome.value)
        except msgspec.ValidationError as exc:
            raise InvalidResultError(
                f"actor {self.actor_id}: the journaled result of step {name!r} "
                f"(step id {step}) no longer decodes as {kind!r}: {exc}"
            ) from None
        self._register(step, name, options, value)
        return value

    async def _completed(
        self,
        branch: str,
        step: str,
        name: str,
        options: StepOptions,
        fp: int,
        value: Any,
        kind: Any,
        attempts: int,
    ) -> Any:
        try:
            data, decoded = encode_result(name, value, kind)
        except InvalidResultError as exc:
            raise await self._failed(branch, step, name, "run", fp, exc, attempts) from None
        at = self.host.clock.now()
        entry = StepCompleted(self.turn, step, name, "run", msgspec.Raw(data), fp, 0, attempts, at)
        size = self._oversize(entry, len(data) + len(step) + len(name))
        if size:
            too_large = StepResultTooLarge(name, size, self.host.record_limit)
            raise await self._failed(branch, step, name, "run", fp, too_large, attempts)
        where = (branch, step, name, fp, attempts)
        settle = await _budget_gate.settlement(self, where, options, decoded) if self.holds else ()
        await self._write([entry], settle)
        self._advance(branch, at)
        self._register(step, name, options, decoded)
        return decoded

    def _oversize(self, entry: StepCompleted, rough: int) -> int:
        """The encoded size of ``entry`` if it is over the journal's record limit, else 0."""
        limit = self.host.record_limit
        if rough + _ENVELOPE <= limit:
            return 0
        size = len(encode(entry))
        return size if size > limit else 0

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
        entry = StepFailed(self.turn, step, name, kind, info, fp, attempts, at)
        await self._write([entry], _budget_gate.release(self, step))
        self._advance(branch, at)
        return rebuild_error(name, info)

    def _register(self, step: str, name: str, options: StepOptions, value: Any) -> None:
        if options.compensate is not None:
            policy = options.retry or self.host.retry
            self._compensations.append(
                (_step_order(step), step, name, options.compensate, value, policy)
            )
        if options.irreversible and self.point_of_no_return is None:
            self.point_of_no_return = name

    # -- timers and events ----------------------------------------------------------------

    async def sleep(self, seconds: float, name: str) -> None:
        """A durable timer ``seconds`` from now."""
        await self._timer(name, lambda: self.host.clock.now() + seconds)

    async def sleep_until(self, deadline: float, name: str) -> None:
        """A durable timer until ``deadline``."""
        await self._timer(name, lambda: deadline)

    async def _timer(self, name: str, deadline: Callable[[], float]) -> None:
        branch, step = self._next("ctx.sleep")
        rec = self._take(step, name, "sleep")
        if rec is not None and rec.timer is not None:
            self._stop_replay_here(branch)
            fire_at = rec.timer.fire_at
        else:
            self._live(branch)
            fire_at = deadline()
            at = self.host.clock.now()
            await self._write([TimerStarted(self.turn, step, name, fire_at, "sleep", at)])
        if self.host.clock.now() < fire_at:
            await self._wait("timer", lambda: self.host.clock.sleep_until(fire_at))
        self._advance(branch, fire_at)

    async def wait_for(self, name: str, timeout: float | None, kind: Any) -> Any:
        """Wait durably for the next event called ``name``."""
        branch, step = self._next("ctx.wait_for")
        kind = self._event_type(name, kind)
        payload = await self._event_step(branch, step, name, timeout)
        try:
            return decoder_for(kind).decode(payload)
        except msgspec.ValidationError as exc:
            raise InvalidResultError(f"event {name!r} does not decode as {kind!r}: {exc}") from None

    def _event_type(self, name: str, kind: Any) -> Any:
        declared = self.host.events
        if declared is None:
            return Any if kind is DECLARED else kind
        info = declared.get(name)
        if info is None:
            known = ", ".join(sorted(declared)) or "none"
            raise ActorflowError(
                f"actor {self.actor_id} waits for event {name!r}, which its class does not "
                f"declare (it declares: {known}); add it to the class's events= so that "
                f"deliveries of it are accepted and checked"
            )
        return info.type if kind is DECLARED else kind

    async def _event_step(self, branch: str, step: str, name: str, timeout: float | None) -> bytes:
        rec = self._take(step, name, "event")
        if rec is not None and rec.outcome is not None:
            self._advance(branch, rec.outcome.at)
            if isinstance(rec.outcome, StepFailed):
                raise rebuild_error(name, rec.outcome.error)
            self.host.consumed_event(rec.outcome.ref)
            return bytes(rec.outcome.value)
        deadline: float | None = None
        if rec is not None:
            self._stop_replay_here(branch)
        if rec is not None and rec.timer is not None:
            deadline = rec.timer.fire_at
        elif timeout is not None:
            self._live(branch)
            deadline = self.host.clock.now() + timeout
            at = self.host.clock.now()
            await self._write([TimerStarted(self.turn, step, name, deadline, "event", at)])
        while True:
            self._live(branch)
            found = self.host.take_event(name)
            if found is not None:
                position, event = found
                at = self.host.clock.now()
                value = msgspec.Raw(bytes(event.payload))
                entry = StepCompleted(self.turn, step, name, "event", value, 0, position, 1, at)
                await self._write([entry])
                self._advance(branch, at)
                return bytes(event.payload)
            if deadline is not None and self.host.clock.now() >= deadline:
                raise await self._failed(
                    branch, step, name, "event", 0, TimeoutError(f"no event {name!r}"), 1
                )
            await self._wait("event", lambda: self._arrival_or(deadline))

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
        budget: Budget | None = None,
    ) -> Any:
        """Message another actor exactly once; for a call, await its reply durably."""
        branch, step = self._next("ctx.send/ctx.call")
        name = f"{target.id}.{handler}"
        fp = fingerprint([name, list(args), kwargs]) if self.rules >= 2 else 0
        rec = _budget_gate.take_send(self, step, name, fp, budget)
        if rec is not None and isinstance(rec.outcome, StepCompleted):
            invocation: str = msgspec.msgpack.decode(rec.outcome.value, type=str)
            self._advance(branch, rec.outcome.at)
        else:
            self._live(branch)
            invocation = f"{target.id}#{derive(self.key_for(step), size=12).hex()}"
            reply_to = ReplyTo(self.actor_id, _REPLY_PREFIX + invocation) if call else None
            grant = await _budget_gate.for_message(self, branch, step, name, invocation, budget)
            accept = self.host.prepare_send(
                target, handler, args, kwargs, invocation, reply_to, grant
            )
            at = self.host.clock.now()
            value = msgspec.Raw(encode(invocation))
            entry = StepCompleted(self.turn, step, name, "send", value, fp, 0, 1, at)
            await self._write([entry], [accept])  # the host wakes the receiver
            self._advance(branch, at)
        if not call:
            return invocation
        _, reply_step = self._next("ctx.call")
        data = await self._event_step(branch, reply_step, _REPLY_PREFIX + invocation, None)
        reply = msgspec.msgpack.decode(data, type=Reply)
        if not reply.ok:
            assert reply.error is not None
            raise HandlerFailed(invocation, reply.error.type, reply.error.message)
        return decoder_for(self.host.result_type(target, handler)).decode(reply.result)

    # -- versioning -----------------------------------------------------------------------

    async def patched(self, patch_id: str, *, deprecated: bool = False) -> bool:
        """True on runs that reach this point live or journaled the marker before. With
        ``deprecated`` (`Context.deprecate_patch`) there is no old path: a run journaled
        before the patch diverges here."""
        operation = "ctx.deprecate_patch()" if deprecated else "ctx.patched()"
        refuse_inside_step(self.actor_id, operation)
        self._check_going()
        branch = _branch.get()
        step = f"{branch}.p:{patch_id}" if branch else f"p:{patch_id}"
        if self.recorded.has(step):
            self._take(step, patch_id, "patch")
            return True
        nxt = self._counters.get(branch, 0) + 1
        if self.recorded.end is not None or self.recorded.has_beyond(branch, nxt):
            if not deprecated:
                return False  # journaled before the patch: keep to the old path
            self.diverged = NonDeterminismError(
                self.actor_id,
                self.recorded.position_beyond(branch, nxt),
                f"a turn started before patch {patch_id!r} (on its old path)",
                f"ctx.deprecate_patch({patch_id!r}), which has no old path: keep "
                f"ctx.patched({patch_id!r}) deployed until every turn started before the "
                f"patch has finished",
            )
            self.abort()
            raise self.diverged
        self._live(branch)
        at = self.host.clock.now()
        value = msgspec.Raw(encode(True))
        await self._write([StepCompleted(self.turn, step, patch_id, "patch", value, at=at)])
        return True

    async def continue_as_new(
        self, handler: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> NoReturn:
        """End the segment (`Context.continue_as_new`): the host journals it and starts
        the next; refused where the next segment could not pick up what this one did."""
        operation = "ctx.continue_as_new()"
        refuse_inside_step(self.actor_id, operation)
        self._check_going()
        why = None
        if _branch.get():
            why = "inside a ctx.gather or ctx.first branch; call it from the handler itself"
        elif self.compensating:
            why = "while the turn is compensating"
        elif self.can_compensate:
            why = (
                "with compensations registered in this segment and not run: they would be "
                "lost with it; run ctx.compensate() first, or continue before the saga"
            )
        if why is not None:
            raise ContextMisuseError(f"actor {self.actor_id}: {operation} {why}")
        encoded = self.host.continuation_args(handler, args, kwargs)
        if self.deadline is not None and self.host.clock.now() >= self.deadline:
            self.cancel("deadline exceeded")
        if self.cancel_reason is not None and self.cancellable:
            raise TurnCancelled(self.cancel_reason)
        raise ContinuedAsNew(handler, encoded)

    # -- concurrency ----------------------------------------------------------------------

    async def gather(self, awaitables: tuple[Awaitable[Any], ...], first: bool) -> Any:
        """Run awaitables as branches; see `Context.gather` and `actorflow.replay._branches`."""
        return await _branches.gather(self, awaitables, first)

    # -- compensation ---------------------------------------------------------------------

    async def compensate(self) -> list[str]:
        """Undo completed steps that registered compensations, newest first, exactly once
        each; raise `CompensationFailed` (after running all of them) if any failed."""
        refuse_inside_step(self.actor_id, "ctx.compensate()")
        self._check_going()
        undone, failed = await self.compensate_all()
        if failed:
            raise CompensationFailed(undone, failed)
        return undone

    async def compensate_all(self) -> tuple[list[str], list[str]]:
        """Run every pending compensation, newest first; a failed one (after its retries)
        does not stop the others. Return (undone, failed) for this call."""
        if self.point_of_no_return is not None:
            raise ActorflowError(
                f"actor {self.actor_id}: turn {self.turn} passed its point of no return "
                f"(irreversible step {self.point_of_no_return!r}); it can no longer be "
                f"compensated. Put irreversible steps last in a saga."
            )
        undone: list[str] = []
        failed: list[str] = []
        for _, step, name, undo, value, policy in sorted(self._compensations, reverse=True):
            if step in self._compensated:
                continue
            self._compensated.add(step)
            error = await self._undo(step, name, undo, value, policy)
            if error is None:
                undone.append(name)
            else:
                failed.append(f"{name}: {error.type}: {error.message}")
        self.undone.extend(undone)
        self.undo_failed.extend(failed)
        return undone, failed

    async def _undo(
        self, step: str, name: str, undo: Callable[[Any], Any], value: Any, policy: Retry
    ) -> ErrorInfo | None:
        """Run one compensation (or replay it); its final error, or None when it worked."""
        undo_step = f"{step}~undo"
        rec = self._take(undo_step, name, "undo")
        if rec is not None and rec.outcome is not None:
            return rec.outcome.error if isinstance(rec.outcome, StepFailed) else None
        self._live(_branch.get())
        key = self.key_for(undo_step)
        ok, outcome, attempt = await self._attempts(
            "",
            undo_step,
            name,
            "undo",
            0,
            policy,
            rec,
            False,
            lambda: call_step(undo, (value,), key, self.host.step_threads),
        )
        at = self.host.clock.now()
        if ok:
            none = msgspec.Raw(_NONE)
            await self._write([StepCompleted(self.turn, undo_step, name, "undo", none, at=at)])
            return None
        info = error_info(outcome)
        await self._write([StepFailed(self.turn, undo_step, name, "undo", info, 0, attempt, at)])
        return info

    @property
    def can_compensate(self) -> bool:
        """Whether completed steps registered compensations not yet run, and the turn has
        not passed its point of no return."""
        return self.point_of_no_return is None and any(
            step not in self._compensated for _, step, *_ in self._compensations
        )


__all__ = ["RULES", "Turn"]
