"""Calling a step's function: on the loop or in a worker thread, with its idempotency key.

The rest of a step (journaling, retries, replay) is the turn's business (`actorflow.replay._turn`);
this module only knows how to call user code once and what it may not do meanwhile.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

from actorflow._context import current_step_key
from actorflow._errors import ContextMisuseError
from actorflow._values import is_async_step

#: True while a step's function runs (in its task or its worker thread): ``ctx`` refuses
#: to be used there, since replay hands back the step's result without calling it.
in_step: contextvars.ContextVar[bool] = contextvars.ContextVar("actorflow_in_step", default=False)


def refuse_inside_step(actor_id: str, operation: str) -> None:
    """Raise `ContextMisuseError` if called from inside a step's function."""
    if in_step.get():
        raise ContextMisuseError(
            f"actor {actor_id}: {operation} was called inside a step's function (the function "
            f"given to ctx.run). On replay that function is not called at all (its journaled "
            f"result is handed back), so what it does through ctx cannot be replayed. Call "
            f"ctx from the handler instead: run the inner work as its own ctx.run step, and "
            f"pass values (ctx.now(), ctx.uuid(), ...) into the step as arguments."
        )


def _accepts_key(fn: Callable[..., Any]) -> bool:
    try:
        return "idempotency_key" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


async def call_step(
    fn: Callable[..., Any], args: tuple[Any, ...], key: str, threads: anyio.CapacityLimiter
) -> Any:
    """Call ``fn(*args)`` once as a step with idempotency key ``key``; return its result.

    An ``async def`` function (or a partial of one, or an object whose ``__call__`` is
    async) runs on the event loop. Anything else runs in a worker thread, at most
    ``threads`` at a time, so a blocking call (``time.sleep``, a sync HTTP or LLM client)
    never stalls the other agents; if it returns an awaitable, that is awaited on the
    loop. A thread still running when its turn is abandoned (shutdown past the grace
    budget) is left to finish alone: its result is dropped, and the step runs again later
    under the same key.
    """
    call = functools.partial(fn, *args, idempotency_key=key) if _accepts_key(fn) else None
    key_token = current_step_key.set(key)
    guard = in_step.set(True)
    try:
        if is_async_step(fn):
            value = call() if call is not None else fn(*args)
        else:
            target = call if call is not None else functools.partial(fn, *args)
            # The worker thread runs in a copy of this context: it sees the key and the guard.
            value = await anyio.to_thread.run_sync(target, abandon_on_cancel=True, limiter=threads)
        if inspect.isawaitable(value):
            value = await value
        return value
    finally:
        in_step.reset(guard)
        current_step_key.reset(key_token)
