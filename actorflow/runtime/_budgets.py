"""Budget ledgers on the journal: reservations appended atomically with the actor's
decision, at the ledger position the decision read (re-read and decided again when
another writer got there first), and the figures the status API shows.

A ledger is the plain journal stream ``budget/<root invocation id>`` (`journal/` knows
nothing of budgets): `Opened` (the limits), then `Reserved` and `Settled` records.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import TYPE_CHECKING

from actorflow._budget import (
    LEDGER_CODEC,
    ZERO,
    Amount,
    Budget,
    BudgetStatus,
    Closed,
    Decision,
    Grant,
    LedgerView,
    Opened,
    Reserved,
    Settled,
    decide,
    ledger_stream,
    status_of,
)
from actorflow._events import ACTOR_CODEC, StepCompleted
from actorflow.replay._budget_gate import release_all
from journal import ConflictError, Store, StreamAppend

if TYPE_CHECKING:
    from actorflow._actor import Actor
    from actorflow.replay._turn import Turn
    from actorflow.runtime._host import ActorHost
    from actorflow.runtime._runtime import Runtime

#: Ledgers an actor keeps folded in memory between reservations (the most recent ones).
KEEP_VIEWS = 8
#: Reservations decided again after losing a race on the ledger, before the actor gives
#: up on this activation (the runtime then replays it).
MAX_RACES = 1000


def root_grant(budget: Budget | None, invocation: str, runtime: Runtime) -> Grant | None:
    """The budget of a root invocation (a ledger of its own), if it was given one."""
    if budget is None:
        return None
    if not isinstance(budget, Budget):
        raise TypeError(f"budget= takes an actorflow.Budget, got {budget!r}")
    return Grant(ledger_stream(invocation), budget, runtime.clock.now())


def default_grant(cls: type[Actor] | None, invocation: str, runtime: Runtime) -> Grant | None:
    """The budget an actor type declares for invocations that come with none."""
    budget = getattr(cls, "__actorflow_budget__", None)
    return root_grant(budget, invocation, runtime) if budget is not None else None


class _LedgerMoved(Exception):
    """The ledger moved past the position a reservation was decided at."""


async def read(store: Store, ledger: str, view: LedgerView | None = None) -> LedgerView:
    """``view`` (or a new one) brought up to the ledger's end."""
    view = view if view is not None else LedgerView()
    async for batch in store.read_batches(ledger, view.position + 1):
        for record in batch:
            view.apply(LEDGER_CODEC.decode(record))
        view.position = batch[-1].position
    return view


def _views(host: ActorHost) -> collections.OrderedDict[str, LedgerView]:
    views: collections.OrderedDict[str, LedgerView] | None = getattr(host, "_ledgers", None)
    if views is None:
        views = host._ledgers = collections.OrderedDict()  # type: ignore[attr-defined]
    return views


async def reserve(
    host: ActorHost,
    grant: Grant,
    hold: str,
    asked: Amount,
    open_ended: bool,
    entry: Callable[[Decision], StepCompleted],
) -> Decision:
    """Decide against the ledger as it is now; journal the decision and, if it fits, the
    reservation in one transaction expecting the ledger where the decision read it."""
    views = _views(host)
    view = views.pop(grant.ledger, None)
    for _ in range(MAX_RACES):
        try:
            view = await read(host.store, grant.ledger, view)
        except Exception as exc:
            raise host._failed(exc) from exc
        decision = decide(grant, view, asked, open_ended, host.clock.now())
        if not decision.ok:
            await host.journal([entry(decision)])
            host.runtime.metrics.budget_refused(host.type_name, decision.dimension)
            break
        at = host.clock.now()
        records = [LEDGER_CODEC.encode(Reserved(hold, asked, at))]
        if view.position == 0:  # the ledger's first record says what its limits are
            records.insert(0, LEDGER_CODEC.encode(Opened(grant.limit, grant.start)))
        part = StreamAppend(grant.ledger, tuple(records), expected_position=view.position)
        try:
            await _append(host, entry(decision), part)
        except _LedgerMoved:
            continue
        view.position += len(records)
        view.apply(Reserved(hold, asked, at))
        if len(records) > 1:
            view.limit = grant.limit
        break
    else:
        raise host._failed(RuntimeError(f"ledger {grant.ledger} kept moving; retrying later"))
    views[grant.ledger] = view
    while len(views) > KEEP_VIEWS:
        views.popitem(last=False)
    return decision


async def _append(host: ActorHost, entry: StepCompleted, part: StreamAppend) -> None:
    """`ActorHost.journal` for one entry with the ledger part, except that a conflict on
    the ledger alone (nothing written) raises `_LedgerMoved` so it can be decided again."""
    if host.failure is not None:
        raise host.failure
    records = (ACTOR_CODEC.encode(entry),)
    expected = host._reserved
    host._reserved = end = expected + 1
    own = StreamAppend(host.stream, records, expected, host._epoch)
    try:
        await host.store.append_many([own, part])
    except ConflictError as exc:
        if exc.stream == part.stream and host._reserved == end:
            host._reserved = expected  # nothing was written, and nothing was queued after
            raise _LedgerMoved() from exc
        raise host._failed(exc) from exc
    except Exception as exc:
        raise host._failed(exc) from exc
    if end > host._position:
        host._position = end
    host.runtime.metrics.appends += 1


async def at_end(host: ActorHost, turn: Turn) -> list[StreamAppend]:
    """The ledger appends of an invocation's end, journaled with it: the holds its turn
    still has are released unspent; and an invocation with a carved budget closes its
    ledger and settles its parent's hold with what its tree spent, plus what steps still
    running in it hold (counted in full: they can spend no more than that)."""
    grant = turn.budget
    if grant is None or not grant.parent or grant.ledger != ledger_stream(turn.invocation):
        return release_all(turn)
    releasing = {turn.key_for(step) for step in turn.holds}
    try:
        view = await read(host.store, grant.ledger)
    except Exception as exc:
        raise host._failed(exc) from exc
    at = host.clock.now()
    own = [LEDGER_CODEC.encode(Settled(hold, ZERO, at)) for hold in sorted(releasing)]
    if view.position == 0:
        own.insert(0, LEDGER_CODEC.encode(Opened(grant.limit, grant.start)))
    own.append(LEDGER_CODEC.encode(Closed(at)))
    turn.holds.clear()
    counted = view.spent
    for hold, amount in view.held.items():
        if hold not in releasing:
            counted = counted + amount
    settle = LEDGER_CODEC.encode(Settled(grant.hold, counted, at))
    return [
        StreamAppend(grant.ledger, tuple(own), expected_position=view.position),
        StreamAppend(grant.parent, (settle,)),
    ]


def parts(amount: Amount) -> list[tuple[str, int]]:
    """An amount's dimensions as (name, amount) (cost as ``cost_<currency>``)."""
    cost = f"cost_{amount.currency}" if amount.currency else "cost"
    return [
        ("tokens", amount.tokens),
        (cost, amount.micros),
        ("tool_calls", amount.tool_calls),
        ("llm_calls", amount.llm_calls),
    ]


async def status(store: Store, ledger: str) -> BudgetStatus | None:
    """A ledger's figures (None: nothing was ever reserved from it)."""
    view = await read(store, ledger)
    if view.position == 0:
        return None
    return status_of(ledger, view)
