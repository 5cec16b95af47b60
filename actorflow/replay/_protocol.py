"""`TurnHost`: what a turn needs from the actor that hosts it (the runtime implements it).

The replay core writes and reads nothing by itself: every journal write, every event it
takes, every message it sends goes through this protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from actorflow._budget import Amount, Decision, Grant
from actorflow._clock import Clock
from actorflow._context import ActorRef, Retry
from actorflow._events import ActorEntry, EventDelivered, ReplyTo, StepCompleted
from journal import StreamAppend

if TYPE_CHECKING:
    from actorflow._actor import EventInfo


class TurnHost(Protocol):
    """What a turn needs from the actor that hosts it."""

    actor_id: str
    clock: Clock
    suspending: anyio.Event
    waiting_on: str | None
    #: The largest record the journal accepts, in bytes.
    record_limit: int
    #: Worker threads for sync step functions.
    step_threads: anyio.CapacityLimiter
    #: The retry policy of steps that give none (the actor type's, else the runtime's).
    retry: Retry
    #: Mixed into step idempotency keys: the journal's identity, shortened.
    key_tag: str
    #: The events the actor type declares (None: it declares none).
    events: dict[str, EventInfo] | None

    async def journal(
        self, entries: Sequence[ActorEntry], extra: Sequence[StreamAppend] = ()
    ) -> None:
        """Append entries to the actor's journal (and ``extra`` in the same transaction),
        waking the actors whose inboxes ``extra`` writes to; raise `JournalFailure` if the
        journal fails."""
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
        budget: Grant | None = None,
    ) -> StreamAppend:
        """Validate a message to another actor and return the append that accepts it
        (``budget``: what the message's invocation spends from)."""
        ...

    async def reserve(
        self,
        grant: Grant,
        hold: str,
        asked: Amount,
        open_ended: bool,
        entry: Callable[[Decision], StepCompleted],
        actor_id: str,
    ) -> Decision:
        """Decide whether ``asked`` fits in the budget; journal ``entry(decision)`` and,
        if it fits, the ledger's reservation for ``hold``, in one transaction."""
        ...

    def spent(self, amount: Amount) -> None:
        """A step settled ``amount`` (for the metrics)."""
        ...

    def result_type(self, target: ActorRef, handler: str) -> Any:
        """The annotated result type of another actor's handler."""
        ...

    def continuation_args(
        self, handler: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bytes:
        """Validate the arguments of the next segment's handler (`continue_as_new`);
        return them encoded."""
        ...
