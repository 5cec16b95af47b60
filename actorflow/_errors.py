"""actorflow's error family, and the control-flow signals that user code must not swallow."""

from __future__ import annotations

from typing import Any, ClassVar


class ActorflowError(Exception):
    """Root of every error actorflow raises on purpose."""


class ActorDefinitionError(ActorflowError, TypeError):
    """An actor class is misdefined; raised when the class is created, listing every problem."""


class UnknownActorError(ActorflowError, LookupError):
    """A message names an actor type the runtime does not host."""


class UnknownHandlerError(ActorflowError, LookupError):
    """A message names a handler the actor type does not have."""


class InvalidMessageError(ActorflowError, ValueError):
    """A message's arguments do not match the handler's annotations; nothing was accepted."""


class InvalidResultError(ActorflowError, TypeError):
    """A handler or step returned a value that cannot be journaled as its annotation says."""


class NonDeterminismError(ActorflowError):
    """Replayed code asked for something other than what the journal recorded.

    The actor is marked stuck and resumes once code that matches its journal is deployed.
    """

    def __init__(self, actor: str, position: int, recorded: str, requested: str) -> None:
        self.actor = actor
        self.position = position
        self.recorded = recorded
        self.requested = requested
        super().__init__(
            f"actor {actor}: non-deterministic replay at journal position {position}: the "
            f"journal recorded {recorded}, but the code now does {requested}. The actor is "
            f"stuck until code that matches its journal runs; branch new behaviour with "
            f"ctx.patched(...) instead of changing what old runs do."
        )


class StepFailed(ActorflowError):
    """A step raised an exception that is journaled by type name and message.

    Exceptions whose class derives from `StepError` (or is a built-in exception) are
    re-raised as themselves; any other exception surfaces as `StepFailed` - live and on
    replay alike, so a handler sees the same thing both times.
    """

    def __init__(self, step: str, error_type: str, message: str) -> None:
        self.step = step
        self.error_type = error_type
        self.message = message
        super().__init__(step, error_type, message)

    def __str__(self) -> str:
        return f"step {self.step!r} failed with {self.error_type}: {self.message}"


class StepError(Exception):
    """Base for exceptions that steps raise and handlers catch by type.

    Subclasses are registered by qualified name when defined, and rebuilt from the journal
    (live and on replay alike) from their arguments, which must be msgspec-encodable.
    """

    registry: ClassVar[dict[str, type[StepError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        StepError.registry[f"{cls.__module__}.{cls.__qualname__}"] = cls


class StepOutcomeUnknown(ActorflowError):
    """An at-most-once step was in flight at a crash: whether it happened is unknown."""

    def __init__(self, step: str, idempotency_key: str) -> None:
        self.step = step
        self.idempotency_key = idempotency_key
        super().__init__(step, idempotency_key)  # the args rebuild it from the journal

    def __str__(self) -> str:
        return (
            f"step {self.step!r} (idempotency key {self.idempotency_key!r}) was running "
            f"when the process stopped and is declared at-most-once, so it was not run "
            f"again; check the outside system for that key, or give the step a reconcile= "
            f"probe."
        )


class HandlerFailed(ActorflowError):
    """An invocation's handler raised; this is what its caller receives."""

    def __init__(self, invocation: str, error_type: str, message: str) -> None:
        self.invocation = invocation
        self.error_type = error_type
        self.message = message
        super().__init__(invocation, error_type, message)

    def __str__(self) -> str:
        return f"invocation {self.invocation} failed with {self.error_type}: {self.message}"


class ActorStuckError(ActorflowError):
    """The actor cannot make progress until its code or journal is fixed."""


class StepResultTooLarge(ActorflowError):
    """A step returned more bytes than one journal record may hold.

    Journaled as the step's outcome, so the handler sees the same error live and on
    replay; the step is not retried (its result would be just as large).
    """

    def __init__(self, step: str, size: int, limit: int) -> None:
        self.step = step
        self.size = size
        self.limit = limit
        super().__init__(step, size, limit)

    def __str__(self) -> str:
        return (
            f"step {self.step!r} returned {self.size:,} bytes once encoded, over the "
            f"journal's record limit of {self.limit:,} bytes. Raise the limit "
            f"(SqliteStore.open(..., max_record_bytes=N), or actorflow serve "
            f"--max-record-bytes N), or store the data elsewhere and return a reference."
        )


class ContextMisuseError(ActorflowError):
    """``ctx`` was used where replay cannot follow it: inside a step's function."""


class QueryContextError(ContextMisuseError):
    """A query (`@actorflow.query`) used ``self.ctx``: a query only reads the actor's state
    and cannot take steps, sleep, wait, send or read the clock."""


class UnknownQueryError(UnknownHandlerError):
    """A query names a query method the actor type does not have."""


class NoSuchActorError(UnknownActorError):
    """An actor of a hosted type that has never been sent anything: nothing to read."""


class QueryFailed(ActorflowError):
    """A query method raised; ``error_type`` and ``message`` say what it raised."""

    def __init__(self, actor: str, query: str, error_type: str, message: str) -> None:
        self.actor = actor
        self.query = query
        self.error_type = error_type
        self.message = message
        super().__init__(actor, query, error_type, message)

    def __str__(self) -> str:
        return f"query {self.query} of {self.actor} failed with {self.error_type}: {self.message}"


class HostedElsewhere(ActorflowError):
    """A query for an actor that another worker of the fleet is running a turn of (or that
    is between workers): only the worker hosting it sees the turn's state. ``owner`` names
    that worker (None: none holds it right now)."""

    def __init__(self, actor: str, owner: str | None) -> None:
        self.actor = actor
        self.owner = owner
        super().__init__(actor, owner)

    def __str__(self) -> str:
        where = (
            f"worker {self.owner!r} hosts it and is running one of its turns"
            if self.owner is not None
            else "no worker hosts it right now (it is being taken over)"
        )
        return (
            f"actor {self.actor} cannot be queried here: {where}; only the worker hosting a "
            f"turn sees its state. Retry (a load balancer may send the query to that "
            f"worker), or query once the turn has ended"
        )


class CompensationFailed(ActorflowError):
    """Some compensations still failed after their retries; the others ran.

    ``undone`` names the steps that were undone, ``failed`` the compensations that
    failed (``"name: ErrorType: message"``): those effects need a human.
    """

    def __init__(self, undone: list[str], failed: list[str]) -> None:
        self.undone = undone
        self.failed = failed
        super().__init__(undone, failed)

    def __str__(self) -> str:
        listed = "; ".join(self.failed)
        return (
            f"{len(self.failed)} compensation(s) failed after their retries ({listed}); "
            f"undone: {', '.join(self.undone) or 'nothing'}. The failed undos need a human."
        )


class MessageTooLarge(InvalidMessageError):
    """A message's arguments or an event's payload take more bytes than one journal record
    may hold; nothing was accepted (HTTP 413)."""


class IdempotencyKeyReused(InvalidMessageError):
    """An idempotency key came back with a different request than the one it was first
    used for; nothing was accepted."""


class InboxFull(ActorflowError):
    """The actor's inbox holds as much as it may of this kind of entry; nothing was
    accepted. Retry once it has caught up (HTTP 429 with ``Retry-After``)."""


class TooManyPendingEvents(InboxFull):
    """The actor already holds as many undelivered events as it may; nothing was accepted."""


class TooManyQueuedMessages(InboxFull):
    """The actor already has as many messages waiting for their turns as it may; nothing
    was accepted."""


class InvocationNotRetryable(ActorflowError):
    """An operator asked to retry an invocation that cannot be retried (see the message)."""


class RuntimeClosedError(ActorflowError):
    """The runtime is not running."""


class Suspended(BaseException):
    """Raised inside a handler to stop its turn at a step boundary (shutdown, passivation).

    Derives from BaseException so that handler code catching Exception does not swallow it.
    """


class JournalFailure(BaseException):
    """The journal refused or failed a write (or a read) under a running turn.

    Never a step outcome: the turn stops where it stands (nothing after the failed call
    happened), and the runtime re-activates the actor after a pause, replaying the turn
    from what the journal holds. Derives from BaseException so that handler code catching
    Exception cannot mistake it for a failed step and act on it.
    """

    def __init__(self, actor: str, cause: BaseException) -> None:
        self.actor = actor
        self.cause = cause
        super().__init__(actor, cause)

    def __str__(self) -> str:
        return (
            f"actor {self.actor}: the journal failed ({type(self.cause).__name__}: "
            f"{self.cause}); the turn is suspended and will be replayed"
        )


class TurnCancelled(BaseException):
    """Raised inside a handler to cancel its turn (by request, deadline or shutdown).

    The runtime then runs the turn's compensations and records it as cancelled. Derives
    from BaseException so that handler code catching Exception does not swallow it.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ContinuedAsNew(BaseException):
    """Raised by `Context.continue_as_new` to end the turn's segment: the runtime
    journals the end of this segment and starts the invocation's next one, calling
    ``handler`` with its arguments (``encoded``, MessagePack). Derives from
    BaseException so that handler code catching Exception does not swallow it."""

    def __init__(self, handler: str, encoded: bytes) -> None:
        super().__init__(handler)
        self.handler = handler
        self.encoded = encoded


#: Exceptions of actorflow's own that a journaled step outcome can hold, rebuilt as
#: themselves (live and on replay alike) from their arguments.
JOURNALED_ERRORS: dict[str, type[Exception]] = {
    f"{cls.__module__}.{cls.__qualname__}": cls
    for cls in (
        StepOutcomeUnknown,
        InvalidResultError,
        HandlerFailed,
        StepFailed,
        StepResultTooLarge,
        ContextMisuseError,
        CompensationFailed,
    )
}


class TurnEndedError(ActorflowError, RuntimeError):
    """A `Context` was used after its turn ended (kept by a background task, say): each
    turn has its own ``self.ctx``, usable only while the turn runs."""
