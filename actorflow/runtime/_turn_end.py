"""Checks of a turn's end before it is journaled: a result the journal can hold, and, for
a turn re-run from the journal, the same end as the one recorded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from actorflow._errors import NonDeterminismError
from actorflow._events import ErrorInfo, Reply, TurnCompleted, TurnEnd, TurnStarted
from actorflow._values import canonical_equal
from actorflow.replay._recorded import RecordedTurn

if TYPE_CHECKING:
    from actorflow.runtime._host import ActorHost

#: Bytes kept back from the record limit for a turn's end record around its result.
END_ENVELOPE = 4096


def fit(host: ActorHost, started: TurnStarted, reply: Reply) -> Reply:
    """``reply``, or a failure saying why when its result is too large for the journal."""
    limit = host.record_limit - END_ENVELOPE
    if not reply.ok or len(reply.result) <= limit:
        return reply
    message = (
        f"{host.type_name}.{started.handler} returned {len(reply.result):,} bytes once "
        f"encoded, over the {limit:,} bytes a turn's result may take in the journal; "
        f"raise the journal's record limit or return a reference to the data"
    )
    return Reply(
        False, error=ErrorInfo("actorflow.InvalidResultError", message), handler=started.handler
    )


def check_same_end(host: ActorHost, recorded: RecordedTurn, end: TurnEnd, reply: Reply) -> None:
    """Raise `NonDeterminismError` unless a re-run turn ended as it was journaled to."""
    recorded.check_complete(f"the end of turn {end.turn}")
    if isinstance(end, TurnCompleted):
        kind = _result_type(host, recorded.started.handler)
        same = reply.ok and canonical_equal(reply.result, bytes(end.result), kind)
        was = f"turn {end.turn} returning {msgspec.msgpack.decode(end.result)!r}"
    else:
        same = not reply.ok and reply.error is not None and reply.error.type == end.error.type
        was = f"turn {end.turn} failing with {end.error.type}: {end.error.message}"
    if not same:
        if reply.ok:
            now = f"returning {msgspec.msgpack.decode(reply.result)!r}"
        else:
            now = f"failing with {reply.error.type if reply.error else '?'}"
        raise NonDeterminismError(host.actor_id, recorded.end_position, was, now)


def _result_type(host: ActorHost, handler: str) -> Any:
    info = host.cls.__actorflow_handlers__.get(handler)
    return info.result_type if info is not None else Any
