"""``GET /v1/actors/{type}/{key}/query/{name}[?args=JSON]``: run an actor's `@query` method
on its state as of its last step boundary (docs/api.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from actorflow._context import ActorRef
from actorflow._errors import (
    HostedElsewhere,
    NoSuchActorError,
    QueryContextError,
    QueryFailed,
    UnknownQueryError,
)
from actorflow.server._input import decode_json
from actorflow.server._responses import ApiError, json_response

if TYPE_CHECKING:
    from actorflow.server._app import ServerState

#: The error types only a query answers: its status and when (for /openapi.json).
QUERY_ERRORS: dict[str, tuple[int, str]] = {
    "unknown_query": (404, "a query the actor type does not have"),
    "unknown_actor": (404, "an actor that has never been sent a message: no state to query"),
    "hosted_elsewhere": (
        409,
        "another worker runs a turn of the actor (named in the message), or none hosts it yet",
    ),
    "query_failed": (500, "the query method raised, or used self.ctx (the message says which)"),
}


async def run_query(request: Request, state: ServerState) -> Response:
    """GET /v1/actors/{type}/{key}/query/{name}[?args=JSON]: the query's answer."""
    params = request.path_params
    target = ActorRef(params["type"], params["key"])
    arguments = query_arguments(request.query_params.get("args"))
    answer = await state.runtime.query(target, params["name"], (), arguments)
    return json_response(answer)


def query_arguments(text: str | None) -> dict[str, Any]:
    """``?args=``: a JSON object of argument names to values (none: no arguments)."""
    if text is None:
        return {}
    try:
        arguments = decode_json(text.encode(), "?args= (the query's arguments)")
    except ApiError as exc:
        if exc.kind != "malformed_json":
            raise
        detail = exc.message.partition("not valid JSON: ")[2]
        raise ApiError(400, "malformed_json", f"?args= is not valid JSON: {detail}") from None
    if not isinstance(arguments, dict):
        raise ApiError(
            400,
            "invalid_message",
            '?args= takes a JSON object of argument names to values, like ?args={"last":3} '
            "(URL-encoded)",
        )
    return arguments


def translate(exc: Exception) -> ApiError | None:
    """The HTTP answer to an error only a query raises (None: not one of them)."""
    if isinstance(exc, UnknownQueryError):
        return ApiError(404, "unknown_query", str(exc))
    if isinstance(exc, NoSuchActorError):
        return ApiError(404, "unknown_actor", str(exc))
    if isinstance(exc, HostedElsewhere):
        return ApiError(409, "hosted_elsewhere", str(exc))
    if isinstance(exc, QueryContextError):
        return ApiError(500, "query_failed", f"QueryContextError: {exc}")
    if isinstance(exc, QueryFailed):
        return ApiError(500, "query_failed", str(exc))
    return None
