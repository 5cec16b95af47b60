"""`ctx.gather` and `ctx.first`: concurrent branches with deterministic step ids.

Branch ``"4.2"`` is the second awaitable of the gather that was the handler's step 4; its
steps are ``"4.2.1"``, ``"4.2.2"``, ... whatever order branches complete in, live or on
replay. Branches run in an anyio task group, each in a cancel scope of its own, so a
journal write under way in a cancelled branch completes (writes are shielded) and the
bookkeeping after it happens: what the journal holds and what the turn did agree.

`ctx.first` journals its winner. A losing branch starts nothing once the winner is
decided; on replay the losers run again as far as the journal holds them (so the events
they consumed and the compensations they registered count) and stop where it ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from actorflow._errors import JournalFailure, NonDeterminismError, Suspended, TurnCancelled
from actorflow._events import StepCompleted
from actorflow._values import encode

if TYPE_CHECKING:
    from actorflow.replay._turn import Turn

#: The branch of the running task ("" for the handler itself; "4.2" for the second branch
#: of the gather that was step 4).
_branch: contextvars.ContextVar[str] = contextvars.ContextVar("actorflow_branch", default="")


class _Lost(BaseException):
    """Ends a branch of `ctx.first` that lost the race where it would go on live."""


def _first_error(outcomes: list[tuple[str, Any]]) -> BaseException | None:
    """What a finished gather raises: a control-flow signal before any error, then the
    first error in argument order."""
    for kind, value in outcomes:
        if kind == "signal":
            return value  # type: ignore[no-any-return]
    for kind, value in outcomes:
        if kind == "error":
            return value  # type: ignore[no-any-return]
    return None


async def gather(turn: Turn, awaitables: tuple[Awaitable[Any], ...], first: bool) -> Any:
    """Run awaitables as branches ``<step>.1``, ``<step>.2``, ...; see Context.gather.

    For ``first``, the branches that lose the race are cancelled live; on replay they
    run again as far as the journal holds them (handing back their journaled steps:
    the events they consumed, the compensations they registered) and stop where their
    journal ends, so replay accounts for everything the live run journaled.
    """
    branch, step = turn._next("ctx.gather/ctx.first")
    names = [f"{step}.{index}" for index in range(1, len(awaitables) + 1)]
    winner: int | None = None
    won_at = 0.0
    if first:
        rec = turn._take(step, "first", "first")
        if rec is not None and isinstance(rec.outcome, StepCompleted):
            winner = int(msgspec.msgpack.decode(rec.outcome.value, type=int))
            won_at = rec.outcome.at
            turn._lost.update(name for i, name in enumerate(names) if i != winner)
    outcomes: list[tuple[str, Any]] = [("", None)] * len(names)
    scopes = [anyio.CancelScope() for _ in names]
    send, receive = anyio.create_memory_object_stream[int](len(names))
    now = turn.now()
    failed: JournalFailure | None = None
    with send, receive:
        async with anyio.create_task_group() as group:
            for index, awaitable in enumerate(awaitables):
                group.start_soon(
                    _run_branch,
                    turn,
                    names[index],
                    now,
                    awaitable,
                    scopes[index],
                    outcomes,
                    index,
                    send,
                )
            if first and winner is None:
                try:
                    winner, won_at = await _race(turn, step, names, outcomes, scopes, receive)
                except JournalFailure as exc:  # raised below, not from inside the group
                    failed = exc
                    for scope in scopes:
                        scope.cancel()
    if failed is not None:
        raise failed
    if winner is None:  # gather, or a race that stopped before it had a winner
        error = _first_error(outcomes)
        if error is not None:
            raise error
        if first:
            turn._live(branch)  # the race stopped: the turn is suspended or cancelled
            raise Suspended()  # not reached: _live raised
        for name in names:
            turn._advance(branch, turn._times.get(name, 0.0))
        return [value for _, value in outcomes]
    turn._advance(branch, won_at)
    kind, value = outcomes[winner]
    signal = _first_error([o for o in outcomes if o[0] == "signal"])
    if signal is not None:
        raise signal
    if kind == "error":
        raise value
    return winner, value


async def _race(
    turn: Turn,
    step: str,
    names: list[str],
    outcomes: list[tuple[str, Any]],
    scopes: list[anyio.CancelScope],
    finished: Any,
) -> tuple[int | None, float]:
    """Wait for the first branch to end with a value or an error; journal it as the
    winner, and cancel the others (which may journal nothing more)."""
    while True:
        await finished.receive()
        ended = [i for i, (kind, _) in enumerate(outcomes) if kind in ("ok", "error")]
        signalled = any(kind == "signal" for kind, _ in outcomes)
        if ended or signalled:
            break
        if all(kind for kind, _ in outcomes):
            return None, 0.0
    if signalled or turn.host.suspending.is_set() or turn.cancellable:
        for scope in scopes:
            scope.cancel()
        return None, 0.0
    winner = min(ended)
    turn._lost.update(name for i, name in enumerate(names) if i != winner)
    for index, scope in enumerate(scopes):
        if index != winner:
            scope.cancel()
    at = turn.host.clock.now()
    value = msgspec.Raw(encode(winner))
    await turn._write([StepCompleted(turn.turn, step, "first", "first", value, at=at)])
    return winner, at


async def _run_branch(
    turn: Turn,
    name: str,
    now: float,
    awaitable: Awaitable[Any],
    scope: anyio.CancelScope,
    outcomes: list[tuple[str, Any]],
    index: int,
    finished: Any,
) -> None:
    _branch.set(name)
    turn._owners[name] = asyncio.current_task()
    turn._times[name] = now
    try:
        with scope:
            outcomes[index] = ("ok", await awaitable)
        if scope.cancelled_caught:
            outcomes[index] = ("cancelled", None)
    except _Lost:
        outcomes[index] = ("lost", None)
    except (NonDeterminismError, JournalFailure, Suspended, TurnCancelled) as exc:
        outcomes[index] = ("signal", exc)
    except Exception as exc:
        outcomes[index] = ("error", exc)
    finally:
        if inspect.iscoroutine(awaitable) and inspect.getcoroutinestate(awaitable) == (
            inspect.CORO_CREATED
        ):
            awaitable.close()  # cancelled before it started
        finished.send_nowait(index)
