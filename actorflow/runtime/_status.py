"""What the runtime reports about actors and invocations: plain msgspec records."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

import msgspec

T = TypeVar("T")

#: The states an actor's status may be in (see `ActorStatus`).
ACTOR_STATES = (
    "idle",
    "running",
    "waiting-timer",
    "waiting-event",
    "waiting-retry",
    "retrying",
    "stuck",
    "held",
    "corrupt",
    "pending",
)


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
    ``cancelled``, with its result or error once it ended, the steps compensated, and
    the compensations that failed (those effects need a human)."""

    invocation: str
    actor: str
    state: str
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    compensated: tuple[str, ...] = ()
    compensation_failed: tuple[str, ...] = ()
    handler: str | None = None
    #: Whether an operator may retry it (`Runtime.retry`): it failed, was not cancelled,
    #: and nothing was compensated.
    retryable: bool = False


class Damage(msgspec.Struct, frozen=True):
    """Where an actor's journal is damaged: the stream, the position of the record (or
    snapshot) that fails its checksum, and what is wrong with it."""

    stream: str
    position: int
    detail: str


class ActorStatus(msgspec.Struct, frozen=True):
    """What an actor is doing. ``state`` is one of:

    - ``idle``: nothing to do (every accepted message processed, or none received);
    - ``running``, ``waiting-timer``, ``waiting-event``, ``waiting-retry`` (a step backs
      off before its next attempt): a turn is under way;
    - ``retrying``: the journal failed under it (see ``error``); it is re-activated
      after a pause, and replays from what the journal holds;
    - ``stuck``: it cannot go on until its code or journal is fixed (see ``error``);
    - ``held``: an actor type declared ``versioning="pinned"`` whose turn in flight was
      started by another code version, and would diverge under this one: it waits for
      a process running that version (``error`` says which, and the divergence); new
      messages are accepted and wait;
    - ``corrupt``: its journal is damaged; it is quarantined, and refuses all work until
      an operator repairs it (see ``error``, and `QuarantinedStatus`);
    - ``pending``: work is journaled but the actor is not active in this process.

    ``turns`` counts its turns; ``attention`` lists recent invocations whose
    compensations failed; ``version`` is the code version that ran its latest turn (None
    before its first turn, or when journaled before versions were recorded). It reads the
    same whether the actor is in memory or not. ``diverged_at`` is the position in its
    journal where the replay of its unfinished turn diverged from the code, when it is
    ``stuck`` on non-determinism or ``held``. ``owner`` is the worker hosting it, on a
    journal shared by workers (None: nobody, or a journal of one process); a worker
    answers for the actors it hosts from memory, for the others from the journal.
    """

    actor: str
    state: str
    invocation: str | None
    turns: int
    error: str | None = None
    attention: list[str] = []
    version: str | None = None
    diverged_at: int | None = None
    owner: str | None = None


class QuarantinedStatus(ActorStatus, frozen=True):
    """The status of a quarantined actor (``state`` ``corrupt``): also where its journal
    is damaged (the stream and position of the record that fails its checksum)."""

    damage: Damage | None = None


class Page(msgspec.Struct, Generic[T], frozen=True):
    """One page of a listing: its ``items``, and ``next``, the cursor that asks for the
    page after it (None on the last page). A page may hold fewer items than its limit,
    even none, and still have a next one: only ``next`` says whether more may follow."""

    items: list[T]
    next: str | None = None


class JournalEntry(msgspec.Struct, frozen=True):
    """One journal record as readable data: which stream, where, what, and when."""

    stream: Literal["actor", "inbox"]
    position: int
    type: str
    at: float
    data: dict[str, Any]


def readable(value: Any) -> dict[str, Any]:
    """A journal entry as plain data, with embedded MessagePack values decoded."""
    data: dict[str, Any] = {}
    for field in value.__struct_fields__:
        item = getattr(value, field)
        if item is msgspec.UNSET:  # a field written only sometimes (`TurnStarted.trace`)
            continue
        if isinstance(item, msgspec.Raw):
            item = msgspec.msgpack.decode(item)
        elif isinstance(item, msgspec.Struct):
            item = readable(item)
        data[field] = item
    return data
