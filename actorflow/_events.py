"""The actor's journal entries: what replay needs, as tagged msgspec records.

Three streams per actor, all plain journal streams:

- ``actor/<Type>/<key>``: written only by the actor's owner (expected position + epoch):
  turns started and ended, each step's outcome, timers, compensations. Its journal
  snapshot is the actor's checkpoint (`ActorSnapshot`), replaced in the same transaction
  as every turn's end.
- ``inbox/<Type>/<key>``: written by anyone (clients, other actors): messages accepted,
  events delivered, replies to the actor's calls, cancellation requests.
- ``outcomes/<Type>/<key>``: one `InvocationEnded` per finished invocation, written with
  the turn's end, so an invocation reads back as finished forever.
- ``invocation/<Type>/<key>#<id>``: one `InvocationIndexed` per ending of the invocation,
  in the same transaction as its outcome: where that outcome is, so that it is found
  without reading the ``outcomes/`` stream.

- ``state/<Type>/<key>``: `StatePart` records, the parts of a large state that checkpoints
  refer to by position (see `ActorSnapshot.parts` and ``runtime/_state_parts.py``).

Plus one ``idempotency/<Type>/<key>/<client key>`` stream per client idempotency key, and
the ``idempotency-log`` that lists them in order, for their retention.

Tags never change meaning; new fields get defaults (msgspec's schema-evolution rules).
Values are kept as MessagePack (`msgspec.Raw`) and decoded with the type the code expects.
"""

from __future__ import annotations

import msgspec

from actorflow._budget import Grant
from journal import Codec


class ErrorInfo(msgspec.Struct, frozen=True):
    """An exception as journaled: its qualified type name, message and arguments
    (MessagePack of ``exc.args``; empty when they could not be encoded)."""

    type: str
    message: str
    args: bytes = b""


class TraceContext(msgspec.Struct, frozen=True, omit_defaults=True):
    """W3C trace context, journaled only while tracing is enabled (docs/tracing.md).

    On a message: ``parent`` and ``state``, the ``traceparent`` and ``tracestate`` of the
    sender's span (the HTTP request's headers, or the sending turn's span). On a
    `TurnStarted` also ``span``, the turn's first span (as a traceparent), and ``epoch``,
    the owner epoch it ran under: a resumed run of the turn links to that span and counts
    its attempt from the epochs. On the first step outcome a resumed run journals, ``span``
    and ``epoch`` of that run (a later run links to it too).
    """

    parent: str = ""
    state: str = ""
    span: str = ""
    epoch: int = 0


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
    #: Which replay rules wrote this turn: 1 (before step keys carried the journal's
    #: identity and fingerprints were canonical) or `RULES` (now). A turn keeps the rules
    #: it started under, so an upgrade never changes the keys of a step in flight.
    rules: int = 1
    #: The turn number its step keys and random draws derive from: this turn's own, or
    #: for an operator's retry of a failed invocation, the failed turn's (0: this turn).
    key_turn: int = 0
    #: Trace context (UNSET, and not encoded at all, unless tracing is enabled).
    trace: TraceContext | msgspec.UnsetType = msgspec.UNSET
    #: The budget the invocation spends from (None: none), from its message.
    budget: Grant | None = None


#: The replay rules new turns are written under (see `TurnStarted.rules`).
RULES = 2


class StepStarted(msgspec.Struct, tag="step_started", frozen=True):
    """A reconcilable or at-most-once step is about to execute an attempt (journaled
    durably first)."""

    turn: int
    step: str
    name: str
    kind: str
    fingerprint: int = 0
    at: float = 0.0
    attempt: int = 1


class StepRetrying(msgspec.Struct, tag="step_retry", frozen=True):
    """Attempt ``attempt`` of a step failed with ``error``; the next runs at ``retry_at``.

    Journaled before the backoff, so a restart during it neither restarts the count nor
    waits again from the beginning.
    """

    turn: int
    step: str
    name: str
    kind: str
    attempt: int
    error: ErrorInfo
    retry_at: float
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
    #: The span of a resumed run of the turn, on the first entry it journals (UNSET
    #: unless tracing is on): a later run links to it (docs/tracing.md).
    trace: TraceContext | msgspec.UnsetType = msgspec.UNSET


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
    #: As `StepCompleted.trace`.
    trace: TraceContext | msgspec.UnsetType = msgspec.UNSET


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
    """The turn raised (or was cancelled); ``compensated`` lists the steps undone and
    ``compensation_failed`` the undos that failed after their retries."""

    turn: int
    invocation: str
    error: ErrorInfo
    at: float
    inbox: int = 0
    compensated: tuple[str, ...] = ()
    cancelled: bool = False
    compensation_failed: tuple[str, ...] = ()


class TurnContinued(msgspec.Struct, tag="turn_continued", frozen=True):
    """The turn ended its segment with `Context.continue_as_new`: its invocation goes on
    in the next turn, which calls ``handler`` with ``args``. Journaled with a checkpoint
    that carries the continuation, and the journal before it is then deleted."""

    turn: int
    invocation: str
    handler: str
    args: msgspec.Raw
    at: float
    inbox: int = 0


ActorEntry = (
    TurnStarted
    | TurnCancelling
    | StepStarted
    | StepRetrying
    | StepCompleted
    | StepFailed
    | TimerStarted
    | TurnCompleted
    | TurnFailed
    | TurnContinued
)
StepEntry = StepStarted | StepRetrying | StepCompleted | StepFailed | TimerStarted
TurnEnd = TurnCompleted | TurnFailed

# -- inbox stream ------------------------------------------------------------------------


class SeedRecord(msgspec.Struct, array_like=True, frozen=True):
    """An actor-stream record carried elsewhere verbatim (its type tag and payload)."""

    type: str
    data: bytes


class MessageAccepted(msgspec.Struct, tag="message", frozen=True):
    """A message to one of the actor's handlers, accepted durably. ``deadline`` is in
    seconds from the start of its turn.

    An operator's retry of a failed invocation is a message too: it carries the failed
    turn's number (``retry_of``) and its journaled steps (``seed``: the `TurnStarted`
    first), which the retried turn replays instead of running them again.
    """

    invocation: str
    handler: str
    args: msgspec.Raw
    at: float
    reply_to: ReplyTo | None = None
    idempotency_key: str | None = None
    deadline: float | None = None
    retry_of: int = 0
    seed: tuple[SeedRecord, ...] = ()
    #: The sender's trace context (UNSET, and not encoded at all, unless tracing is enabled).
    trace: TraceContext | msgspec.UnsetType = msgspec.UNSET
    #: The budget the invocation spends from: its own, or its caller's tree's.
    budget: Grant | None = None


class EventDelivered(msgspec.Struct, tag="event", frozen=True):
    """A named outside event (or a reply to one of the actor's calls) for ``ctx.wait_for``."""

    name: str
    payload: msgspec.Raw
    at: float
    #: The deliverer's trace context (UNSET, and not encoded at all, unless tracing is on).
    trace: TraceContext | msgspec.UnsetType = msgspec.UNSET


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
    compensation_failed: tuple[str, ...] = ()


class PendingEvent(msgspec.Struct, array_like=True, frozen=True):
    """An event delivered but not consumed yet, kept in the checkpoint with its position."""

    position: int
    event: EventDelivered


class Continuation(msgspec.Struct, frozen=True):
    """An invocation between two segments (`Context.continue_as_new`): the turn that
    runs its next one starts from this."""

    invocation: str
    handler: str
    args: msgspec.Raw
    inbox: int
    reply_to: ReplyTo | None = None
    deadline: float | None = None
    budget: Grant | None = None


class ActorSnapshot(msgspec.Struct, frozen=True):
    """An actor's checkpoint at a turn boundary: activation starts here, so a finished turn
    is never replayed.

    Since `RULES` 2 (``rules=2``) one is written with every turn's end, in the same
    transaction. ``inbox_done`` is the inbox position of the last message a turn took:
    activation reads the inbox after it. ``pending`` holds the events at or before it that
    no turn consumed yet; ``events`` the positions after it of events already consumed.
    ``attention`` lists recent invocations whose compensations failed.

    Snapshots with ``rules=1`` (older journals) were taken every few turns; their
    ``events`` list every consumed position, their ``results`` recent replies, and the
    turns journaled after them are replayed.
    """

    turn: int
    state: msgspec.Raw
    inbox_done: int
    events: list[int]
    results: dict[str, Reply] = {}
    rules: int = 1
    pending: list[PendingEvent] = []
    attention: list[str] = []
    #: The code version of the checkpointed turn ("" in checkpoints written before it).
    version: str = ""
    #: The invocation whose turn ended with `Context.continue_as_new`, until the turn
    #: that continues it is journaled.
    continuation: Continuation | None = None
    #: When not empty, the state is not in ``state`` (which is nil) but the concatenation
    #: of the `StatePart` records at these positions of the actor's ``state/`` stream.
    parts: list[int] = []
    #: With the state kept whole: the ``state/`` stream's last position if it may still
    #: hold parts of an earlier checkpoint, to be deleted (0: it holds none).
    parts_end: int = 0


class StatePart(msgspec.Struct, tag="part", frozen=True):
    """A run of bytes of an actor's encoded state, on its ``state/`` stream."""

    data: bytes


class InvocationEnded(msgspec.Struct, tag="ended", frozen=True):
    """An invocation's outcome, on the ``outcomes/`` stream (the latest record of an
    invocation is its outcome; an operator's retry can end it again).

    ``seed`` holds the failed turn's records (its `TurnStarted` first, its failing last
    step left out) when it can be retried: it failed without cancellation and nothing
    was compensated.
    """

    invocation: str
    turn: int
    reply: Reply
    at: float
    seed: tuple[SeedRecord, ...] = ()


class InvocationIndexed(msgspec.Struct, tag="indexed", frozen=True):
    """Where an invocation's outcome is: its ``position`` on the actor's ``outcomes/``
    stream. On the invocation's own ``invocation/`` stream, written in the same
    transaction as the outcome; the latest record is the latest outcome (an operator's
    retry ends an invocation again).

    ``unindexed``: the actor's outcomes at positions 1 to ``unindexed`` were written
    before this index existed, so an invocation without an index may still be among them.
    """

    position: int
    unindexed: int = 0


class IdempotencyClaim(msgspec.Struct, tag="idempotency", frozen=True):
    """The invocation that a client's idempotency key was first used for, with a
    fingerprint of that request (handler, arguments, deadline) and when it was made."""

    invocation: str
    fingerprint: int = 0
    at: float = 0.0


class ClaimMade(msgspec.Struct, tag="claim", frozen=True):
    """An idempotency claim stream was created at ``at`` (the retention sweep's log)."""

    stream: str
    at: float


ACTOR_CODEC: Codec[ActorEntry] = Codec(ActorEntry)
INBOX_CODEC: Codec[InboxEntry] = Codec(InboxEntry)
OUTCOME_CODEC: Codec[InvocationEnded] = Codec(InvocationEnded)
INDEX_CODEC: Codec[InvocationIndexed] = Codec(InvocationIndexed)
IDEMPOTENCY_CODEC: Codec[IdempotencyClaim] = Codec(IdempotencyClaim)
CLAIM_LOG_CODEC: Codec[ClaimMade] = Codec(ClaimMade)
STATE_CODEC: Codec[StatePart] = Codec(StatePart)

#: The stream listing idempotency claims in the order they were made.
CLAIM_LOG = "idempotency-log"


def actor_stream(actor_id: str) -> str:
    """The journal stream holding an actor's turns and steps."""
    return f"actor/{actor_id}"


def inbox_stream(actor_id: str) -> str:
    """The journal stream holding an actor's accepted messages and events."""
    return f"inbox/{actor_id}"


def outcomes_stream(actor_id: str) -> str:
    """The journal stream holding the outcome of each of an actor's invocations."""
    return f"outcomes/{actor_id}"


def state_stream(actor_id: str) -> str:
    """The journal stream holding the parts of an actor's state that checkpoints refer to."""
    return f"state/{actor_id}"


def invocation_stream(invocation: str) -> str:
    """The journal stream indexing where an invocation's outcome is."""
    return f"invocation/{invocation}"


def idempotency_stream(actor_id: str, key: str) -> str:
    """The journal stream that claims a client idempotency key for one invocation."""
    return f"idempotency/{actor_id}/{key}"
