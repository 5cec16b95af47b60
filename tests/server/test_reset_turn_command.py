"""`actorflow reset ACTOR --to-last-turn`: asks first, exports the unfinished turn's
entries to a file, then discards them; refuses (changing nothing) what it cannot do."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import anyio
import pytest
from click.testing import CliRunner, Result

from actorflow import Actor, Runtime, handler
from actorflow._events import actor_stream
from actorflow.cli import main
from journal import SqliteStore

effects: list[str] = []


def reserve(item: str) -> str:
    effects.append(f"reserve {item}")
    return item


class Old(Actor, name="Shop"):
    @handler
    async def buy(self, item: str) -> str:
        await self.ctx.run(reserve, item)
        await self.ctx.wait_for("go")
        return f"bought {item}"


class New(Actor, name="Shop"):
    @handler
    async def buy(self, item: str) -> str:
        return f"bought {item} at once"


@pytest.fixture(autouse=True)
def _clear() -> None:
    effects.clear()


def prepare(journal: pathlib.Path) -> str:
    """Shop/s finished one turn under Old and waits in its second."""

    async def until(shop: Any, state: str, turns: int) -> None:
        with anyio.fail_after(10):  # polled: status is read, not signalled
            while (s := await shop.status()).state != state or s.turns != turns:  # noqa: ASYNC110
                await anyio.sleep(0.005)

    async def go() -> str:
        async with await SqliteStore.open(journal) as store, Runtime(store, [Old]) as rt:
            shop = rt.ref(Old, "s")
            first = await shop.send(Old.buy, "a")
            second = await shop.send(Old.buy, "b")
            await until(shop, "waiting-event", 1)
            await rt.deliver(shop.ref, "go")
            await rt.result(first)
            await until(shop, "waiting-event", 2)
            return second

    return anyio.run(go)


def last_position(journal: pathlib.Path) -> int:
    async def read() -> int:
        async with await SqliteStore.open(journal, read_only=True) as store:
            return await store.last_position(actor_stream("Shop/s"))

    return anyio.run(read)


def run(*args: str, answer: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=answer)


def test_it_asks_exports_then_discards_and_the_message_runs_again(
    tmp_path: pathlib.Path,
) -> None:
    journal = tmp_path / "journal.db"
    second = prepare(journal)
    out = tmp_path / "turn.jsonl"
    before = last_position(journal)
    args = ("reset", "Shop/s", "--to-last-turn", "--out", str(out), "--journal", str(journal))

    declined = run(*args, answer="n\n")
    assert declined.exit_code == 1
    assert "This discards turn 2 of Shop/s (buy, invocation" in declined.stderr
    assert "the steps it had completed run again" in declined.stderr
    assert not out.exists()
    assert last_position(journal) == before

    done = run(*args, answer="y\n")
    assert done.exit_code == 0, done.output
    assert "reset Shop/s to the start of turn 2: 2 journal entries exported" in done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(line["type"], line["entry"]["turn"]) for line in lines] == [("turn", 2), ("step", 2)]
    assert lines[0]["entry"]["invocation"] == second

    async def resume() -> str:
        async with await SqliteStore.open(journal) as store, Runtime(store, [New]) as rt:
            return str(await rt.result(second))

    assert anyio.run(resume) == "bought b at once"
    assert effects == ["reserve a", "reserve b"]  # nothing ran in the reset itself


def test_with_yes_it_writes_beside_the_journal(tmp_path: pathlib.Path) -> None:
    journal = tmp_path / "journal.db"
    prepare(journal)
    done = run("reset", "Shop/s", "--to-last-turn", "--yes", "--journal", str(journal))
    assert done.exit_code == 0, done.output
    assert (tmp_path / "journal.db.Shop.s.turn-2.jsonl").exists()
    again = run("reset", "Shop/s", "--to-last-turn", "--yes", "--journal", str(journal))
    assert again.exit_code == 1
    assert "Shop/s has no unfinished turn" in again.stderr


def test_it_refuses_a_journal_open_in_a_server_and_out_without_the_flag(
    tmp_path: pathlib.Path,
) -> None:
    journal = tmp_path / "journal.db"
    prepare(journal)
    before = last_position(journal)
    lone = run("reset", "Shop/s", "--out", str(tmp_path / "x"), "--journal", str(journal))
    assert lone.exit_code == 2
    assert "--out goes with --to-last-turn" in lone.stderr

    async def while_open() -> Result:
        async with await SqliteStore.open(journal):
            return await anyio.to_thread.run_sync(
                run, "reset", "Shop/s", "--to-last-turn", "--yes", "--journal", str(journal)
            )

    locked = anyio.run(while_open)
    assert locked.exit_code == 1
    assert "reset Shop/s through it (add --url URL of the server)" in locked.stderr
    assert last_position(journal) == before
