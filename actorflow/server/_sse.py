"""``GET /v1/actors/{type}/{key}/invocations/{id}/stream``: an invocation's chunk stream as
server-sent events (see docs/streams.md).

Each event has an ``id`` (``<attempt>:<seq>``, ``end`` for the last), an ``event`` (its
kind: ``chunk``, ``superseded``, ``result``, ``failed``, ``end``) and one line of JSON
``data``. A subscriber resumes after the last event it got with the standard
``Last-Event-ID`` header, or the ``offset`` query parameter (for clients that cannot set
headers); the events come from the journal, so it resumes on any worker, after a restart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from actorflow._stream import StreamEvent
from actorflow.runtime._streams import UnknownEventId, follow, parse_event_id
from actorflow.server._responses import ApiError

if TYPE_CHECKING:
    from actorflow.server._app import ServerState

#: What a browser's EventSource waits before reconnecting, in milliseconds.
RECONNECT_MS = 1000
_json = msgspec.json.Encoder().encode


def format_event(event: StreamEvent) -> bytes:
    """One event in the text/event-stream format."""
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        event.id.encode(),
        event.kind.encode(),
        _json(event.data),
    )


async def stream_response(request: Request, state: ServerState, invocation: str) -> Response:
    """The SSE response for ``invocation``, resuming after ``offset`` / ``Last-Event-ID``.

    The first read happens before the response starts, so an unknown invocation or
    offset is a JSON error with its status, not a broken event stream."""
    after = request.query_params.get("offset") or request.headers.get("last-event-id") or None
    if after is not None:
        try:
            parse_event_id(after)
        except ValueError as exc:
            raise ApiError(400, "invalid_offset", str(exc)) from None
    if await state.runtime.invocation(invocation) is None:
        raise ApiError(404, "unknown_invocation", f"no invocation {invocation!r} was accepted")
    batches = follow(state.runtime, invocation, after, stop=state.shutting_down)
    try:
        first = await anext(batches)
    except UnknownEventId as exc:
        raise ApiError(400, "invalid_offset", str(exc)) from None
    except StopAsyncIteration:  # shutting down already
        raise ApiError(503, "shutting_down", "this server is shutting down") from None
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_body(first, batches), media_type="text/event-stream", headers=headers)


async def _body(first: list[StreamEvent], batches: AsyncIterator[list[StreamEvent]]) -> Any:
    yield b"retry: %d\n\n" % RECONNECT_MS
    try:
        batch: list[StreamEvent] | None = first
        while batch is not None:
            yield b"".join(map(format_event, batch)) if batch else b": keep-alive\n\n"
            batch = await anext(batches, None)
    finally:
        await batches.aclose()  # type: ignore[attr-defined]
