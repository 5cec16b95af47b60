"""A payments agent: charge, reserve, ship, as a saga with compensations.

Run it (journal in ``payments.db``; the fake bank and warehouse in ``ledger.db``)::

    python -m examples.payments

It checks out three orders. Each checkout charges the card (undo: refund), reserves stock
(undo: release), then ships (irreversible: a parcel that left cannot be un-sent, so it
comes last, as the turn's point of no return). The third order asks for more stock than
there is: reserving fails, so the runtime runs the compensations of the completed steps in
reverse order and the card is refunded.

The bank and the warehouse honour idempotency keys, as real payment APIs do: every step
passes ``ctx.idempotency_key``, so a step re-run after a crash applies its effect once.
Kill the script mid-run (``kill -9``) and run it again: it continues where it stopped, and
``--show-ledger`` prints every effect with the number of times it was attempted versus
applied.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time

import anyio
import msgspec

import actorflow
from journal import SqliteStore

LEDGER = os.environ.get("ACTORFLOW_EXAMPLE_LEDGER", "ledger.db")
DELAY = float(os.environ.get("ACTORFLOW_EXAMPLE_DELAY", "0.3"))
STOCK = {"widget": 5, "gadget": 1}


class OutOfStock(actorflow.StepError):
    """The warehouse cannot reserve what was asked (rebuilt as itself on replay)."""


class Order(msgspec.Struct, frozen=True):
    """What a customer checks out."""

    order_id: str
    item: str
    quantity: int
    cents: int


class Receipt(msgspec.Struct, frozen=True):
    """A shipped order."""

    order_id: str
    charge: str
    parcel: str


def _ledger() -> sqlite3.Connection:
    conn = sqlite3.connect(LEDGER, isolation_level=None)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, kind TEXT, detail TEXT)"
    )
    conn.execute("CREATE TABLE IF NOT EXISTS attempts (key TEXT, kind TEXT)")
    conn.execute("CREATE TABLE IF NOT EXISTS stock (item TEXT PRIMARY KEY, left INTEGER)")
    conn.executemany("INSERT OR IGNORE INTO stock VALUES (?, ?)", STOCK.items())
    return conn


def _apply(kind: str, key: str, detail: str) -> str:
    """Apply an effect once per idempotency key; count every attempt."""
    time.sleep(DELAY)
    with _ledger() as conn:
        conn.execute("INSERT INTO attempts VALUES (?, ?)", (key, kind))
        conn.execute("INSERT OR IGNORE INTO effects VALUES (?, ?, ?)", (key, kind, detail))
    return f"{kind}-{key.rsplit('/', 2)[-2]}-{key.rsplit('/', 1)[-1]}"


def charge_card(order: Order, idempotency_key: str) -> str:
    """The bank: charge the customer's card."""
    return _apply("charge", idempotency_key, f"{order.order_id} {order.cents} cents")


def refund(charge_id: str, idempotency_key: str) -> None:
    """The bank: refund a charge (the compensation of `charge_card`)."""
    _apply("refund", idempotency_key, charge_id)


def reserve_stock(order: Order, idempotency_key: str) -> str:
    """The warehouse: set stock aside, or raise `OutOfStock`."""
    time.sleep(DELAY)
    with _ledger() as conn:
        conn.execute("INSERT INTO attempts VALUES (?, ?)", (idempotency_key, "reserve"))
        conn.execute("BEGIN IMMEDIATE")
        done = conn.execute("SELECT 1 FROM effects WHERE key = ?", (idempotency_key,)).fetchone()
        if done is None:
            (left,) = conn.execute(
                "SELECT left FROM stock WHERE item = ?", (order.item,)
            ).fetchone()
            if left < order.quantity:
                conn.execute("ROLLBACK")
                raise OutOfStock(f"{order.item}: {left} left, {order.quantity} asked")
            conn.execute(
                "UPDATE stock SET left = left - ? WHERE item = ?", (order.quantity, order.item)
            )
            conn.execute(
                "INSERT INTO effects VALUES (?, 'reserve', ?)",
                (idempotency_key, f"{order.quantity} {order.item}"),
            )
        conn.execute("COMMIT")
    return f"reservation-{order.order_id}"


def release_stock(reservation: str, idempotency_key: str) -> None:
    """The warehouse: release a reservation (the compensation of `reserve_stock`)."""
    _apply("release", idempotency_key, reservation)


def ship(order: Order, idempotency_key: str) -> str:
    """The carrier: send the parcel. Irreversible."""
    return _apply("ship", idempotency_key, order.order_id)


class Checkout(actorflow.Actor):
    """Takes an order through charge, reserve and ship."""

    @actorflow.handler
    async def checkout(self, order: Order) -> Receipt:
        """The saga: each reversible step registers its undo; shipping comes last."""
        charge = await self.ctx.run(charge_card, order, compensate=refund)
        await self.ctx.run(reserve_stock, order, compensate=release_stock)
        parcel = await self.ctx.run(ship, order, irreversible=True)
        return Receipt(order.order_id, charge, parcel)


ORDERS = [
    Order("order-1", "widget", 2, 1999),
    Order("order-2", "widget", 3, 2999),
    Order("order-3", "gadget", 4, 9999),
]


async def main(journal: str) -> None:
    """Check out every order (resuming any that a previous run left mid-way)."""
    async with (
        await SqliteStore.open(journal) as store,
        actorflow.Runtime(store, [Checkout]) as runtime,
    ):
        invocations = [
            await runtime.send(
                actorflow.ActorRef("Checkout", order.order_id),
                "checkout",
                (order,),
                idempotency_key="checkout",
            )
            for order in ORDERS
        ]
        for order, invocation in zip(ORDERS, invocations, strict=True):
            try:
                receipt = await runtime.result(invocation)
                print(f"{order.order_id}: shipped, {receipt}")
            except actorflow.HandlerFailed as failed:
                print(f"{order.order_id}: failed and compensated ({failed.message})")


def show_ledger() -> None:
    """Print every effect the bank and warehouse applied, with its attempts."""
    with _ledger() as conn:
        rows = conn.execute(
            "SELECT e.kind, e.detail, e.key, (SELECT count(*) FROM attempts a WHERE a.key = e.key)"
            " FROM effects e ORDER BY rowid"
        ).fetchall()
    for kind, detail, key, attempts in rows:
        print(f"{kind:8} {detail:28} applied once, attempted {attempts}x  [{key}]")


def cli() -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--journal", default="payments.db")
    parser.add_argument("--show-ledger", action="store_true")
    args = parser.parse_args()
    if args.show_ledger:
        show_ledger()
        return
    anyio.run(main, args.journal)
    show_ledger()


if __name__ == "__main__":
    cli()
