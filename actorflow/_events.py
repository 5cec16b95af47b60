"""The actor's journal entries: what replay needs, as tagged msgspec records.

Two streams per actor, both plain journal streams:

- ``actor/<Type>/<key>``: written only by the actor's owner (expected position + epoch):
  turns started and ended, each step's outcome, timers, compensations.
- ``inbox/<Type>/<key>``: written by anyone (clients, other actors): messages accepted,
  events delivered, replies to the actor's calls.

Tags never change meaning; new fields get defaults (msgspec's schema-evolution rules).
Values are kept as MessagePack (`msgspec.Raw`) and decoded with the type the code expects.
"""

from __future__ import annotations

import msgspec

from journal import Codec


class ErrorInfo(msgspec.Struct, frozen=True):
    """An exception as journaled: its qualified type name, message and arguments
    (MessagePack of ``exc.args``; empty when they could not be encoded)."""

    type: str
    message: str
    args: bytes = b""


class ReplyTo(msgspec.Struct, frozen=True):
    """Where the result of a call goes: the caller's actor id and the event name it awaits."""

    actor: str
    event: str


# -- actor stream ------------------------------------------------------------------------


class TurnStarted(msgspec.Struct, tag="turn", frozen=True):
    """A turn began processing the inbox message at ``inbox``; ``deadline`` (seconds
    since the epoch) is when it is cancelled if still running."""

    turn: int
    invocation: str
    inbox: int
    handler: str
    args: msgspec.Raw
    at: float
    version: str = ""
    reply_to: ReplyTo | None = None
    deadline: float | None = None


class StepStarted(msgspec.Struct, tag="step_started", frozen=True):
    """A reconcilable or at-most-once step is about to execute (journaled durably first)."""

    turn: int
    step: str
    name: str
    kind: str
    fingerprint: int = 0
    at: float = 0.0


class StepCompleted(msgspec.Struct, tag="step", frozen=True):
    """A step's result. ``ref`` is the inbox position an event or reply step consumed."""

    turn: int
    step: str
    name: str
    kind: str
    value: msgspec.Raw
    fingerprint: int = 0
    ref: int = 0
    attempts: int = 1
    at: float = 0.0


class StepFailed(msgspec.Struct, tag="step_failed", frozen=True):
    """A step's final error, after its retries."""

    turn: int
    step: str
    name: str
    kind: str
    error: ErrorInfo
    fingerprint: int = 0
    attempts: int = 1
    at: float = 0.0


class TimerStarted(msgspec.Struct, tag="timer", frozen=True):
    """A durable timer was armed; it fires at ``fire_at`` (seconds since the epoch).

    ``kind`` is the step it belongs to: a ``sleep``, or the timeout of an ``event`` wait.
    """

    turn: int
    step: str
    name: str
    fire_at: float
    kind: str = "sleep"
    at: float = 0.0


class TurnCancelling(msgspec.Struct, tag="turn_cancelling", frozen=True):
    """The turn was cancelled at this point (by request, deadline or shutdown): from here
    on only its compensations run. Journaled before the first of them, so that a turn
    stopped mid-compensation resumes compensating instead of going forward."""

    turn: int
    reason: str
    at: float = 0.0


class TurnCompleted(msgspec.Struct, tag="turn_done", frozen=True):
    """The turn returned ``result``."""

    turn: int
    invocation: str
    result: msgspec.Raw
    at: float
    inbox: int = 0
    compensated: tuple[str, ...] = ()


class TurnFailed(msgspec.Struct, tag="turn_failed", frozen=True):
    """The turn raised (or was cancelled); ``compensated`` lists the steps undone."""

    turn: int
    invocation: str
    error: ErrorInfo
    at: float
    inbox: int = 0
    compensated: tuple[str, ...] = ()
    cancelled: bool = False


ActorEntry = (
    TurnStarted
    | TurnCancelling
    | StepStarted
    | StepCompleted
    | StepFailed
    | TimerStarted
    | TurnCompleted
    | TurnFailed
)
StepEntry = StepStarted | StepCompleted | StepFailed | TimerStarted
TurnEnd = TurnCompleted | TurnFailed

# -- inbox stream ------------------------------------------------------------------------


class MessageAccepted(msgspec.Struct, tag="message", frozen=True):
    """A message to one of the actor's handlers, accepted durably. ``deadline`` is in
    seconds from the start of its turn."""

    invocation: str
    handler: str
    args: msgspec.Raw
    at: float
    reply_to: ReplyTo | None = None
    idempotency_key: str | None = None
    deadline: float | None = None


class EventDelivered(msgspec.Struct, tag="event", frozen=True):
    """A named outside event (or a reply to one of the actor's calls) for ``ctx.wait_for``."""

    name: str
    payload: msgspec.Raw
    at: float


class InvocationCancelled(msgspec.Struct, tag="cancel", frozen=True):
    """A request to cancel ``invocation`` (acted on at the turn's next step boundary)."""

    invocation: str
    at: float


InboxEntry = MessageAccepted | EventDelivered | InvocationCancelled


class Reply(msgspec.Struct, frozen=True):
    """An invocation's outcome (and the payload of a reply event): result or error."""

    ok: bool
    result: bytes = b"\xc0"  # MessagePack of the result (nil by default)
    error: ErrorInfo | None = None
    handler: str = ""
    cancelled: bool = False
    compensated: tuple[str, ...] = ()


class ActorSnapshot(msgspec.Struct, frozen=True):
    """An actor's state at a turn boundary: replay starts here instead of at turn 1.

    ``inbox_done`` is the inbox position of the last message a turn took; ``events`` the
    inbox positions of the events consumed; ``results`` the replies of recent invocations.
    """

    turn: int
    state: msgspec.Raw
    inbox_done: int
    events: list[int]
    results: dict[str, Reply]


class IdempotencyClaim(msgspec.Struct, tag="idempotency", frozen=True):
    """The invocation that a client's idempotency key was first used for."""

    invocation: str


ACTOR_CODEC: Codec[ActorEntry] = Codec(ActorEntry)
INBOX_CODEC: Codec[InboxEntry] = Codec(InboxEntry)
IDEMPOTENCY_CODEC: Codec[IdempotencyClaim] = Codec(IdempotencyClaim)


def actor_stream(actor_id: str) -> str:
    """The journal stream holding an actor's turns and steps."""
    return f"actor/{actor_id}"


def inbox_stream(actor_id: str) -> str:
    """The journal stream holding an actor's accepted messages and events."""
    return f"inbox/{actor_id}"


def idempotency_stream(actor_id: str, key: str) -> str:
    """The journal stream that claims a client idempotency key for one invocation."""
    return f"idempotency/{actor_id}/{key}"
