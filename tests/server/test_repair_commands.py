"""`actorflow export` and `actorflow reset` refuse what they cannot do, saying what to do
instead, and change nothing when they refuse. (A damaged journal, exported and reset around
a real server, is in tests/crash/test_damaged_journal.py.)"""

from __future__ import annotations

import json
import pathlib

import anyio
from click.testing import CliRunner, Result

from actorflow import Runtime
from actorflow.cli import main
from journal import SqliteStore
from tests.server.app_under_test import ACTORS, Greeter


def prepare(journal: pathlib.Path) -> None:
    """A journal where Greeter/g greeted once, with an idempotency key."""

    async def run() -> None:
        async with await SqliteStore.open(journal) as store, Runtime(store, ACTORS) as rt:
            ref = rt.ref(Greeter, "g").options(idempotency_key="k1")
            await rt.result(await ref.send(Greeter.greet, "ann"))

    anyio.run(run)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_export_writes_every_record_of_a_healthy_actor(tmp_path: pathlib.Path) -> None:
    journal = tmp_path / "journal.db"
    prepare(journal)
    done = run("export", "Greeter/g", "--out", "-", "--journal", str(journal))
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert {line["stream"] for line in lines} == {
        "actor/Greeter/g",
        "inbox/Greeter/g",
        "outcomes/Greeter/g",
        "idempotency/Greeter/g/k1",
    }
    assert all(line["damage"] is None and line["entry"] is not None for line in lines)
    assert f"exported {len(lines)} records of Greeter/g from {journal}" in done.stderr
    assert "damaged" not in done.stderr


def test_export_refuses_what_it_cannot_do_and_writes_nothing(tmp_path: pathlib.Path) -> None:
    journal = tmp_path / "journal.db"
    out = tmp_path / "out.jsonl"
    missing = run("export", "Greeter/g", "--out", str(out), "--journal", str(journal))
    assert missing.exit_code == 1
    assert "no journal file there to read" in missing.stderr
    assert not journal.exists()

    prepare(journal)
    before = journal.read_bytes()
    unknown = run("export", "Greeter/nobody", "--out", str(out), "--journal", str(journal))
    assert unknown.exit_code == 1
    assert f"{journal} holds no journal for Greeter/nobody" in unknown.stderr
    badly_named = run("export", "Greeter", "--out", str(out), "--journal", str(journal))
    assert badly_named.exit_code == 2
    assert "actors are named Type/key" in badly_named.stderr
    out.write_text("an earlier export\n")
    taken = run("export", "Greeter/g", "--out", str(out), "--journal", str(journal))
    assert taken.exit_code == 1
    assert f"{out} already exists" in taken.stderr
    assert out.read_text() == "an earlier export\n"
    assert journal.read_bytes() == before
    assert "Traceback" not in missing.stderr + unknown.stderr + taken.stderr


def test_reset_says_what_it_would_delete_and_deletes_only_with_yes(
    tmp_path: pathlib.Path,
) -> None:
    journal = tmp_path / "journal.db"
    prepare(journal)
    asked = run("reset", "Greeter/g", "--journal", str(journal))
    assert asked.exit_code == 1
    assert "refusing to reset Greeter/g without --yes" in asked.stderr
    assert "actor/Greeter/g, inbox/Greeter/g, outcomes/Greeter/g" in asked.stderr
    assert "actorflow export Greeter/g --out FILE" in asked.stderr
    kept = run("export", "Greeter/g", "--out", "-", "--journal", str(journal))
    assert len(kept.stdout.splitlines()) > 4

    done = run("reset", "Greeter/g", "--yes", "--journal", str(journal))
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("reset Greeter/g: deleted ")
    again = run("reset", "Greeter/g", "--yes", "--journal", str(journal))
    assert again.exit_code == 1
    assert f"{journal} holds no journal for Greeter/g; nothing reset" in again.stderr
    gone = run("export", "Greeter/g", "--out", "-", "--journal", str(journal))
    assert gone.exit_code == 1
