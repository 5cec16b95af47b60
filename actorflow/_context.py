"""`Context`: inside a handler, the only door to anything non-deterministic.

The context is a thin, documented surface over a `TurnOps` protocol defined here. The
replay engine implements the protocol for the running turn; this module never imports it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import typing
import uuid as uuid_module
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, Protocol, TypeVar, cast, overload

from actorflow._budget import Budget, Spend
from actorflow._errors import ActorflowError, TurnEndedError

if TYPE_CHECKING:
    from actorflow._actor import Actor
    from actorflow._stream import ChunkSink

R = TypeVar("R")

#: The idempotency key of the step whose function is running (see `Context.idempotency_key`).
current_step_key: contextvars.ContextVar[str] = contextvars.ContextVar("actorflow_step_key")


@dataclasses.dataclass(frozen=True)
class Retry:
    """How a step (or a compensation) is retried before its error is journaled.

    ``attempts`` counts the first try (``Retry(attempts=1)``: no retries). Delays grow
    from ``initial`` seconds by ``factor`` up to ``maximum``, each stretched by up to
    ``jitter`` (a fraction) drawn deterministically from the step's idempotency key.
    An exception is retried when it is an instance of ``retry_on`` and not of
    ``non_retryable``. Each failed attempt that will be retried is journaled with the
    time of the next one, so a restart during the backoff resumes the count and the wait.

    The default (``Retry()``) is used wherever no policy is given: five attempts over
    about 15 seconds, enough to ride out a short LLM or network outage.
    """

    attempts: int = 5
    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 60.0
    jitter: float = 0.2
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"Retry(attempts={self.attempts!r}) must allow at least one attempt")
        if self.initial < 0 or self.factor < 1 or self.maximum < 0 or not 0 <= self.jitter <= 1:
            raise ValueError(f"{self!r}: delays must be >= 0, factor >= 1, 0 <= jitter <= 1")

    def delay(self, attempt: int, draw: float) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.maximum, self.initial * self.factor ** (attempt - 1))
        return base * (1 + self.jitter * draw)

    def retries(self, exc: BaseException, attempt: int) -> bool:
        """Whether failed attempt number ``attempt`` with ``exc`` is followed by another."""
        return (
            attempt < self.attempts
            and isinstance(exc, self.retry_on)
            and not isinstance(exc, self.non_retryable)
        )


#: The policy used where neither the step, its actor type nor the runtime gives one.
DEFAULT_RETRY = Retry()
#: No retries: the first error is the step's outcome.
NO_RETRY = Retry(attempts=1)


@dataclasses.dataclass(frozen=True)
class Happened:
    """A reconcile probe's answer: the step's effect did happen, with this result."""

    result: Any = None


#: What a reconcile probe returns: `Happened(result)`, or None when the effect did not happen.
ReconcileProbe = Callable[[str], "Happened | Awaitable[Happened | None] | None"]


class StepOptions(NamedTuple):
    """Everything `Context.run` was asked besides the function and its arguments
    (``name`` None: the name of the function the step calls). A tuple: one is made per
    step."""

    name: str | None
    retry: Retry | None = None
    compensate: Callable[..., Any] | None = None
    irreversible: bool = False
    reconcile: ReconcileProbe | None = None
    at_most_once: bool = False
    result_type: Any = None
    #: What the step is estimated to consume, reserved from the budget before it runs.
    reserve: Spend | None = None
    #: What the step consumed, from its result (settled with it).
    spend: Callable[[Any], Spend] | None = None


#: `Context.wait_for`'s default type: the one the actor class declares for the event.
DECLARED: Any = object()


class TurnOps(Protocol):
    """What the running turn provides to its `Context` (implemented by the replay engine)."""

    actor_id: str
    key: str
    invocation: str
    turn: int
    #: Where streaming steps send their chunks (None: nowhere, `Context.stream` refuses).
    chunks: ChunkSink | None

    async def run(self, fn: Callable[..., Any], args: tuple[Any, ...], options: StepOptions) -> Any:
        """Run a step once (or hand back its journaled outcome)."""
        ...

    def now(self) -> float:
        """The turn's logical time."""
        ...

    def entropy(self) -> bytes:
        """16 deterministic random bytes, new at each call."""
        ...

    async def sleep(self, seconds: float, name: str) -> None:
        """A durable timer ``seconds`` from now."""
        ...

    async def sleep_until(self, deadline: float, name: str) -> None:
        """A durable timer until ``deadline``."""
        ...

    async def wait_for(self, name: str, timeout: float | None, kind: Any) -> Any:
        """Wait durably for a named event."""
        ...

    async def send(
        self,
        target: ActorRef,
        handler: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        call: bool,
        budget: Budget | None = None,
    ) -> Any:
        """Message another actor exactly once (and, for a call, await its reply);
        ``budget``: a sub-budget carved out of this turn's for the message's invocation."""
        ...

    async def patched(self, patch_id: str, *, deprecated: bool = False) -> bool:
        """Whether this run takes the new branch of a versioning patch (``deprecated``:
        it has no old branch any more)."""
        ...

    async def gather(self, awaitables: tuple[Awaitable[Any], ...], first: bool) -> Any:
        """Run awaitables as concurrent branches with deterministic step ids."""
        ...

    async def compensate(self) -> list[str]:
        """Run the turn's registered compensations in reverse order."""
        ...

    async def continue_as_new(
        self, handler: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> NoReturn:
        """End the turn's segment; the invocation goes on in a fresh one."""
        ...


@dataclasses.dataclass(frozen=True)
class ActorRef:
    """The address of an actor: its type name and key (``Researcher/job-42``)."""

    type_name: str
    key: str

    @property
    def id(self) -> str:
        """``Type/key``."""
        return f"{self.type_name}/{self.key}"

    def __str__(self) -> str:
        return self.id


def _returns(fn: Callable[..., Any]) -> Any:
    try:
        return typing.get_type_hints(fn).get("return", Any)
    except Exception:
        return Any


def handler_name(handler: str | Callable[..., Any]) -> str:
    """A handler given by name or as the method itself (``Researcher.research``)."""
    if isinstance(handler, str):
        return handler
    name = getattr(handler, "__name__", None)
    if not isinstance(name, str):
        raise TypeError(f"handler must be a handler method or its name, got {handler!r}")
    return name


def type_name_of(actor: str | type[Actor]) -> str:
    """An actor type given by name or as the class."""
    if isinstance(actor, str):
        return actor
    name = getattr(actor, "__actorflow_name__", None)
    if not isinstance(name, str):
        raise TypeError(f"{actor!r} is not an actorflow.Actor subclass or type name")
    return name


def _carve(kwargs: dict[str, Any]) -> Budget | None:
    """Take a carved sub-budget (``budget=`` an `actorflow.Budget`) out of a message's
    keyword arguments."""
    if isinstance(kwargs.get("budget"), Budget):
        carved: Budget = kwargs.pop("budget")
        return carved
    return None


def _check_consumption(reserve: Any, spend: Any) -> None:
    if reserve is not None and not isinstance(reserve, Spend):
        raise TypeError(f"reserve= takes an actorflow.Spend, got {reserve!r}")
    if spend is not None and not callable(spend):
        raise TypeError(f"spend= takes a function of the step's result, got {spend!r}")


class _EndedTurn:
    """The operations of a context whose turn has ended: each use is an error."""

    def __init__(self, actor_id: str, turn: int) -> None:
        self._ended = (actor_id, turn)  # every public name still reaches __getattr__

    def __getattr__(self, name: str) -> Any:
        actor_id, turn = self._ended
        raise TurnEndedError(
            f"this ctx belongs to turn {turn} of {actor_id}, which has ended; a "
            f"handler's self.ctx works only while its turn runs (not in tasks that outlive it)"
        )


class Context:
    """The running turn's door to time, randomness, side effects, timers, events and
    other actors. Everything it returns is journaled (or derived from the journal), so a
    replay after a crash or deploy sees exactly what the first run saw.
    """

    def __init__(self, ops: TurnOps) -> None:
        self._ops = ops

    def close(self) -> None:
        """End this context with its turn (the runtime does, as the turn ends): it lets go
        of the turn, so that the turn and everything it held are freed at once rather than
        by the garbage collector some time later, and any later use raises
        `TurnEndedError`."""
        self._ops = cast(TurnOps, _EndedTurn(self._ops.actor_id, self._ops.turn))

    @property
    def actor_id(self) -> str:
        """This actor's id, ``Type/key``."""
        return self._ops.actor_id

    @property
    def key(self) -> str:
        """This actor's key."""
        return self._ops.key

    @property
    def invocation(self) -> str:
        """The id of the invocation this turn is processing."""
        return self._ops.invocation

    @property
    def turn(self) -> int:
        """This turn's number in the actor's life (1 for its first message)."""
        return self._ops.turn

    @overload
    async def run(
        self,
        fn: Callable[..., Awaitable[R]],
        *args: Any,
        name: str | None = None,
        retry: Retry | None = None,
        compensate: Callable[..., Any] | None = None,
        irreversible: bool = False,
        reconcile: ReconcileProbe | None = None,
        at_most_once: bool = False,
        result_type: Any = None,
        reserve: Spend | None = None,
        spend: Callable[[Any], Spend] | None = None,
    ) -> R: ...

    @overload
    async def run(
        self,
        fn: Callable[..., R],
        *args: Any,
        name: str | None = None,
        retry: Retry | None = None,
        compensate: Callable[..., Any] | None = None,
        irreversible: bool = False,
        reconcile: ReconcileProbe | None = None,
        at_most_once: bool = False,
        result_type: Any = None,
        reserve: Spend | None = None,
        spend: Callable[[Any], Spend] | None = None,
    ) -> R: ...

    async def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        name: str | None = None,
        retry: Retry | None = None,
        compensate: Callable[..., Any] | None = None,
        irreversible: bool = False,
        reconcile: ReconcileProbe | None = None,
        at_most_once: bool = False,
        result_type: Any = None,
        reserve: Spend | None = None,
        spend: Callable[[Any], Spend] | None = None,
    ) -> Any:
        """Run a side effect once: journal its result (or error), and on replay hand that
        back without calling ``fn`` again.

        ``fn`` is called with ``args`` (bind keyword arguments with `functools.partial`):
        an ``async def`` function runs on the event loop, anything else in a worker
        thread, so a blocking call never stalls other agents. If it accepts a keyword
        argument ``idempotency_key`` it receives the step's key. Its result is journaled
        and decoded as ``result_type`` (default: the function's return annotation), which
        may be any msgspec type, a pydantic model or a dataclass (see "Values" in
        docs/actors.md); a type the journal cannot keep is refused before ``fn`` is
        called. ``name`` defaults to the name of the function called (through partials
        and bound methods). ``retry`` overrides the actor type's and runtime's policy.
        ``compensate`` is called with the result to undo the step if the turn later fails
        or is cancelled; ``irreversible`` marks the turn's point of no return.
        ``reconcile`` (a probe called with the idempotency key) or ``at_most_once`` decide
        what happens to this step if it was in flight at a crash.

        ``reserve`` (an `actorflow.Spend`) and ``spend`` (a function of the result that
        returns one) say what the step consumes of its invocation's budget: the
        reservation is made (or refused with `BudgetExceeded`) before ``fn`` is called,
        and the step settles with its result. Without a budget they are ignored. See
        docs/budgets.md.

        The function must not use ``ctx`` itself (a `ContextMisuseError` is its outcome):
        run further steps from the handler instead.
        """
        if not callable(fn):
            raise TypeError(f"ctx.run needs a function to call, got {fn!r}")
        if reconcile is not None and at_most_once:
            raise ValueError("a step takes reconcile= or at_most_once=True, not both")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry= takes an actorflow.Retry, got {retry!r}")
        _check_consumption(reserve, spend)
        options = StepOptions(
            name or None,
            retry,
            compensate,
            irreversible,
            reconcile,
            at_most_once,
            result_type,
            reserve,
            spend,
        )
        return await self._ops.run(fn, args, options)

    async def stream(
        self,
        fn: Callable[..., Any],
        *args: Any,
        name: str | None = None,
        collect: Callable[[list[Any]], Any] | None = None,
        retry: Retry | None = None,
        result_type: Any = None,
        reserve: Spend | None = None,
        spend: Callable[[Any], Spend] | None = None,
    ) -> Any:
        """Run a step that streams: subscribers of this invocation's stream (HTTP
        server-sent events, `Client.stream`, ``actorflow watch``) get each chunk as it is
        produced; the step's journaled result is the complete value. See docs/streams.md.

        ``fn(*args)`` is an async generator, or returns an async iterable (an OpenAI or
        Anthropic SDK stream), of chunks: ``str`` tokens, pydantic models (sent as their
        ``model_dump(mode="json")``) or anything msgspec encodes. The complete value is
        ``collect(chunks)`` (the chunks as produced), by default the chunks joined when
        they are all ``str``, else the list of their JSON forms; it is decoded as
        ``result_type`` (default: ``collect``'s return annotation, else ``Any``).

        In every other respect it is a `run` step: an idempotency key (passed to ``fn``
        if it accepts ``idempotency_key``), ``retry`` as for `run`, and replay hands back
        the journaled value without calling ``fn``. Each attempt streams anew: when a
        failed or interrupted attempt is followed by another, subscribers are told that
        the earlier attempt's chunks are superseded before the new ones arrive.
        ``reserve`` and ``spend`` (of the complete value) are as for `run`.
        """
        from actorflow._stream import StreamSpec, function_name, stream_attempt

        if not callable(fn):
            raise TypeError(f"ctx.stream needs a function to call, got {fn!r}")
        if collect is not None and not callable(collect):
            raise TypeError(f"collect= takes a function of the list of chunks, got {collect!r}")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry= takes an actorflow.Retry, got {retry!r}")
        step = name or function_name(fn)
        if result_type is None:
            result_type = Any if collect is None else _returns(collect)
        spec = StreamSpec(fn, collect, step, self._ops.invocation, self._ops.chunks)
        _check_consumption(reserve, spend)
        options = StepOptions(step, retry, result_type=result_type, reserve=reserve, spend=spend)
        return await self._ops.run(functools.partial(stream_attempt, spec), args, options)

    @property
    def idempotency_key(self) -> str:
        """The running step's idempotency key: the same on every re-execution of that step.

        Pass it to APIs that deduplicate (payment providers, the examples' ledgers) so
        the step's effect happens exactly once however often the step runs.
        """
        try:
            return current_step_key.get()
        except LookupError:
            raise ActorflowError(
                "ctx.idempotency_key is only defined while a step's function runs "
                "(inside the function given to ctx.run)"
            ) from None

    def now(self) -> float:
        """The turn's time (seconds since the epoch): when its latest step completed, or
        when it started. Deterministic: replay sees the same value."""
        return self._ops.now()

    def random(self) -> float:
        """A random float in [0, 1), the same on replay."""
        return int.from_bytes(self._ops.entropy()[:7], "big") / float(1 << 56)

    def uuid(self) -> uuid_module.UUID:
        """A random UUID (version 4 layout), the same on replay."""
        return uuid_module.UUID(bytes=self._ops.entropy(), version=4)

    async def sleep(self, seconds: float, *, name: str = "sleep") -> None:
        """A durable timer: after a restart only the remaining time is waited, and a timer
        that expired while the process was down fires at once."""
        if not seconds >= 0:
            raise ValueError(f"ctx.sleep takes seconds >= 0, got {seconds!r}")
        await self._ops.sleep(float(seconds), name)

    async def sleep_until(self, deadline: float, *, name: str = "sleep") -> None:
        """A durable timer until ``deadline`` (seconds since the epoch)."""
        await self._ops.sleep_until(float(deadline), name)

    async def wait_for(
        self, name: str, *, timeout: float | None = None, type: Any = DECLARED
    ) -> Any:
        """Wait durably for the next outside event called ``name`` and return its payload,
        decoded as ``type`` (default: the type the actor class declares for the event in
        ``events=``, else ``Any``). Events delivered before the handler waits are kept, in
        order. With ``timeout`` (seconds, durable), raises `TimeoutError` when it passes.
        """
        if not isinstance(name, str) or not name or name.startswith("\x00"):
            raise ValueError(f"event names are non-empty strings, got {name!r}")
        return await self._ops.wait_for(name, timeout, type)

    def ref(self, actor: str | type[Actor], key: str) -> ActorRef:
        """The address of another actor."""
        return ActorRef(type_name_of(actor), key)

    async def send(
        self, target: ActorRef, handler: str | Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> str:
        """Send a message to another actor's handler, exactly once; return the invocation id
        without waiting for it to run. ``budget=`` (an `actorflow.Budget`, not passed on
        to the handler) is as for `call`."""
        budget = _carve(kwargs)
        name = handler_name(handler)
        invocation: str = await self._ops.send(target, name, args, kwargs, False, budget)
        return invocation

    async def call(
        self, target: ActorRef, handler: str | Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Any:
        """Send a message to another actor's handler exactly once and wait durably for its
        result (its error is raised as `HandlerFailed`).

        The called invocation spends from this one's budget, if it has one. With
        ``budget=`` (an `actorflow.Budget`, not passed on to the handler), it spends
        from a sub-budget of its own instead, carved out of this one's: reserved here in
        full (`BudgetExceeded` if it does not fit), and settled with what it spent when
        it ends. See docs/budgets.md."""
        budget = _carve(kwargs)
        return await self._ops.send(target, handler_name(handler), args, kwargs, True, budget)

    async def patched(self, patch_id: str) -> bool:
        """Versioning: True when this run may take the new code path marked ``patch_id``.

        Runs journaled before the patch was deployed replay with False (the old path);
        runs reaching this point live get True, and the marker is journaled.
        """
        return await self._ops.patched(patch_id)

    async def deprecate_patch(self, patch_id: str) -> None:
        """Versioning: the old path of ``patch_id`` is gone; only the new one remains.

        Replaces ``if await ctx.patched(patch_id): new else: old`` with ``new`` once no
        turn that started before the patch is unfinished. Runs that journaled the marker
        replay through it; runs reaching it live journal it still (so that code with the
        ``patched`` branch, redeployed, takes the new path); a run journaled before the
        patch stops here as non-deterministic. See docs/versioning.md.
        """
        await self._ops.patched(patch_id, deprecated=True)

    async def gather(self, *awaitables: Awaitable[Any]) -> list[Any]:
        """Run ``ctx`` operations concurrently; return their results in argument order.

        Every branch runs to its end; then the first error, by argument order, is raised.
        Steps started by plain task groups are refused: their order is not deterministic.
        """
        result: list[Any] = await self._ops.gather(awaitables, False)
        return result

    async def first(self, *awaitables: Awaitable[Any]) -> tuple[int, Any]:
        """Race ``ctx`` operations; return ``(index, result)`` of the first to finish.

        Which one won is journaled, so replay takes the same branch; the others are
        cancelled.
        """
        result: tuple[int, Any] = await self._ops.gather(awaitables, True)
        return result

    async def continue_as_new(
        self, handler: str | Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> NoReturn:
        """End this turn's journal segment and go on in a fresh one: the same invocation
        (its caller still waits for its result) continues in the actor's next turn, which
        calls ``handler`` (one of this actor's, usually the running one) with ``args``.

        The state, the events not consumed yet and the queued messages are carried over;
        the segment's journal is deleted, so a loop of thousands of steps replays at most
        one segment after a crash, and the next segment runs on whatever code is deployed
        when it starts. Never returns. Refused inside a step, inside a ``ctx.gather`` or
        ``ctx.first`` branch, and while steps of the segment registered compensations not
        run yet (they would be lost with it). See "Long loops" in docs/actors.md.
        """
        await self._ops.continue_as_new(handler_name(handler), args, kwargs)

    async def compensate(self) -> list[str]:
        """Undo this turn's completed steps that registered ``compensate=``, newest first;
        each compensation runs exactly once (journaled). Returns the undone step names."""
        return await self._ops.compensate()
