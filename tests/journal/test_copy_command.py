"""`actorflow journal copy`, and an actor that finishes on the copy of its journal.

An actor crashes mid-turn on SQLite; its journal is copied into PostgreSQL; a runtime on
the copy finishes the turn with the right result, running the step that was in flight
under the very idempotency key it had on the source (the key derives from the journal's
identity, which the copy keeps).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap
from collections import Counter

import anyio
import pytest
from click.testing import CliRunner, Result

from actorflow import Actor, Runtime, handler
from actorflow.cli import main
from journal import MemoryStore, NewRecord, PostgresStore, SqliteStore, copy_journal
from tests.runtime.support import crashing, eventually

pytestmark = pytest.mark.anyio

executions: Counter[str] = Counter()
#: The idempotency key each run of the transfer step saw.
step_keys: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    executions.clear()
    step_keys.clear()


def quote(amount: int) -> int:
    executions["quote"] += 1
    return amount + 1


async def transfer(amount: int, *, idempotency_key: str) -> str:
    """Hangs on its first run (in flight when the runtime dies), then succeeds."""
    executions["transfer"] += 1
    step_keys.append(idempotency_key)
    if executions["transfer"] == 1:
        await anyio.Event().wait()
    return f"sent {amount}"


class Payer(Actor):
    @handler
    async def pay(self, amount: int) -> str:
        total: int = await self.ctx.run(quote, amount)
        outcome: str = await self.ctx.run(transfer, total)
        return outcome


async def test_an_actor_crashed_mid_turn_finishes_on_the_copy_under_the_same_keys(
    tmp_path: pathlib.Path, postgres_dsn: str
) -> None:
    db = tmp_path / "journal.db"
    with anyio.fail_after(30):
        async with crashing(db, [Payer]) as rt:
            invocation = await rt.ref(Payer, "p").send(Payer.pay, 41)

            async def in_flight() -> bool:
                return executions["transfer"] == 1

            await eventually(in_flight, "the transfer step to start")

        async with (
            await SqliteStore.open(db) as source,
            await PostgresStore.open(postgres_dsn) as copy,
        ):
            await copy_journal(source, copy)
            async with Runtime(copy, [Payer]) as moved:
                assert await moved.result(invocation) == "sent 42"

    assert executions == {"quote": 1, "transfer": 2}  # the quote replayed, not re-run
    assert step_keys[1] == step_keys[0]  # the same key at the external service


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["journal", "copy", *args])


async def fill(path: pathlib.Path) -> str:
    async with await SqliteStore.open(path) as store:
        await store.append("a", [NewRecord("t", b"y"), NewRecord("t", b"x" * 3000)])
        await store.save_snapshot("a", 1, b"state")
        await store.truncate("a", 1)
        await store.claim("a")
        await store.append("b", [NewRecord("t", b"z")])
        return store.identity


async def everything(store: SqliteStore | PostgresStore | MemoryStore) -> object:
    streams = await store.list_stream_infos()
    return (
        store.identity,
        streams,
        [[(r.position, r.type, r.data) async for r in store.read(s.stream)] for s in streams],
        [await store.load_snapshot(s.stream) for s in streams],
    )


def test_the_command_copies_sqlite_into_postgres_and_says_what_it_did(
    tmp_path: pathlib.Path, postgres_dsn: str
) -> None:
    source = tmp_path / "journal.db"
    identity = anyio.run(fill, source)

    done = run(str(source), postgres_dsn)

    assert done.exit_code == 0, done.output
    assert "copied 2 streams, 2 records (2.9 KB), 1 snapshots (5 bytes)" in done.stdout
    assert f"journal identity {identity}" in done.stdout
    assert "verified" in done.stdout

    async def both() -> tuple[object, object]:
        async with (
            await SqliteStore.open(source) as original,
            await PostgresStore.open(postgres_dsn) as copy,
        ):
            return await everything(original), await everything(copy)

    original, copy = anyio.run(both)
    assert copy == original


def test_the_command_refuses_a_destination_that_holds_streams(tmp_path: pathlib.Path) -> None:
    source, destination = tmp_path / "journal.db", tmp_path / "copy.db"
    anyio.run(fill, source)
    anyio.run(fill, destination)
    before = destination.read_bytes()

    done = run(str(source), str(destination))

    assert done.exit_code == 1
    assert "the destination is not empty" in done.stderr
    assert "'a', 'b'" in done.stderr
    assert "verified" not in done.stdout
    assert destination.read_bytes() == before


def test_the_command_refuses_a_missing_source_or_the_same_file(tmp_path: pathlib.Path) -> None:
    missing = run(str(tmp_path / "nothing.db"), str(tmp_path / "copy.db"))
    same = run(str(tmp_path / "nothing.db"), str(tmp_path / "nothing.db"))

    assert missing.exit_code == 1
    assert "no journal file there to copy" in missing.stderr
    assert same.exit_code == 1
    assert not (tmp_path / "copy.db").exists()


HOLDER = textwrap.dedent(
    """
    import sys, anyio
    from journal import SqliteStore

    async def hold() -> None:
        async with await SqliteStore.open(sys.argv[1]):
            print("holding", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)

    anyio.run(hold)
    """
)


def test_the_command_refuses_a_file_that_a_running_process_holds(
    tmp_path: pathlib.Path,
) -> None:
    source, destination = tmp_path / "journal.db", tmp_path / "copy.db"
    anyio.run(fill, source)
    holder = subprocess.Popen(  # a server's place: another process with the journal open
        [sys.executable, "-c", HOLDER, str(source)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "holding\n"

        done = run(str(source), str(destination))
    finally:
        holder.communicate(timeout=30)

    assert done.exit_code == 1
    assert "is held by a running process" in done.stderr
    assert "Stop it first" in done.stderr
    assert not destination.exists()
