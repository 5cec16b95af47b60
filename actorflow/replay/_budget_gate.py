"""A step's budget: its reservation decided (or replayed) before it runs, its settlement
appended with its outcome, and the holds a turn leaves released with its end.

The decision is a step of its own in the actor's journal, ``<step id>~budget`` (kind
``budget``), whose value is a `Decision`: replay hands it back, so `BudgetExceeded` is
raised at the same point on every run. Live, the host decides against the ledger and
journals the decision and the ledger's `Reserved` record in one transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from actorflow._budget import (
    LEDGER_CODEC,
    ZERO,
    Amount,
    Budget,
    Decision,
    Grant,
    Settled,
    amount_of,
    carve_amount,
    ledger_stream,
)
from actorflow._context import StepOptions
from actorflow._events import StepCompleted
from actorflow._values import encode
from actorflow.replay._recorded import Recorded
from journal import StreamAppend

if TYPE_CHECKING:
    from actorflow.replay._turn import Turn

#: The journaled step kind of a reservation decision.
KIND = "budget"


def gated(turn: Turn, options: StepOptions) -> bool:
    """Whether this step reserves from a budget: it declares what it consumes and its
    invocation has a budget."""
    return turn.budget is not None and (options.reserve is not None or options.spend is not None)


def holds() -> dict[str, Amount]:
    """A turn's reservations not settled yet, by step id (`Turn.holds`)."""
    return {}


async def gate(turn: Turn, branch: str, step: str, name: str, options: StepOptions) -> None:
    """Reserve the step's consumption, or raise `BudgetExceeded` (journaled, replayed)."""
    grant = turn.budget
    assert grant is not None
    asked = amount_of(options.reserve) if options.reserve is not None else ZERO
    open_ended = options.reserve is None
    decision = await _decide(turn, branch, step, name, grant, asked, open_ended)
    if not decision.ok:
        raise decision.error()
    found = turn.recorded._steps.get(step)
    if found is None or found.outcome is None:  # else its settlement is journaled with it
        turn.holds[step] = asked


async def for_message(
    turn: Turn, branch: str, step: str, name: str, invocation: str, carve: Budget | None
) -> Grant | None:
    """What a message's invocation spends from: the sender's budget, or (``carve``) a
    sub-budget with a ledger of its own, reserved in full from the sender's (raising
    `BudgetExceeded` if it does not fit) and settled by the invocation when it ends."""
    if carve is None:
        return turn.budget
    now = turn.host.clock.now()
    parent = turn.budget
    if parent is None:  # nothing to carve from: the invocation is a root of its own
        return Grant(ledger_stream(invocation), carve, now)
    asked = carve_amount(carve, parent.limit)
    decision = await _decide(turn, branch, step, name, parent, asked, False)
    if not decision.ok:
        raise decision.error()
    limit, start = carve, now
    if carve.wall_time is None and parent.limit.wall_time is not None:
        limit = msgspec.structs.replace(carve, wall_time=parent.limit.wall_time)
        start = parent.start
    return Grant(ledger_stream(invocation), limit, start, parent.ledger, turn.key_for(step))


def take_send(turn: Turn, step: str, name: str, fp: int, carve: Budget | None) -> Recorded | None:
    """`Turn._take` of a send step; replaying a send that carved a budget, the carve's
    decision (journaled before it) is taken with it."""
    rec = turn._take(step, name, "send", fp)
    replayed = carve is not None and rec is not None and rec.outcome is not None
    if replayed and turn.recorded.has(f"{step}~{KIND}"):
        turn._take(f"{step}~{KIND}", name, KIND)
    return rec


async def _decide(
    turn: Turn,
    branch: str,
    step: str,
    name: str,
    grant: Grant,
    asked: Amount,
    open_ended: bool,
) -> Decision:
    decision_step = f"{step}~{KIND}"
    rec = turn._take(decision_step, name, KIND)
    if rec is not None and isinstance(rec.outcome, StepCompleted):
        decision = msgspec.msgpack.decode(rec.outcome.value, type=Decision)
        turn._advance(branch, rec.outcome.at)
    else:
        turn._live(branch)
        hold = turn.key_for(step)
        at = turn.host.clock.now()

        def entry(decided: Decision) -> StepCompleted:
            value = msgspec.Raw(encode(decided))
            return StepCompleted(turn.turn, decision_step, name, KIND, value, at=at)

        with anyio.CancelScope(shield=True):  # the decision and the ledger agree
            decision = await turn.host.reserve(grant, hold, asked, open_ended, entry, turn.actor_id)
        turn._advance(branch, at)
    return decision


async def settlement(
    turn: Turn, where: tuple[str, str, str, int, int], options: StepOptions, value: Any
) -> list[StreamAppend]:
    """The ledger append that settles a step that completed with ``value``: what
    ``spend(value)`` says, else its reservation. If ``spend`` fails, so does the step
    (its hold is released with its error). ``where``: the step's branch, id, name,
    fingerprint and attempts."""
    branch, step, name, fp, attempts = where
    asked = turn.holds.get(step)
    if asked is None:
        return []
    try:
        spent = amount_of(options.spend(value)) if options.spend is not None else asked
    except Exception as exc:
        raise await turn._failed(branch, step, name, "run", fp, exc, attempts) from exc
    del turn.holds[step]
    turn.host.spent(spent)
    return [_settle(turn, step, spent)]


def release(turn: Turn, step: str) -> list[StreamAppend]:
    """The ledger append that releases the hold of a step that failed (nothing spent)."""
    if not turn.holds or turn.holds.pop(step, None) is None:
        return []
    return [_settle(turn, step, ZERO)]


def release_all(turn: Turn) -> list[StreamAppend]:
    """The ledger append that releases every hold the turn still has (its end)."""
    if not turn.holds or turn.budget is None:
        return []
    at = turn.host.clock.now()
    records = tuple(
        LEDGER_CODEC.encode(Settled(turn.key_for(step), ZERO, at)) for step in sorted(turn.holds)
    )
    turn.holds.clear()
    return [StreamAppend(turn.budget.ledger, records)]


def _settle(turn: Turn, step: str, spent: Amount) -> StreamAppend:
    assert turn.budget is not None
    at = turn.host.clock.now()
    record = LEDGER_CODEC.encode(Settled(turn.key_for(step), spent, at))
    return StreamAppend(turn.budget.ledger, (record,))
