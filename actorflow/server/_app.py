"""The HTTP JSON API over a `Runtime`: a Starlette app, bodies in and out with msgspec.

Every error is a JSON body ``{"error": {"type": ..., "message": ...}}`` with the status
that fits; bad input is refused before anything is accepted.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from actorflow import _tracing
from actorflow._actor import check_key
from actorflow._context import ActorRef
from actorflow._errors import (
    ActorflowError,
    ActorStuckError,
    HandlerFailed,
    IdempotencyKeyReused,
    InvalidMessageError,
    InvocationNotRetryable,
    MessageTooLarge,
    RuntimeClosedError,
    TooManyPendingEvents,
    TooManyQueuedMessages,
    UnknownActorError,
    UnknownHandlerError,
)
from actorflow.runtime import (
    ACTOR_STATES,
    ActorCorruptError,
    InvocationStatus,
    Page,
    ResetRefused,
    Runtime,
)
from actorflow.runtime._pages import DEFAULT_PAGE, MAX_PAGE, CursorError
from actorflow.server import _budget_api, _console, _query, _sse
from actorflow.server._guard import LOCAL_NAMES, RequestGuard, parse_origin
from actorflow.server._input import check_json_content_type, decode_json, has_body, query_seconds
from actorflow.server._metrics import render_metrics
from actorflow.server._openapi import openapi_document
from actorflow.server._responses import ApiError, error_response, json_array, json_response
from journal import CorruptionError, JournalError, StorageError, StoreClosedError

log = logging.getLogger("actorflow.server")

API = "/v1"
#: Longest a send may wait for its result before answering 202.
MAX_WAIT = 60.0
#: Every state an actor's status can report; ``GET /v1/actors?state=`` and
#: ``actorflow list --state`` take one of them.


class ServerState:
    """What the app serves: the runtime once it is ready, the settings, and the lifecycle.

    The app exists before the runtime: `actorflow serve` answers health checks while it
    still waits for the journal or recovers actors. Until `ready` is called, ``/livez``
    answers 200, ``/readyz`` 503 with the reason, and every other endpoint 503 (with
    Retry-After).
    """

    def __init__(
        self,
        runtime: Runtime | None = None,
        *,
        token: str | None = None,
        max_body_bytes: int = 1024 * 1024,
        retry_after: int = 5,
        allowed_hosts: Sequence[str] | None = None,
        allowed_origins: Sequence[str] = (),
    ) -> None:
        self._runtime = runtime
        self.token = token
        self.max_body_bytes = max_body_bytes
        #: The Host values answered (``NAME``, ``NAME:PORT`` or ``*``); by default this
        #: machine's names on any port. `actorflow serve` passes `served_hosts`.
        self.allowed_hosts = list(LOCAL_NAMES if allowed_hosts is None else allowed_hosts)
        #: The browser origins allowed to call the API (none by default).
        self.allowed_origins = list(allowed_origins)
        self.retry_after = retry_after
        self.shutting_down = anyio.Event()
        self.requests = 0
        #: Why the server is not ready yet (shown by /readyz and in 503 errors).
        self.starting = "starting"

    @property
    def is_ready(self) -> bool:
        """Whether the runtime has started (recovery done) and endpoints serve it."""
        return self._runtime is not None

    @property
    def runtime(self) -> Runtime:
        """The runtime being served (a 503 error while the server is still starting)."""
        if self._runtime is None:
            raise _not_ready(self)
        return self._runtime

    def ready(self, runtime: Runtime) -> None:
        """Serve ``runtime`` from now on: it has started and recovered its actors."""
        self._runtime = runtime


def _translate(exc: Exception) -> ApiError:
    """Map runtime errors to HTTP."""
    if isinstance(exc, ApiError):
        return exc
    query_error = _query.translate(exc)
    if query_error is not None:
        return query_error
    if isinstance(exc, UnknownActorError | UnknownHandlerError):
        kind = "unknown_actor_type" if isinstance(exc, UnknownActorError) else "unknown_handler"
        return ApiError(404, kind, str(exc))
    if isinstance(exc, IdempotencyKeyReused):
        return ApiError(422, "idempotency_key_reused", str(exc))
    if isinstance(exc, InvalidMessageError):
        if isinstance(exc, MessageTooLarge):
            return ApiError(
                413,
                "message_too_large",
                f"{exc} (the server's --max-record-bytes); nothing was accepted",
            )
        return ApiError(400, "invalid_message", str(exc))
    if isinstance(exc, TooManyPendingEvents | TooManyQueuedMessages):
        kind = "too_many_pending_events"
        if isinstance(exc, TooManyQueuedMessages):
            kind = "too_many_queued_messages"
        return ApiError(429, kind, str(exc))
    if isinstance(exc, InvocationNotRetryable):
        return ApiError(409, "not_retryable", str(exc))
    if isinstance(exc, StorageError | StoreClosedError):
        return ApiError(503, "journal_unavailable", f"{exc}; nothing was accepted, retry")
    if isinstance(exc, RuntimeClosedError):
        return ApiError(503, "shutting_down", str(exc))
    if isinstance(exc, ActorCorruptError):
        return ApiError(409, "actor_corrupt", str(exc))
    if isinstance(exc, CorruptionError):  # reading a damaged actor's journal or invocations
        return ApiError(
            409,
            "actor_corrupt",
            f'{exc} Export what is readable with `actorflow export ACTOR`; see "A damaged '
            f'journal" in docs/actors.md.',
        )
    if isinstance(exc, ActorStuckError):
        return ApiError(409, "actor_stuck", str(exc))
    if isinstance(exc, ResetRefused):
        return ApiError(409, "reset_refused", str(exc))
    if isinstance(exc, ActorflowError | JournalError):
        return ApiError(500, type(exc).__name__, str(exc))
    return ApiError(500, "internal", f"{type(exc).__name__}: {exc}")


Endpoint = Callable[[Request, ServerState], Awaitable[Response]]


def endpoint(
    fn: Endpoint, state: ServerState, *, public: bool = False, before_ready: bool = False
) -> Any:
    """Wrap an endpoint with auth, error translation, and refusal (503) before the runtime
    is ready unless ``before_ready``. ``public`` endpoints need no token."""

    async def handle(request: Request) -> Response:
        state.requests += 1
        try:
            if not public and state.token is not None:
                _check_token(request, state.token)
            if has_body(request.headers):
                content_type = request.headers.get("content-type")
                check_json_content_type(request.method, request.url.path, content_type)
            if not (state.is_ready or before_ready):
                _refuse_while_stopping(state)
                raise _not_ready(state)
            traced = state.runtime if state.is_ready else None  # (runtime: 503 before)
            with _tracing.incoming(traced, request.headers):
                return await fn(request, state)
        except Exception as exc:
            failure = _translate(exc)
            headers = {
                401: {"WWW-Authenticate": "Bearer"},
                429: {"Retry-After": str(state.retry_after)},
                503: {"Retry-After": str(state.retry_after)},
            }.get(failure.status)
            return error_response(failure, headers)

    return handle


def _check_token(request: Request, token: str) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(
            401,
            "unauthorized",
            "this server needs a token: send the header 'Authorization: Bearer <token>'",
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "the bearer token is not valid for this server")


async def _body(request: Request, state: ServerState, what: str) -> Any:
    """The request's JSON body (None when empty), refused if too large, malformed, too
    deeply nested, or holding numbers the journal cannot store (see `decode_json`)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > state.max_body_bytes:
        raise _too_large(state)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > state.max_body_bytes:
            raise _too_large(state)
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data.strip():
        return None
    return decode_json(data, what)


def _too_large(state: ServerState) -> ApiError:
    return ApiError(
        413,
        "body_too_large",
        f"the request body is larger than {state.max_body_bytes} bytes "
        f"(raise it with actorflow serve --max-body-bytes)",
    )


def _refuse_while_stopping(state: ServerState) -> None:
    if state.shutting_down.is_set():
        raise ApiError(
            503,
            "shutting_down",
            "this server is shutting down and accepts no new work; retry shortly "
            "(the next instance takes over the same journal)",
        )


def _not_ready(state: ServerState) -> ApiError:
    return ApiError(
        503,
        "starting",
        f"this server is not ready yet ({state.starting}); retry in {state.retry_after} s, "
        f"or wait until GET /readyz answers 200",
    )


def _ref(request: Request) -> ActorRef:
    return ActorRef(request.path_params["type"], request.path_params["key"])


# -- endpoints ------------------------------------------------------------------------------


async def send(request: Request, state: ServerState) -> Response:
    """POST /v1/actors/{type}/{key}/messages/{handler}: accept a message."""
    _refuse_while_stopping(state)
    args = await _body(request, state, "the arguments")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ApiError(400, "invalid_message", "the body must be a JSON object of arguments")
    wait = query_seconds(request.query_params, "wait", maximum=MAX_WAIT)
    deadline = query_seconds(request.query_params, "deadline")
    idempotency_key = request.headers.get("idempotency-key")
    invocation = await state.runtime.send(
        _ref(request),
        request.path_params["handler"],
        (),
        args,
        idempotency_key=idempotency_key,
        deadline=deadline,
        budget=_budget_api.from_header(request),
    )
    location = {"Location": _invocation_url(invocation)}
    queued = InvocationStatus(invocation, invocation.rpartition("#")[0], "queued")
    if not wait and idempotency_key is None:  # accepted durably: all the answer need say
        return json_response(queued, 202, location)
    try:
        if wait:
            with anyio.move_on_after(wait):
                await _result_or_shutdown(state, invocation)
        status = await state.runtime.invocation(invocation)  # a retry may find it finished
    except Exception as exc:  # accepted durably all the same: a 4xx/5xx would invite a resend
        log.warning("invocation %s was accepted; looking at it then failed: %s", invocation, exc)
        return json_response(queued, 202, location)
    code = 200 if status is not None and status.state not in ("queued", "running") else 202
    return json_response(status, code, location)


async def _result_or_shutdown(state: ServerState, invocation: str) -> None:
    """Wait until the invocation ends or the server shuts down; an actor that is (or gets)
    stuck is a 409 `actor_stuck`, not a wait that ends with nothing."""
    stuck: list[ActorStuckError] = []
    async with anyio.create_task_group() as group:

        async def result() -> None:
            try:
                await state.runtime.result(invocation)
            except ActorStuckError as exc:
                stuck.append(exc)
            except (HandlerFailed, ActorflowError):
                pass  # the status says how it ended
            group.cancel_scope.cancel()

        async def shutdown() -> None:
            await state.shutting_down.wait()
            group.cancel_scope.cancel()

        group.start_soon(result)
        group.start_soon(shutdown)
    if stuck:
        raise stuck[0]


def _invocation_url(invocation: str) -> str:
    actor, _, tail = invocation.rpartition("#")
    return f"{API}/actors/{actor}/invocations/{tail}"


async def _known_invocation(state: ServerState, invocation: str) -> InvocationStatus:
    status = await state.runtime.invocation(invocation)
    if status is None:
        raise ApiError(404, "unknown_invocation", f"no invocation {invocation!r} was accepted")
    return status


def _invocation_id(request: Request) -> str:
    params = request.path_params
    return f"{params['type']}/{params['key']}#{params['invocation']}"


async def show_invocation(request: Request, state: ServerState) -> Response:
    """GET /v1/actors/{type}/{key}/invocations/{id}[?wait=S]: status and result."""
    invocation = _invocation_id(request)
    status = await _known_invocation(state, invocation)
    wait = query_seconds(request.query_params, "wait", maximum=MAX_WAIT)
    if wait and status.state in ("queued", "running"):
        with anyio.move_on_after(wait):
            await _result_or_shutdown(state, invocation)
        status = await state.runtime.invocation(invocation) or status
    return json_response(status)


async def show_budget(request: Request, state: ServerState) -> Response:
    """GET /v1/actors/{type}/{key}/invocations/{id}/budget: spent and remaining."""
    return await _budget_api.show(request, state, _invocation_id(request))


async def stream_invocation(request: Request, state: ServerState) -> Response:
    """GET /v1/actors/{type}/{key}/invocations/{id}/stream: its chunks, as SSE."""
    return await _sse.stream_response(request, state, _invocation_id(request))


async def cancel(request: Request, state: ServerState) -> Response:
    """POST /v1/actors/{type}/{key}/invocations/{id}/cancel: cancel it (compensating)."""
    invocation = _invocation_id(request)
    status = await _known_invocation(state, invocation)
    if status.state in ("queued", "running"):
        await state.runtime.cancel(invocation)
    return json_response(await state.runtime.invocation(invocation), 202)


async def retry(request: Request, state: ServerState) -> Response:
    """POST /v1/actors/{type}/{key}/invocations/{id}/retry: run a failed invocation again
    from its last journaled step (409 `not_retryable` when it cannot be)."""
    _refuse_while_stopping(state)
    invocation = _invocation_id(request)
    await _known_invocation(state, invocation)
    status = await state.runtime.retry(invocation)
    return json_response(status, 202, {"Location": _invocation_url(invocation)})


async def list_invocations(request: Request, state: ServerState) -> Response:
    """GET /v1/actors/{type}/{key}/invocations[?limit=N&cursor=C]: a page of the running,
    the queued, then the ended ones (latest first)."""
    return await _actor_listing(request, state, state.runtime.invocations_page)


async def deliver(request: Request, state: ServerState) -> Response:
    """POST /v1/actors/{type}/{key}/events/{name}: deliver an event for ctx.wait_for."""
    _refuse_while_stopping(state)
    payload = await _body(request, state, "the event payload")
    await state.runtime.deliver(_ref(request), request.path_params["name"], payload)
    return json_response({"delivered": request.path_params["name"]}, 202)


async def reset_actor(request: Request, state: ServerState) -> Response:
    """POST /v1/actors/{type}/{key}/reset {"discard_turn": N}: reset a stuck or held actor
    to its last turn boundary; the answer holds the discarded journal entries."""
    _refuse_while_stopping(state)
    ref = _ref(request)
    _check_ref(state, ref)
    body = await _body(request, state, "the reset's confirmation")
    turn = body.get("discard_turn") if isinstance(body, dict) else None
    if not isinstance(turn, int) or isinstance(turn, bool) or turn < 1 or len(body) != 1:
        raise ApiError(
            400,
            "invalid_message",
            'a reset to the last turn boundary needs the body {"discard_turn": N}, N the '
            'number of the unfinished turn it discards (the actor\'s status "turns")',
        )
    return json_response(await state.runtime.reset_to_last_turn(ref, turn))


async def actor_status(request: Request, state: ServerState) -> Response:
    """GET /v1/actors/{type}/{key}: what the actor is doing."""
    ref = _ref(request)
    _check_ref(state, ref)
    return json_response(await state.runtime.status(ref))


async def actor_journal(request: Request, state: ServerState) -> Response:
    """GET /v1/actors/{type}/{key}/journal[?limit=N&cursor=C]: a page of the actor's
    journal as readable entries."""
    return await _actor_listing(request, state, state.runtime.journal_page)


async def _actor_listing(
    request: Request, state: ServerState, page_of: Callable[..., Awaitable[Page[Any]]]
) -> Response:
    """The page of one actor's listing that the request's ``?cursor=`` and ``?limit=`` ask
    ``page_of(ref, cursor=, limit=)`` for."""
    ref = _ref(request)
    _check_ref(state, ref)
    cursor, limit = _page_query(request)
    with _cursor_errors():
        page = await page_of(ref, cursor=cursor, limit=limit)
    return _page_response(request, page)


def _page_query(request: Request) -> tuple[str | None, int]:
    """A listing's ``?cursor=`` and ``?limit=`` (a whole number, at most `MAX_PAGE`)."""
    raw = request.query_params.get("limit")
    if raw is None:
        return request.query_params.get("cursor"), DEFAULT_PAGE
    if not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
        raise ApiError(
            400, "invalid_query", f"?limit= takes a whole number from 1 to {MAX_PAGE}, got {raw!r}"
        )
    return request.query_params.get("cursor"), min(int(raw), MAX_PAGE)


@contextlib.contextmanager
def _cursor_errors() -> Iterator[None]:
    """A cursor the runtime refuses is the client's query at fault: 400 invalid_query."""
    try:
        yield
    except CursorError as exc:
        raise ApiError(400, "invalid_query", f"?cursor=: {exc}") from None


def _page_response(request: Request, page: Page[Any]) -> Response:
    """A page as a JSON array, encoded item by item as it is sent; the next page's URL in
    a ``Link: <...>; rel="next"`` header when there is one."""
    headers = {}
    if page.next is not None:
        url = request.url.include_query_params(cursor=page.next)
        headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    return StreamingResponse(json_array(page.items), headers=headers, media_type="application/json")


def _check_ref(state: ServerState, ref: ActorRef) -> None:
    check_key(ref.key)
    _check_type(state, ref.type_name)


def _check_type(state: ServerState, type_name: str) -> None:
    hosted = state.runtime.actor_types
    if type_name not in hosted:
        known = ", ".join(sorted(hosted)) or "none"
        raise UnknownActorError(f"unknown actor type {type_name!r}; this server hosts: {known}")


async def list_actors(request: Request, state: ServerState) -> Response:
    """GET /v1/actors?type=&state=[&limit=N&cursor=C]: a page of actors by type and
    state."""
    wanted = request.query_params.get("state")
    if wanted is not None and wanted not in ACTOR_STATES:
        raise ApiError(
            400,
            "invalid_query",
            f"?state={wanted} is not an actor state; use one of {', '.join(ACTOR_STATES)}",
        )
    type_name = request.query_params.get("type")
    if type_name is not None:
        _check_type(state, type_name)
    cursor, limit = _page_query(request)
    with _cursor_errors():
        page = await state.runtime.actors_page(type_name, wanted, cursor=cursor, limit=limit)
    return _page_response(request, page)


async def livez(request: Request, state: ServerState) -> Response:
    """GET /livez: the process is alive."""
    return json_response({"status": "alive"})


async def readyz(request: Request, state: ServerState) -> Response:
    """GET /readyz: ready for traffic (503 while starting, and from the start of shutdown)."""
    if state.shutting_down.is_set():
        return json_response({"status": "shutting down"}, 503)
    if not state.is_ready:
        return json_response({"status": "starting", "reason": state.starting}, 503)
    worker = state.runtime.worker
    if worker is None:
        return json_response({"status": "ready"})
    return json_response({"status": "ready", "worker": worker.id, "actors": len(worker.held)})


async def list_workers(request: Request, state: ServerState) -> Response:
    """GET /v1/workers: the live workers sharing the journal (none for SQLite)."""
    return json_response(await state.runtime.workers())


async def metrics(request: Request, state: ServerState) -> Response:
    """GET /metrics: Prometheus text format."""
    text = render_metrics(state.runtime, state.requests)
    return Response(text, media_type="text/plain; version=0.0.4")


async def openapi(request: Request, state: ServerState) -> Response:
    """GET /openapi.json: this API, with a request schema per hosted handler."""
    document = openapi_document(state.runtime, ACTOR_STATES, token=state.token is not None)
    return json_response(document)


def create_app(state: ServerState) -> Starlette:
    """The ASGI app serving ``state.runtime`` (health checks only, until it is ready)."""
    actor = f"{API}/actors/{{type}}/{{key}}"

    def route(
        path: str, fn: Endpoint, methods: list[str], public: bool = False, health: bool = False
    ) -> Route:
        handle = endpoint(fn, state, public=public, before_ready=health)
        return Route(path, handle, methods=methods)

    routes = [
        route("/livez", livez, ["GET"], public=True, health=True),
        route("/readyz", readyz, ["GET"], public=True, health=True),
        route("/metrics", metrics, ["GET"]),
        route("/openapi.json", openapi, ["GET"]),
        route(f"{API}/actors", list_actors, ["GET"]),
        route(f"{API}/workers", list_workers, ["GET"]),
        route(actor, actor_status, ["GET"]),
        route(f"{actor}/journal", actor_journal, ["GET"]),
        route(f"{actor}/reset", reset_actor, ["POST"]),
        route(f"{actor}/messages/{{handler}}", send, ["POST"]),
        route(f"{actor}/events/{{name}}", deliver, ["POST"]),
        route(f"{actor}/query/{{name}}", _query.run_query, ["GET"]),
        route(f"{actor}/invocations", list_invocations, ["GET"]),
        route(f"{actor}/invocations/{{invocation}}", show_invocation, ["GET"]),
        route(f"{actor}/invocations/{{invocation}}/stream", stream_invocation, ["GET"]),
        route(f"{actor}/invocations/{{invocation}}/budget", show_budget, ["GET"]),
        route(f"{actor}/invocations/{{invocation}}/cancel", cancel, ["POST"]),
        route(f"{actor}/invocations/{{invocation}}/retry", retry, ["POST"]),
    ]
    # the web console (docs/console.md): its page and files need no token, its data does
    routes += _console.routes(lambda path, fn, public: route(path, fn, ["GET"], public, public))
    app = Starlette(routes=routes, middleware=_middleware(state))
    # A path with a trailing slash is not found: redirecting it would build a Location
    # from the request's Host header, before any check.
    app.router.redirect_slashes = False
    app.add_exception_handler(404, _not_found)
    app.add_exception_handler(405, _not_allowed)
    return app


def _middleware(state: ServerState) -> list[Middleware]:
    """The request guard (framing, Host, Origin) and, for the origins the operator
    allowed, CORS answers so that their pages can call the API."""
    guard = Middleware(RequestGuard, hosts=state.allowed_hosts, origins=state.allowed_origins)
    if not state.allowed_origins:
        return [guard]
    cors = Middleware(
        CORSMiddleware,
        allow_origins=[parse_origin(origin) for origin in state.allowed_origins],
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        expose_headers=["Location", "Retry-After"],
        allow_private_network=True,
    )
    return [guard, cors]


async def _not_found(request: Request, exc: Exception) -> Response:
    hint = " (paths have no trailing slash)" if request.url.path.endswith("/") else ""
    return error_response(
        ApiError(404, "not_found", f"no endpoint {request.url.path}{hint}; see /openapi.json")
    )


async def _not_allowed(request: Request, exc: Exception) -> Response:
    allowed = (exc.headers or {}).get("Allow", "") if isinstance(exc, HTTPException) else ""
    allow = ", ".join(sorted(method.strip() for method in allowed.split(",")))
    return error_response(
        ApiError(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.url.path}; use {allow}",
            {"Allow": allow},
        )
    )
