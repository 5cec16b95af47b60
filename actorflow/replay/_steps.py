"""Calling a step's function: on the loop or in a worker thread, with its idempotency key.

The rest of a step (journaling, retries, replay) is the turn's business (`actorflow.replay`);
this module only knows how to call user code once and what it may not do meanwhile. What
it learns about a function (is it async, does it take ``idempotency_key``) is cached per
function: reading a signature costs more than the rest of a step.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import anyio
import anyio.to_thread

from actorflow._context import current_step_key
from actorflow._errors import ContextMisuseError
from actorflow._values import return_annotation


def refuse_inside_step(actor_id: str, operation: str) -> None:
    """Raise `ContextMisuseError` if called from inside a step's function (while a step's
    function runs, in its task or its worker thread, its key is set)."""
    if current_step_key.get(None) is not None:
        raise ContextMisuseError(
            f"actor {actor_id}: {operation} was called inside a step's function (the function "
            f"given to ctx.run). On replay that function is not called at all (its journaled "
            f"result is handed back), so what it does through ctx cannot be replayed. Call "
            f"ctx from the handler instead: run the inner work as its own ctx.run step, and "
            f"pass values (ctx.now(), ctx.uuid(), ...) into the step as arguments."
        )


class Shape(NamedTuple):
    """What a step's function is: the function it really calls (through partials and
    bound methods), the arguments bound around it, its name and return annotation, whether
    it is async and whether it takes ``idempotency_key``."""

    target: Any
    bound: list[Any]
    name: str
    result_type: Any
    is_async: bool
    takes_key: bool


@functools.lru_cache(maxsize=2048)
def _plain_shape(target: Any) -> Shape:
    method = vars(type(target)).get("__call__") if not inspect.isroutine(target) else None
    is_async = inspect.iscoroutinefunction(target) or (
        method is not None and inspect.iscoroutinefunction(method)
    )
    try:
        takes_key = "idempotency_key" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        takes_key = False
    name = getattr(target, "__name__", None)
    return Shape(
        target,
        [],
        name if isinstance(name, str) else type(target).__name__,
        return_annotation(target),
        is_async,
        takes_key,
    )


def shape(fn: Callable[..., Any]) -> Shape:
    """The `Shape` of a step's function, cached per function. A `functools.partial`'s
    arguments count as bound inputs (outermost last), and a partial that binds the key
    takes no other; a bound method is seen as its function (its instance is not an input:
    only its type matters, and the method's name says it)."""
    if isinstance(fn, functools.partial):
        inner = shape(fn.func)
        layer = [list(fn.args), sorted(fn.keywords.items())]
        takes_key = inner.takes_key and "idempotency_key" not in fn.keywords
        return inner._replace(bound=[*inner.bound, layer], takes_key=takes_key)
    target = getattr(fn, "__func__", fn)  # a bound method: its function
    try:
        return _plain_shape(target)
    except TypeError:  # an unhashable callable object
        return _plain_shape.__wrapped__(target)


async def call_step(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    key: str,
    threads: anyio.CapacityLimiter,
    how: Shape | None = None,
) -> Any:
    """Call ``fn(*args)`` once as a step with idempotency key ``key``; return its result.

    An ``async def`` function (or a partial of one, or an object whose ``__call__`` is
    async) runs on the event loop. Anything else runs in a worker thread, at most
    ``threads`` at a time, so a blocking call (``time.sleep``, a sync HTTP or LLM client)
    never stalls the other agents; if it returns an awaitable, that is awaited on the
    loop. A thread still running when its turn is abandoned (shutdown past the grace
    budget) is left to finish alone: its result is dropped, and the step runs again later
    under the same key. ``how`` is ``shape(fn)``, if the caller has it.
    """
    is_async, takes_key = (how or shape(fn))[4:]
    token = current_step_key.set(key)
    try:
        if is_async:
            value = fn(*args, idempotency_key=key) if takes_key else fn(*args)
        else:
            call = functools.partial(fn, *args, idempotency_key=key) if takes_key else None
            # The worker thread runs in a copy of this context: it sees the key.
            value = await anyio.to_thread.run_sync(
                call or functools.partial(fn, *args), abandon_on_cancel=True, limiter=threads
            )
        if inspect.isawaitable(value):
            value = await value
        return value
    finally:
        current_step_key.reset(token)
