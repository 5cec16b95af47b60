"""Write the golden journals of the example agents: ``python -m tests.golden.make``.

Each ``*.jsonl`` file here is one actor's journal as `actorflow journal export` writes it,
with a turn in flight, written by a real run of the example agents (`examples.agents`):

- ``researcher-waiting-for-approval.jsonl``: ``Researcher/job-1`` planned, searched,
  summarised, and waits for its human's ``approval`` event;
- ``checkout-before-shipping.jsonl``: ``Checkout/order-1`` charged the card and reserved
  the stock; the process stopped (SIGTERM's checkpoint strategy) before it shipped.

`tests/golden/test_golden.py` replays them in CI against the current example agents (they
must pass) and against the deliberately divergent variants in `tests/golden/variants.py`.
Regenerate them (from the repository's root) after a change to the examples that is meant
to be incompatible with journals in flight, or to the journal format::

    python -m tests.golden.make

This overwrites the files; review the diff (timestamps and keys change on every run).
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile

import anyio

from actorflow import ActorRef, Runtime
from examples import fake_llm, payments
from examples.agents import Checkout, Researcher
from journal import SqliteStore

HERE = pathlib.Path(__file__).resolve().parent
RESEARCHER = ActorRef("Researcher", "job-1")
CHECKOUT = ActorRef("Checkout", "order-1")
GOLDEN = {
    "researcher-waiting-for-approval.jsonl": RESEARCHER.id,
    "checkout-before-shipping.jsonl": CHECKOUT.id,
}


async def _until(predicate: object, what: str) -> None:
    with anyio.fail_after(10, reason=f"the example never got to {what}"):
        while not await predicate():  # type: ignore[operator]  # noqa: ASYNC110
            await anyio.sleep(0.002)


async def write_journal(path: pathlib.Path, scratch: pathlib.Path) -> None:
    """Run the example agents on a new SQLite journal at ``path`` until each has a turn in
    flight, then stop (their fake calls log to, and their ledger lives in, ``scratch``)."""
    saved = fake_llm.DELAY, fake_llm.CALL_LOG, payments.LEDGER, payments.DELAY
    fake_llm.DELAY, fake_llm.CALL_LOG = 0.0, scratch / "calls.log"
    payments.LEDGER, payments.DELAY = str(scratch / "ledger.db"), 0.5
    try:
        await _run_examples(path)
    finally:
        fake_llm.DELAY, fake_llm.CALL_LOG, payments.LEDGER, payments.DELAY = saved


async def _run_examples(path: pathlib.Path) -> None:
    async with await SqliteStore.open(path) as store:
        async with Runtime(store, [Researcher, Checkout]) as runtime:
            await runtime.send(RESEARCHER, "research", ("solid-state batteries",))

            async def waiting() -> bool:
                return (await runtime.status(RESEARCHER)).state == "waiting-event"

            await _until(waiting, "the Researcher's approval")
        # A checkout stopped while it reserves stock (0.5 s): the reservation ends and is
        # journaled, and the turn stops at its next step boundary, before shipping.
        async with Runtime(store, [Researcher, Checkout]) as runtime:
            await runtime.send(CHECKOUT, "checkout", (payments.ORDERS[0],))

            async def charged() -> bool:
                return "charge_card" in await _steps(runtime)

            await _until(charged, "the Checkout's charge")
        types = [record.type async for record in store.read(f"actor/{CHECKOUT.id}")]
        if types != ["turn", "step", "step"]:  # started, charged, reserved: not shipped
            raise AssertionError(f"the checkout did not stop before shipping ({types}); again")


async def _steps(runtime: Runtime) -> list[str]:
    entries = await runtime.journal(CHECKOUT)
    return [entry.data["name"] for entry in entries if entry.type == "step"]


def main() -> None:
    """Write the journals, export each golden actor beside this file."""
    from actorflow.cli import main as cli

    with tempfile.TemporaryDirectory() as scratch:
        journal = pathlib.Path(scratch) / "golden.db"
        anyio.run(write_journal, journal, pathlib.Path(scratch))
        for name, actor in GOLDEN.items():
            out = HERE / name
            out.unlink(missing_ok=True)
            args = ["journal", "export", actor, "--journal", str(journal), "--out", str(out)]
            cli.main(args, prog_name="actorflow", standalone_mode=False)
    print(f"wrote {', '.join(GOLDEN)} in {os.path.relpath(HERE)}", file=sys.stderr)


if __name__ == "__main__":
    main()
