"""`ActorHandle`: a typed reference to one actor of an embedded `Runtime`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from actorflow._actor import Actor, check_key
from actorflow._context import ActorRef, handler_name
from actorflow.runtime._status import ActorStatus, InvocationStatus

if TYPE_CHECKING:
    from actorflow.runtime._runtime import Runtime

A = TypeVar("A", bound=Actor)
P = ParamSpec("P")
R = TypeVar("R")


class ActorHandle(Generic[A]):
    """A typed reference to one actor, from `Runtime.ref`.

    `options` returns a handle whose sends carry an idempotency key or a deadline:
    ``await runtime.ref(Checkout, "o-7").options(idempotency_key="o-7").call(...)``.
    """

    def __init__(
        self,
        runtime: Runtime,
        cls: type[A],
        key: str,
        idempotency_key: str | None = None,
        deadline: float | None = None,
    ) -> None:
        self._runtime = runtime
        self._cls = cls
        self.ref = ActorRef(cls.__actorflow_name__, check_key(key))
        self.idempotency_key = idempotency_key
        self.deadline = deadline

    @property
    def id(self) -> str:
        """``Type/key``."""
        return self.ref.id

    def options(
        self, *, idempotency_key: str | None = None, deadline: float | None = None
    ) -> ActorHandle[A]:
        """This handle, sending with ``idempotency_key`` (a retry with the same key and
        the same request gets the first invocation, never a second one) and ``deadline``
        (seconds for the whole turn)."""
        return ActorHandle(self._runtime, self._cls, self.ref.key, idempotency_key, deadline)

    async def call(
        self,
        handler: Callable[Concatenate[A, P], Coroutine[Any, Any, R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Send a message and wait for the handler's result (its error: `HandlerFailed`)."""
        invocation = await self._send(handler_name(handler), args, kwargs)
        result: R = await self._runtime.result(invocation)
        return result

    async def send(
        self,
        handler: Callable[Concatenate[A, P], Coroutine[Any, Any, Any]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> str:
        """Send a message without waiting; return its invocation id (for `Runtime.result`)."""
        return await self._send(handler_name(handler), args, kwargs)

    async def _send(self, handler: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return await self._runtime.send(
            self.ref,
            handler,
            args,
            kwargs,
            idempotency_key=self.idempotency_key,
            deadline=self.deadline,
        )

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
        """Run a `@query` method on the actor's state as of its last step boundary (without
        waiting for its running turn); its result."""
        answer = await self._runtime.query(self.ref, handler_name(query), args, kwargs)
        return answer.result

    async def deliver(self, name: str, payload: Any = None) -> None:
        """Deliver the named event (for ``ctx.wait_for``)."""
        await self._runtime.deliver(self.ref, name, payload)

    async def status(self) -> ActorStatus:
        """The actor's status."""
        return await self._runtime.status(self.ref)

    async def invocations(self) -> list[InvocationStatus]:
        """The actor's invocations: running and queued ones first, then ended ones, newest
        first."""
        return await self._runtime.invocations(self.ref)
