"""`Context.continue_as_new`: an invocation that goes on in a fresh journal segment.

A turn that continues as new ends with `TurnContinued` instead of `TurnCompleted`. The
record goes in one transaction with a checkpoint that carries a `Continuation` (the
invocation, the next handler and its arguments), and the actor's journal through it is
then deleted. The host starts the continuing turn next, before any queued message; if
the process stops first, the checkpoint holds the continuation and activation starts it.
Nothing of a finished segment is ever replayed, so the segment that runs after a deploy
runs the new code from its first step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from actorflow._errors import ContinuedAsNew, MessageTooLarge
from actorflow._events import RULES, Continuation, TurnContinued, TurnStarted
from actorflow._values import encode
from actorflow.runtime import _checkpoint

if TYPE_CHECKING:
    from actorflow.runtime._host import ActorHost

#: Bytes kept back from the record limit around the next segment's arguments.
_ENVELOPE = 4096


def encode_args(host: ActorHost, handler: str, args: tuple[Any, ...], kwargs: Any) -> bytes:
    """The next segment's arguments, checked against ``handler``'s annotations and the
    journal's record limit (both raise in the handler, before anything is journaled)."""
    info = host.runtime.handler_info(host.type_name, handler)
    data = info.encode_args(host.type_name, args, kwargs)
    limit = host.record_limit - _ENVELOPE
    if len(data) > limit:
        raise MessageTooLarge(
            f"the arguments of {host.type_name}.{handler} for ctx.continue_as_new() take "
            f"{len(data):,} bytes, over the {limit:,} bytes the journal allows; keep large "
            f"data in the state instead"
        )
    return data


async def end_segment(host: ActorHost, started: TurnStarted, continued: ContinuedAsNew) -> None:
    """Journal the end of ``started``'s segment with the checkpoint that continues it,
    then delete the journal the checkpoint covers."""
    args = msgspec.Raw(continued.encoded)
    at = host.clock.now()
    entry = TurnContinued(started.turn, started.invocation, continued.handler, args, at)
    host.continuation = Continuation(
        started.invocation,
        continued.handler,
        args,
        started.inbox,
        started.reply_to,
        started.deadline,
        started.budget,
    )
    host._state_bytes = encode(host.instance.state)
    await _checkpoint.end_turn(host, entry, [], started.turn)
    await _checkpoint.compact(host, always=True)


def next_segment(host: ActorHost) -> TurnStarted:
    """The start of the turn that continues the pending continuation."""
    continuation = host.continuation
    assert continuation is not None
    return TurnStarted(
        host.turns + 1,
        continuation.invocation,
        continuation.inbox,
        continuation.handler,
        continuation.args,
        host.clock.now(),
        host.runtime.versions[host.type_name],
        continuation.reply_to,
        continuation.deadline,
        RULES,
        budget=continuation.budget,
    )
