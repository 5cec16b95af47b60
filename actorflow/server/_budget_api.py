"""Budgets over HTTP: the ``Actorflow-Budget`` header of a message, and
``GET .../invocations/{id}/budget`` (the figures of the budget its tree spends from)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from actorflow._budget import Budget
from actorflow.server._responses import ApiError, json_response

if TYPE_CHECKING:
    from actorflow.server._app import ServerState

#: The request header that carries a message's budget.
HEADER = "actorflow-budget"


def from_header(request: Request) -> Budget | None:
    """The budget a message asks for (None: none given); a 400 ``invalid_budget`` saying
    what is wrong with a malformed one (nothing is accepted)."""
    headers = request.headers.getlist(HEADER)
    if not headers:
        return None
    if len(headers) > 1:
        raise ApiError(400, "invalid_budget", "give the Actorflow-Budget header once")
    try:
        return Budget.parse(headers[0])
    except (ValueError, TypeError) as exc:
        raise ApiError(
            400,
            "invalid_budget",
            f"Actorflow-Budget: {exc} (for example 'tokens=1000; cost=USD 2.50; llm_calls=10; "
            f"tool_calls=20; wall_time=600'); nothing was accepted",
        ) from None


async def show(request: Request, state: ServerState, invocation: str) -> Response:
    """GET /v1/actors/{type}/{key}/invocations/{id}/budget."""
    status = await state.runtime.budget(invocation)
    if status is None:
        raise ApiError(
            404,
            "no_budget",
            f"invocation {invocation} has no budget ledger: it was sent without a budget, is "
            f"not the root of its tree (a called actor spends from its caller's root), or "
            f"none of its steps declared a consumption yet",
        )
    return json_response(status)
