"""Durable budgets: the limits an invocation tree spends from, and the ledger that counts.

A `Budget` is attached to a root invocation (HTTP header, client, CLI, or an actor type's
default); its ledger is the journal stream ``budget/<root invocation id>``. Steps declare
what they consume (`Spend`): ``reserve=`` before they run, ``spend=`` from their result.
Each reservation is a decision journaled in the actor's stream and appended to the ledger
in the same transaction, at the ledger position its decision read; each settlement is
appended with the step's result. Amounts are integers (cost in millionths of the currency
unit), so sums are exact. See docs/budgets.md.
"""

from __future__ import annotations

import decimal
import math
import re
from typing import Any

import msgspec

from actorflow._errors import ActorflowError
from journal import Codec

#: The largest count (tokens, calls) or cost (in currency units) a budget or spend takes.
MAX_AMOUNT = 10**15
#: The longest wall time a budget takes: ten years, in seconds.
MAX_WALL_TIME = 10 * 365 * 86400.0
#: Cost is counted in millionths of the currency unit.
MICROS = 1_000_000
DIMENSIONS = ("tokens", "cost", "tool_calls", "llm_calls", "wall_time")
_MONEY = re.compile(r"([A-Z]{3}) ?([0-9]{1,16}(?:\.[0-9]{1,6})?)")


class BudgetExceeded(ActorflowError):
    """A step's reservation does not fit in its invocation tree's budget: raised in the
    handler before the step runs (at the same point on every replay). Catch it to finish
    with what the turn has.

    ``dimension`` is the first dimension that does not fit; ``limit``, ``spent``,
    ``reserved`` (held by steps in flight) and ``asked`` are in that dimension's unit
    (cost as ``"USD 2.50"``, wall time in seconds)."""

    def __init__(
        self, dimension: str, limit: str, spent: str, reserved: str, asked: str, ledger: str = ""
    ) -> None:
        self.dimension = dimension
        self.limit = limit
        self.spent = spent
        self.reserved = reserved
        self.asked = asked
        self.ledger = ledger
        super().__init__(
            f"budget exceeded on {dimension}: limit {limit}, spent {spent}, reserved by steps "
            f"in flight {reserved}, asked {asked} (ledger {ledger})"
        )

    def __reduce__(self) -> Any:
        args = (self.dimension, self.limit, self.spent, self.reserved, self.asked, self.ledger)
        return (BudgetExceeded, args)


def parse_money(text: str, what: str = "cost") -> tuple[str, int]:
    """``"USD 2.50"`` as (currency, millionths); ValueError saying why otherwise."""
    match = _MONEY.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{what}={text!r} is not an amount of money: write a three-letter upper-case "
            f"currency code and a decimal number >= 0 with at most 6 decimals, e.g. 'USD 2.50'"
        )
    micros = int(decimal.Decimal(match.group(2)) * MICROS)
    if micros > MAX_AMOUNT * MICROS:
        raise ValueError(f"{what}={text!r} is over the largest amount taken ({MAX_AMOUNT:,})")
    return match.group(1), micros


def format_money(currency: str, micros: int) -> str:
    """Millionths of ``currency`` as ``"USD 2.5"`` (no trailing zeros)."""
    units = (decimal.Decimal(micros) / MICROS).normalize()
    return f"{currency} {units:f}"


def _count(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what}={value!r} must be a whole number")
    if not 0 <= value <= MAX_AMOUNT:
        raise ValueError(f"{what}={value!r} must be between 0 and {MAX_AMOUNT:,}")


class Budget(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """Limits for an invocation and everything it calls (None: no limit on that one).

    ``tokens``, ``tool_calls`` and ``llm_calls`` are counts; ``cost`` is money as
    ``"USD 2.50"``; ``wall_time`` is seconds from the root invocation's acceptance."""

    tokens: int | None = None
    cost: str | None = None
    tool_calls: int | None = None
    llm_calls: int | None = None
    wall_time: float | None = None

    def __post_init__(self) -> None:
        for name in ("tokens", "tool_calls", "llm_calls"):
            value = getattr(self, name)
            if value is not None:
                _count(value, f"Budget({name}")
        if self.cost is not None:
            parse_money(self.cost, "Budget(cost")
        wall = self.wall_time
        if wall is not None and (
            isinstance(wall, bool)
            or not isinstance(wall, int | float)
            or not math.isfinite(wall)
            or not 0 < wall <= MAX_WALL_TIME
        ):
            raise ValueError(
                f"Budget(wall_time={wall!r}) must be a number of seconds > 0 and "
                f"<= {MAX_WALL_TIME:g}"
            )
        if all(getattr(self, name) is None for name in DIMENSIONS):
            raise ValueError("a Budget limits at least one of: " + ", ".join(DIMENSIONS))

    @classmethod
    def parse(cls, text: str) -> Budget:
        """A budget written as ``tokens=1000; cost=USD 2.50; llm_calls=10; wall_time=60``
        (the ``Actorflow-Budget`` header and the CLI's ``--budget``); ValueError saying
        what is wrong."""
        if not isinstance(text, str) or len(text) > 1000:
            raise ValueError("a budget is a short text such as 'tokens=1000; cost=USD 2.50'")
        fields: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(";"))):
            name, equals, value = (piece.strip() for piece in item.partition("="))
            if not equals or name not in DIMENSIONS:
                raise ValueError(
                    f"budget item {item!r}: write name=value with a name among "
                    + ", ".join(DIMENSIONS)
                )
            if name in fields:
                raise ValueError(f"budget item {name!r} is given twice")
            if name == "cost":
                fields[name] = value
            elif name == "wall_time":
                try:
                    fields[name] = float(value)
                except ValueError:
                    raise ValueError(f"wall_time={value!r} is not a number of seconds") from None
            elif re.fullmatch(r"[0-9]{1,16}", value):
                fields[name] = int(value)
            else:
                raise ValueError(f"{name}={value!r} must be a whole number >= 0")
        return cls(**fields)

    def render(self) -> str:
        """This budget in the form `parse` reads."""
        return "; ".join(
            f"{name}={getattr(self, name)}"
            for name in DIMENSIONS
            if getattr(self, name) is not None
        )


class Spend(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a step consumes (or is estimated to): counts, and cost as ``"USD 0.002"``."""

    tokens: int = 0
    cost: str | None = None
    tool_calls: int = 0
    llm_calls: int = 0

    def __post_init__(self) -> None:
        for name in ("tokens", "tool_calls", "llm_calls"):
            _count(getattr(self, name), f"Spend({name}")
        if self.cost is not None:
            parse_money(self.cost, "Spend(cost")


class Amount(msgspec.Struct, array_like=True, frozen=True):
    """Amounts as the ledger keeps them: cost in millionths of ``currency``."""

    tokens: int = 0
    micros: int = 0
    tool_calls: int = 0
    llm_calls: int = 0
    currency: str = ""

    def __add__(self, other: Amount) -> Amount:
        return Amount(
            self.tokens + other.tokens,
            self.micros + other.micros,
            self.tool_calls + other.tool_calls,
            self.llm_calls + other.llm_calls,
            self.currency or other.currency,
        )

    def __sub__(self, other: Amount) -> Amount:
        return Amount(
            self.tokens - other.tokens,
            self.micros - other.micros,
            self.tool_calls - other.tool_calls,
            self.llm_calls - other.llm_calls,
            self.currency or other.currency,
        )

    def as_spend(self) -> Spend:
        """This amount as a `Spend` (negative parts shown as 0)."""
        cost = format_money(self.currency, max(0, self.micros)) if self.currency else None
        return Spend(max(0, self.tokens), cost, max(0, self.tool_calls), max(0, self.llm_calls))


ZERO = Amount()


def amount_of(spend: Spend) -> Amount:
    """A `Spend` as the ledger counts it."""
    if not isinstance(spend, Spend):
        raise TypeError(f"a step's consumption is an actorflow.Spend, got {spend!r}")
    currency, micros = parse_money(spend.cost) if spend.cost is not None else ("", 0)
    return Amount(spend.tokens, micros, spend.tool_calls, spend.llm_calls, currency)


class Grant(msgspec.Struct, frozen=True):
    """What an invocation spends from: the ledger stream of its tree's root, the root's
    limits and when the root was accepted (wall time counts from there).

    A carved sub-budget (``ctx.call(..., budget=...)``) has a ledger of its own, and
    ``parent``/``hold``: the caller's ledger and the reservation there that the carved
    invocation settles when it ends."""

    ledger: str
    limit: Budget
    start: float
    parent: str = ""
    hold: str = ""


def ledger_stream(root_invocation: str) -> str:
    """The journal stream of the budget of the tree rooted at ``root_invocation``."""
    return f"budget/{root_invocation}"


# -- the ledger stream --------------------------------------------------------------------


class Opened(msgspec.Struct, tag="open", frozen=True):
    """The ledger's first record, written with its first reservation: the tree's limits."""

    limit: Budget
    start: float


class Reserved(msgspec.Struct, tag="reserve", frozen=True):
    """A step (``hold``: its idempotency key) holds ``amount`` until it settles."""

    hold: str
    amount: Amount
    at: float


class Settled(msgspec.Struct, tag="settle", frozen=True):
    """The hold ends, and ``spent`` is spent (zero: released unspent). A hold settles once:
    a later settlement of it is ignored."""

    hold: str
    spent: Amount
    at: float


class Closed(msgspec.Struct, tag="close", frozen=True):
    """A carved ledger's invocation ended and settled its parent's hold: nothing more is
    reserved from it (what it still held was counted in the parent in full)."""

    at: float


LedgerEntry = Opened | Reserved | Settled | Closed
LEDGER_CODEC: Codec[LedgerEntry] = Codec(LedgerEntry)


class Decision(msgspec.Struct, frozen=True, omit_defaults=True):
    """A reservation's outcome as journaled in the actor's stream (value of its
    ``budget`` step): ``ok``, or the dimension that did not fit and its figures."""

    ok: bool
    dimension: str = ""
    limit: str = ""
    spent: str = ""
    reserved: str = ""
    asked: str = ""
    ledger: str = ""

    def error(self) -> BudgetExceeded:
        """The error a refused reservation raises in the handler."""
        return BudgetExceeded(
            self.dimension, self.limit, self.spent, self.reserved, self.asked, self.ledger
        )


class LedgerView:
    """A ledger folded: what is spent, what steps in flight hold, up to ``position``."""

    def __init__(self) -> None:
        self.position = 0
        self.limit: Budget | None = None
        self.spent = ZERO
        self.held: dict[str, Amount] = {}
        self.settled: set[str] = set()
        self.closed = False

    def apply(self, entry: LedgerEntry) -> None:
        """Fold one more ledger record in."""
        if isinstance(entry, Opened):
            self.limit = entry.limit
        elif isinstance(entry, Closed):
            self.closed = True
        elif isinstance(entry, Reserved):
            if entry.hold not in self.settled:
                self.held[entry.hold] = entry.amount
        elif entry.hold not in self.settled:
            self.settled.add(entry.hold)
            self.held.pop(entry.hold, None)
            self.spent = self.spent + entry.spent

    @property
    def reserved(self) -> Amount:
        """What steps in flight hold."""
        total = ZERO
        for amount in self.held.values():
            total = total + amount
        return total


def carve_amount(carve: Budget, parent: Budget) -> Amount:
    """What a carved sub-budget reserves from its parent: its limits, which must cover
    every dimension the parent limits (else the parent could not count its spending)."""
    missing = [
        name
        for name in ("tokens", "cost", "tool_calls", "llm_calls")
        if getattr(parent, name) is not None and getattr(carve, name) is None
    ]
    if missing:
        raise ValueError(
            f"a carved budget must limit what its parent limits; {carve.render()!r} leaves "
            f"out {', '.join(missing)} (the parent has {parent.render()!r})"
        )
    currency, micros = parse_money(carve.cost) if carve.cost is not None else ("", 0)
    if parent.cost is not None and currency != parse_money(parent.cost)[0]:
        raise ValueError(f"a carved budget counts cost in its parent's currency ({parent.cost})")
    return Amount(carve.tokens or 0, micros, carve.tool_calls or 0, carve.llm_calls or 0, currency)


def _figures(limit: Budget, currency: str) -> list[tuple[str, int]]:
    out = []
    for name in ("tokens", "tool_calls", "llm_calls"):
        value = getattr(limit, name)
        if value is not None:
            out.append((name, value))
    if limit.cost is not None:
        out.append(("cost", parse_money(limit.cost)[1]))
    return out


def _part(amount: Amount, name: str) -> int:
    return amount.micros if name == "cost" else int(getattr(amount, name))


def decide(grant: Grant, view: LedgerView, asked: Amount, open_ended: bool, now: float) -> Decision:
    """Whether a step asking ``asked`` may run: every limited dimension must keep
    ``spent + reserved + asked <= limit``, and a step whose consumption is only known from
    its result (``open_ended``) needs something left in each. Wall time: the tree's age
    must be under its limit."""
    limit = grant.limit
    currency = parse_money(limit.cost)[0] if limit.cost is not None else ""
    if asked.micros and currency and asked.currency != currency:
        raise ValueError(
            f"a step reserves cost in {asked.currency}, but its budget counts {currency}"
        )
    held = view.reserved
    if view.closed:
        ended = "the carved budget's invocation has ended"
        return Decision(False, "closed", ended, "", "", "", grant.ledger)
    for name, cap in _figures(limit, currency):
        spent, reserved, want = _part(view.spent, name), _part(held, name), _part(asked, name)
        if spent + reserved + want > cap or (open_ended and spent + reserved >= cap):
            shown = (lambda v: format_money(currency, v)) if name == "cost" else str
            return Decision(
                False, name, shown(cap), shown(spent), shown(reserved), shown(want), grant.ledger
            )
    if limit.wall_time is not None and now - grant.start >= limit.wall_time:
        elapsed = f"{now - grant.start:.3f}"
        return Decision(False, "wall_time", f"{limit.wall_time:g}", elapsed, "0", "0", grant.ledger)
    return Decision(True, ledger=grant.ledger)


class BudgetStatus(msgspec.Struct, frozen=True):
    """A budget's figures: its limits, what is spent, what steps in flight hold, and what
    remains (limit less spent and held; None where there is no limit)."""

    ledger: str
    limit: Budget | None
    spent: Spend
    reserved: Spend
    remaining: dict[str, str | int | float | None]
    holds: int


def status_of(ledger: str, view: LedgerView) -> BudgetStatus:
    """The figures of a folded ledger."""
    held, limit = view.reserved, view.limit
    remaining: dict[str, str | int | float | None] = {}
    if limit is not None:
        currency = parse_money(limit.cost)[0] if limit.cost is not None else ""
        for name, cap in _figures(limit, currency):
            left = cap - _part(view.spent, name) - _part(held, name)
            remaining[name] = format_money(currency, left) if name == "cost" else left
    return BudgetStatus(
        ledger, limit, view.spent.as_spend(), held.as_spend(), remaining, len(view.held)
    )
