"""`Client` and `SyncClient`: the HTTP API of `actorflow serve`, from Python.

Both build the same requests and read the same answers; `Client` is async (httpx's
AsyncClient), `SyncClient` blocks (for scripts). Typed references feel like the embedded
runtime's: ``await client.ref(Researcher, "job-1").call(Researcher.research, "topic")``.
"""

from __future__ import annotations

import dataclasses
import decimal
import math
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

import httpx
import msgspec

from actorflow._actor import Actor, HandlerInfo, check_key
from actorflow._budget import Budget, BudgetStatus
from actorflow._context import ActorRef, handler_name, type_name_of
from actorflow._errors import ActorflowError, HandlerFailed, UnknownHandlerError, UnknownQueryError
from actorflow._journalable import dec_hook, enc_hook, validated_type
from actorflow._stream import StreamEvent
from actorflow._stream_client import (
    DEFAULT_RECONNECT_FOR,
    follow_async,
    follow_sync,
    stream_path,
)
from actorflow.cluster import WorkerInfo
from actorflow.runtime._query import QueryAnswer
from actorflow.runtime._reset import TurnReset
from actorflow.runtime._status import ActorStatus, InvocationStatus, JournalEntry, Page

A = TypeVar("A", bound=Actor)
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8787"
#: Longest one request waits server-side for a result before the client asks again.
POLL_WAIT = 20.0
#: The clients' default ``timeout``: seconds a request may go unanswered beyond the
#: ``wait`` it asks the server for.
DEFAULT_TIMEOUT = 60.0


class ClientError(ActorflowError):
    """The server refused a request; ``status`` and ``kind`` say how."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        self.status = status
        self.kind = kind
        self.message = message
        super().__init__(f"HTTP {status} {kind}: {message}")


class RequestTimeout(ActorflowError, TimeoutError):
    """The server did not answer a request within the client's ``timeout`` (plus the
    ``wait`` the request asked for). Whether the server acted on it is unknown: retry a
    send with the same idempotency key."""

    def __init__(self, url: str, request: str, seconds: float, wait: float) -> None:
        self.url = url
        self.request = request
        self.seconds = seconds
        self.wait = wait
        super().__init__(
            f"the server at {url} did not answer {request} within {seconds:g} s; is it "
            f"overloaded or stopped? Give the client a larger timeout= if it needs longer"
        )


class _ErrorBody(msgspec.Struct):
    type: str
    message: str


class _Error(msgspec.Struct):
    error: _ErrorBody


@dataclasses.dataclass(frozen=True)
class _Call:
    """One HTTP request, and how to read its answer."""

    method: str
    path: str
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes | None = None
    answer: Any = Any
    #: How long the request asks the server to wait (for a result) before answering.
    wait: float = 0.0
    #: Whether the answer is a page of a listing (its next cursor in the Link header).
    paged: bool = False


def _actor_path(ref: ActorRef) -> str:
    return f"/v1/actors/{ref.type_name}/{check_key(ref.key)}"


def _invocation_path(invocation: str) -> str:
    actor, sep, tail = invocation.rpartition("#")
    if not sep:
        raise ValueError(f"{invocation!r} is not an invocation id (Type/key#hex)")
    return f"{_actor_path(_as_ref(actor))}/invocations/{tail}"


def _read(response: httpx.Response, call: _Call) -> Any:
    if response.status_code >= 400:
        try:
            error = msgspec.json.decode(response.content, type=_Error).error
        except msgspec.DecodeError:
            raise ClientError(response.status_code, "http", response.text[:200]) from None
        raise ClientError(response.status_code, error.type, error.message)
    found = msgspec.json.decode(response.content, type=call.answer)
    return Page(found, _next_cursor(response)) if call.paged else found


def _refuse(response: httpx.Response) -> None:
    """Raise the error of a refused request (an unexpected answer, if it is none)."""
    _read(response, _Call("GET", ""))
    raise ClientError(response.status_code, "http", response.text[:200])


def _next_cursor(response: httpx.Response) -> str | None:
    """The cursor of the next page, from the ``Link: <...>; rel="next"`` header."""
    url = response.links.get("next", {}).get("url")
    if url is None:
        return None
    found = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("cursor")
    return found[0] if found else None


def _page_params(cursor: str | None, limit: int | None) -> dict[str, str]:
    params = {}
    if cursor is not None:
        params["cursor"] = cursor
    if limit is not None:
        params["limit"] = str(limit)
    return params


def _seconds(value: float, name: str) -> str:
    """``value`` as the server takes ``?wait=`` and ``?deadline=``: a plain decimal
    (``1e-05`` is sent as ``0.00001``)."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}= takes a finite number of seconds >= 0, got {value!r}")
    return format(decimal.Decimal(repr(float(value))), "f")


def _as_ref(actor: ActorRef | str) -> ActorRef:
    if isinstance(actor, ActorRef):
        return actor
    type_name, slash, key = actor.partition("/")
    if not slash:
        raise ValueError(f"actors are named Type/key, got {actor!r}")
    return ActorRef(type_name, key)


class _Requests:
    """The requests of the API (shared by both clients)."""

    @staticmethod
    def send(
        actor: ActorRef | str,
        handler: str,
        arguments: dict[str, Any],
        idempotency_key: str | None,
        wait: float | None,
        deadline: float | None,
        budget: Budget | None = None,
    ) -> _Call:
        params = {}
        if wait:
            params["wait"] = _seconds(wait, "wait")
        if deadline is not None:
            params["deadline"] = _seconds(deadline, "deadline")
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if budget is not None:
            headers["Actorflow-Budget"] = budget.render()
        path = f"{_actor_path(_as_ref(actor))}/messages/{handler}"
        body = msgspec.json.encode(arguments)
        return _Call("POST", path, params, headers, body, InvocationStatus, wait or 0.0)

    @staticmethod
    def query(actor: ActorRef | str, name: str, arguments: dict[str, Any]) -> _Call:
        path = f"{_actor_path(_as_ref(actor))}/query/{name}"
        params = {"args": msgspec.json.encode(arguments).decode()} if arguments else {}
        return _Call("GET", path, params, answer=QueryAnswer)

    @staticmethod
    def budget(invocation: str) -> _Call:
        return _Call("GET", f"{_invocation_path(invocation)}/budget", answer=BudgetStatus)

    @staticmethod
    def invocation(invocation: str, wait: float | None = None) -> _Call:
        params = {"wait": _seconds(wait, "wait")} if wait else {}
        path = _invocation_path(invocation)
        return _Call("GET", path, params, answer=InvocationStatus, wait=wait or 0.0)

    @staticmethod
    def cancel(invocation: str) -> _Call:
        path = _invocation_path(invocation) + "/cancel"
        return _Call("POST", path, answer=InvocationStatus)

    @staticmethod
    def retry(invocation: str) -> _Call:
        path = _invocation_path(invocation) + "/retry"
        return _Call("POST", path, answer=InvocationStatus)

    @staticmethod
    def reset(actor: ActorRef | str, discard_turn: int) -> _Call:
        path = _actor_path(_as_ref(actor)) + "/reset"
        body = msgspec.json.encode({"discard_turn": discard_turn})
        return _Call("POST", path, body=body, answer=TurnReset)

    @staticmethod
    def invocations(actor: ActorRef | str, cursor: str | None, limit: int | None) -> _Call:
        path = _actor_path(_as_ref(actor)) + "/invocations"
        params = _page_params(cursor, limit)
        return _Call("GET", path, params, answer=list[InvocationStatus], paged=True)

    @staticmethod
    def deliver(actor: ActorRef | str, name: str, payload: Any) -> _Call:
        path = f"{_actor_path(_as_ref(actor))}/events/{name}"
        return _Call("POST", path, body=msgspec.json.encode(payload, enc_hook=enc_hook))

    @staticmethod
    def status(actor: ActorRef | str) -> _Call:
        return _Call("GET", _actor_path(_as_ref(actor)), answer=ActorStatus)

    @staticmethod
    def journal(actor: ActorRef | str, cursor: str | None, limit: int | None) -> _Call:
        path = _actor_path(_as_ref(actor)) + "/journal"
        params = _page_params(cursor, limit)
        return _Call("GET", path, params, answer=list[JournalEntry], paged=True)

    @staticmethod
    def workers() -> _Call:
        return _Call("GET", "/v1/workers", answer=list[WorkerInfo])

    @staticmethod
    def list_actors(
        type_name: str | None, state: str | None, cursor: str | None, limit: int | None
    ) -> _Call:
        params = {k: v for k, v in (("type", type_name), ("state", state)) if v}
        params |= _page_params(cursor, limit)
        return _Call("GET", "/v1/actors", params, answer=list[ActorStatus], paged=True)


def _outcome(status: InvocationStatus, result_type: Any = Any) -> Any:
    if status.state == "completed":
        if result_type is Any:
            return status.result
        return msgspec.convert(status.result, validated_type(result_type), dec_hook=dec_hook)
    raise HandlerFailed(status.invocation, status.error_type or status.state, status.error or "")


def _positional(
    cls: type[Actor], handler: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[dict[str, Any], HandlerInfo]:
    """Named, JSON-ready arguments, checked against the handler's signature here first."""
    info = cls.__actorflow_handlers__.get(handler)
    if info is None:
        raise UnknownHandlerError(f"{cls.__name__} has no handler {handler!r}")
    data = info.encode_args(type_name_of(cls), args, kwargs)
    named: dict[str, Any] = msgspec.to_builtins(msgspec.msgpack.decode(data))
    return named, info


def _with_content_type(call: _Call) -> dict[str, str]:
    """The call's headers, declaring its body JSON (the server refuses other bodies)."""
    if call.body is None:
        return call.headers
    return {**call.headers, "Content-Type": "application/json"}


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _timed_out(
    http: httpx.AsyncClient | httpx.Client, call: _Call, timeout: float
) -> RequestTimeout:
    url = str(http.base_url).rstrip("/")
    return RequestTimeout(url, f"{call.method} {call.path}", call.wait + timeout, call.wait)


def _check_timeout(timeout: float) -> float:
    if not timeout > 0:
        raise ValueError(f"timeout= takes a number of seconds > 0, got {timeout!r}")
    return timeout


class Client:
    """An async client of `actorflow serve` (use ``async with Client(url) as client``).

    ``timeout`` is how many seconds a request may go unanswered beyond the ``wait`` it
    asks the server for (60 by default); past it the request raises `TimeoutError`
    (`RequestTimeout`, naming the server and the time).
    """

    def __init__(
        self, url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._timeout = _check_timeout(timeout)
        self._http = httpx.AsyncClient(base_url=url, headers=_headers(token), timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _do(self, call: _Call) -> Any:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                headers=_with_content_type(call),
                content=call.body,
                timeout=call.wait + self._timeout,
            )
        except httpx.TimeoutException as exc:
            raise _timed_out(self._http, call, self._timeout) from exc
        return _read(response, call)

    def ref(self, cls: type[A], key: str) -> RemoteActor[A]:
        """A typed reference to a remote actor."""
        return RemoteActor(self, cls, key)

    async def send(
        self,
        actor: ActorRef | str,
        handler: str,
        arguments: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        wait: float | None = None,
        deadline: float | None = None,
        budget: Budget | None = None,
    ) -> InvocationStatus:
        """Send a message; the status of its invocation (finished if ``wait`` sufficed).
        ``budget``: what the invocation and those it calls may spend (docs/budgets.md)."""
        status: InvocationStatus = await self._do(
            _Requests.send(actor, handler, arguments or {}, idempotency_key, wait, deadline, budget)
        )
        return status

    async def budget(self, invocation: str) -> BudgetStatus:
        """The budget of the tree rooted at ``invocation``: spent, held, remaining."""
        status: BudgetStatus = await self._do(_Requests.budget(invocation))
        return status

    async def invocation(self, invocation: str, *, wait: float | None = None) -> InvocationStatus:
        """An invocation's status (waiting up to ``wait`` seconds for it to finish)."""
        status: InvocationStatus = await self._do(_Requests.invocation(invocation, wait))
        return status

    async def query(
        self, actor: ActorRef | str, name: str, arguments: dict[str, Any] | None = None
    ) -> QueryAnswer:
        """Run an actor's `@query` method ``name`` on its state as of its last step
        boundary, without waiting for its running turn; the answer holds its ``result``."""
        answer: QueryAnswer = await self._do(_Requests.query(actor, name, arguments or {}))
        return answer

    async def result(
        self, invocation: str, *, timeout: float | None = None, result_type: Any = Any
    ) -> Any:
        """Wait for an invocation's result (its error raises `HandlerFailed`)."""
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_WAIT if give_up is None else min(POLL_WAIT, give_up - time.monotonic())
            status = await self.invocation(invocation, wait=max(0.0, left))
            if status.state not in ("queued", "running"):
                return _outcome(status, result_type)
            if give_up is not None and time.monotonic() >= give_up:
                raise TimeoutError(f"invocation {invocation} is still {status.state}")

    def stream(
        self,
        invocation: str,
        *,
        after: str | None = None,
        reconnect_for: float = DEFAULT_RECONNECT_FOR,
    ) -> AsyncIterator[StreamEvent]:
        """The events of an invocation's stream (`Context.stream`: ``chunk``,
        ``superseded``, ``result``, ``failed``), after event ``after``, until its ``end``;
        reconnects and resumes by itself (see docs/streams.md)."""
        path = stream_path(_invocation_path(invocation))
        return follow_async(self._http, path, after, reconnect_for, _refuse)

    async def cancel(self, invocation: str) -> InvocationStatus:
        """Cancel an invocation (its compensations run)."""
        status: InvocationStatus = await self._do(_Requests.cancel(invocation))
        return status

    async def retry(self, invocation: str) -> InvocationStatus:
        """Run a failed invocation again from its last journaled step."""
        status: InvocationStatus = await self._do(_Requests.retry(invocation))
        return status

    async def reset_to_last_turn(self, actor: ActorRef | str, discard_turn: int) -> TurnReset:
        """Reset a stuck or held actor to its last turn boundary, discarding its unfinished
        turn ``discard_turn``; the answer holds the discarded journal entries."""
        reset: TurnReset = await self._do(_Requests.reset(actor, discard_turn))
        return reset

    async def invocations(self, actor: ActorRef | str) -> list[InvocationStatus]:
        """An actor's invocations: running and queued first, then ended, latest first
        (every page of `invocation_pages`)."""
        return [item async for page in self.invocation_pages(actor) for item in page.items]

    async def invocation_pages(
        self, actor: ActorRef | str, *, limit: int | None = None, cursor: str | None = None
    ) -> AsyncIterator[Page[InvocationStatus]]:
        """An actor's invocations a page at a time (``limit`` each, 1000 at most; from
        ``cursor``, a page's ``next``, if given)."""
        async for page in self._pages(lambda c: _Requests.invocations(actor, c, limit), cursor):
            yield page

    async def _pages(
        self, call: Callable[[str | None], _Call], cursor: str | None
    ) -> AsyncIterator[Page[Any]]:
        while True:
            page: Page[Any] = await self._do(call(cursor))
            yield page
            if page.next is None:
                return
            cursor = page.next

    async def deliver(self, actor: ActorRef | str, name: str, payload: Any = None) -> None:
        """Deliver an event to an actor (for ``ctx.wait_for``)."""
        await self._do(_Requests.deliver(actor, name, payload))

    async def status(self, actor: ActorRef | str) -> ActorStatus:
        """An actor's status."""
        status: ActorStatus = await self._do(_Requests.status(actor))
        return status

    async def journal(self, actor: ActorRef | str) -> list[JournalEntry]:
        """An actor's journal as readable entries (every page of `journal_pages`)."""
        return [item async for page in self.journal_pages(actor) for item in page.items]

    async def journal_pages(
        self, actor: ActorRef | str, *, limit: int | None = None, cursor: str | None = None
    ) -> AsyncIterator[Page[JournalEntry]]:
        """An actor's journal a page at a time (``limit`` entries each, 1000 at most; from
        ``cursor``, a page's ``next``, if given)."""
        async for page in self._pages(lambda c: _Requests.journal(actor, c, limit), cursor):
            yield page

    async def workers(self) -> list[WorkerInfo]:
        """The live workers sharing the server's journal (none for a SQLite journal)."""
        found: list[WorkerInfo] = await self._do(_Requests.workers())
        return found

    async def list_actors(
        self, type_name: str | None = None, state: str | None = None
    ) -> list[ActorStatus]:
        """Actors by type and state (every page of `actor_pages`)."""
        pages = self.actor_pages(type_name, state)
        return [item async for page in pages for item in page.items]

    async def actor_pages(
        self,
        type_name: str | None = None,
        state: str | None = None,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> AsyncIterator[Page[ActorStatus]]:
        """Actors by type and state, a page at a time (``limit`` each, 1000 at most; from
        ``cursor``, a page's ``next``, if given). A page filtered by state may hold fewer,
        even none, and still be followed by more."""

        def call(cursor: str | None) -> _Call:
            return _Requests.list_actors(type_name, state, cursor, limit)

        async for page in self._pages(call, cursor):
            yield page


class RemoteActor(Generic[A]):
    """A typed reference to an actor behind `Client`."""

    def __init__(self, client: Client, cls: type[A], key: str) -> None:
        self._client = client
        self._cls = cls
        self.ref = ActorRef(type_name_of(cls), check_key(key))

    async def send(
        self,
        handler: Callable[Concatenate[A, P], Coroutine[Any, Any, Any]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> str:
        """Send a message; return its invocation id."""
        arguments, _ = _positional(self._cls, handler_name(handler), args, kwargs)
        status = await self._client.send(self.ref, handler_name(handler), arguments)
        return status.invocation

    async def call(
        self,
        handler: Callable[Concatenate[A, P], Coroutine[Any, Any, R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Send a message and wait for its result, decoded as the handler's return type."""
        name = handler_name(handler)
        arguments, info = _positional(self._cls, name, args, kwargs)
        status = await self._client.send(self.ref, name, arguments, wait=POLL_WAIT)
        if status.state in ("queued", "running"):
            result: R = await self._client.result(status.invocation, result_type=info.result_type)
            return result
        done: R = _outcome(status, info.result_type)
        return done

    @overload
    async def query(
        self,
        query: Callable[Concatenate[A, P], Coroutine[Any, Any, R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    @overload
    async def query(
        self, query: Callable[Concatenate[A, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    async def query(self, query: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run a `@query` method on the actor's state as of its last step boundary (its
        arguments checked here first); its result, decoded as its return type."""
        name = handler_name(query)
        info = self._cls.__actorflow_queries__.get(name)
        if info is None:
            raise UnknownQueryError(f"{self._cls.__name__} has no query {name!r}")
        data = info.encode_args(type_name_of(self._cls), args, kwargs)
        arguments = msgspec.to_builtins(msgspec.msgpack.decode(data))
        answer = await self._client.query(self.ref, name, arguments)
        return msgspec.convert(answer.result, info.result_type)


class SyncClient:
    """A blocking client of `actorflow serve`, for scripts (``with SyncClient(url) as c``).

    ``timeout`` is how many seconds a request may go unanswered beyond the ``wait`` it
    asks the server for (60 by default); past it the request raises `TimeoutError`
    (`RequestTimeout`, naming the server and the time).
    """

    def __init__(
        self, url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._timeout = _check_timeout(timeout)
        self._http = httpx.Client(base_url=url, headers=_headers(token), timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _do(self, call: _Call) -> Any:
        try:
            response = self._http.request(
                call.method,
                call.path,
                params=call.params,
                headers=_with_content_type(call),
                content=call.body,
                timeout=call.wait + self._timeout,
            )
        except httpx.TimeoutException as exc:
            raise _timed_out(self._http, call, self._timeout) from exc
        return _read(response, call)

    def send(
        self,
        actor: ActorRef | str,
        handler: str,
        arguments: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        wait: float | None = None,
        deadline: float | None = None,
        budget: Budget | None = None,
    ) -> InvocationStatus:
        """Send a message; the status of its invocation (finished if ``wait`` sufficed).
        ``budget``: what the invocation and those it calls may spend (docs/budgets.md)."""
        status: InvocationStatus = self._do(
            _Requests.send(actor, handler, arguments or {}, idempotency_key, wait, deadline, budget)
        )
        return status

    def call(
        self,
        actor: ActorRef | str,
        handler: str,
        arguments: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Any:
        """Send a message and wait for its result (its error raises `HandlerFailed`)."""
        status = self.send(
            actor, handler, arguments, idempotency_key=idempotency_key, wait=POLL_WAIT
        )
        return (
            self.result(status.invocation)
            if status.state in ("queued", "running")
            else _outcome(status)
        )

    def budget(self, invocation: str) -> BudgetStatus:
        """The budget of the tree rooted at ``invocation``: spent, held, remaining."""
        status: BudgetStatus = self._do(_Requests.budget(invocation))
        return status

    def invocation(self, invocation: str, *, wait: float | None = None) -> InvocationStatus:
        """An invocation's status (waiting up to ``wait`` seconds for it to finish)."""
        status: InvocationStatus = self._do(_Requests.invocation(invocation, wait))
        return status

    def query(
        self, actor: ActorRef | str, name: str, arguments: dict[str, Any] | None = None
    ) -> QueryAnswer:
        """Run an actor's `@query` method ``name`` on its state as of its last step
        boundary, without waiting for its running turn; the answer holds its ``result``."""
        answer: QueryAnswer = self._do(_Requests.query(actor, name, arguments or {}))
        return answer

    def result(self, invocation: str, *, timeout: float | None = None) -> Any:
        """Wait for an invocation's result (its error raises `HandlerFailed`)."""
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_WAIT if give_up is None else min(POLL_WAIT, give_up - time.monotonic())
            status = self.invocation(invocation, wait=max(0.0, left))
            if status.state not in ("queued", "running"):
                return _outcome(status)
            if give_up is not None and time.monotonic() >= give_up:
                raise TimeoutError(f"invocation {invocation} is still {status.state}")

    def stream(
        self,
        invocation: str,
        *,
        after: str | None = None,
        reconnect_for: float = DEFAULT_RECONNECT_FOR,
    ) -> Iterator[StreamEvent]:
        """`Client.stream`, blocking."""
        path = stream_path(_invocation_path(invocation))
        return follow_sync(self._http, path, after, reconnect_for, _refuse)

    def cancel(self, invocation: str) -> InvocationStatus:
        """Cancel an invocation (its compensations run)."""
        status: InvocationStatus = self._do(_Requests.cancel(invocation))
        return status

    def retry(self, invocation: str) -> InvocationStatus:
        """Run a failed invocation again from its last journaled step."""
        status: InvocationStatus = self._do(_Requests.retry(invocation))
        return status

    def reset_to_last_turn(self, actor: ActorRef | str, discard_turn: int) -> TurnReset:
        """Reset a stuck or held actor to its last turn boundary, discarding its unfinished
        turn ``discard_turn``; the answer holds the discarded journal entries."""
        reset: TurnReset = self._do(_Requests.reset(actor, discard_turn))
        return reset

    def invocations(self, actor: ActorRef | str) -> list[InvocationStatus]:
        """An actor's invocations: running and queued first, then ended, latest first
        (every page of `invocation_pages`)."""
        return [item for page in self.invocation_pages(actor) for item in page.items]

    def invocation_pages(
        self, actor: ActorRef | str, *, limit: int | None = None, cursor: str | None = None
    ) -> Iterator[Page[InvocationStatus]]:
        """An actor's invocations a page at a time (``limit`` each, 1000 at most; from
        ``cursor``, a page's ``next``, if given)."""
        return self._pages(lambda c: _Requests.invocations(actor, c, limit), cursor)

    def _pages(
        self, call: Callable[[str | None], _Call], cursor: str | None
    ) -> Iterator[Page[Any]]:
        while True:
            page: Page[Any] = self._do(call(cursor))
            yield page
            if page.next is None:
                return
            cursor = page.next

    def deliver(self, actor: ActorRef | str, name: str, payload: Any = None) -> None:
        """Deliver an event to an actor (for ``ctx.wait_for``)."""
        self._do(_Requests.deliver(actor, name, payload))

    def status(self, actor: ActorRef | str) -> ActorStatus:
        """An actor's status."""
        status: ActorStatus = self._do(_Requests.status(actor))
        return status

    def journal(self, actor: ActorRef | str) -> list[JournalEntry]:
        """An actor's journal as readable entries (every page of `journal_pages`)."""
        return [item for page in self.journal_pages(actor) for item in page.items]

    def journal_pages(
        self, actor: ActorRef | str, *, limit: int | None = None, cursor: str | None = None
    ) -> Iterator[Page[JournalEntry]]:
        """An actor's journal a page at a time (``limit`` entries each, 1000 at most; from
        ``cursor``, a page's ``next``, if given)."""
        return self._pages(lambda c: _Requests.journal(actor, c, limit), cursor)

    def workers(self) -> list[WorkerInfo]:
        """The live workers sharing the server's journal (none for a SQLite journal)."""
        found: list[WorkerInfo] = self._do(_Requests.workers())
        return found

    def list_actors(
        self, type_name: str | None = None, state: str | None = None
    ) -> list[ActorStatus]:
        """Actors by type and state (every page of `actor_pages`)."""
        return [item for page in self.actor_pages(type_name, state) for item in page.items]

    def actor_pages(
        self,
        type_name: str | None = None,
        state: str | None = None,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Iterator[Page[ActorStatus]]:
        """Actors by type and state, a page at a time (``limit`` each, 1000 at most; from
        ``cursor``, a page's ``next``, if given). A page filtered by state may hold fewer,
        even none, and still be followed by more."""
        return self._pages(lambda c: _Requests.list_actors(type_name, state, c, limit), cursor)
