"""`actorflow journal verify|inspect|stats` on a journal file with no server: real files
written by a Runtime, damaged on purpose, read without changing a byte. (Beside a running
`actorflow serve`, --follow, and PostgreSQL: tests/server/test_offline_serve.py.)"""

from __future__ import annotations

import contextlib
import json
import pathlib
import re
import sqlite3

import anyio
import pytest
from click.testing import CliRunner, Result

from actorflow import Runtime
from actorflow.cli import main
from journal import NewRecord, SqliteStore, StreamAppend, value_digest
from tests.server import offline_app
from tests.server.offline_app import Reader, Trip

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["journal", *args], env=env)


def write_trip(journal: pathlib.Path) -> None:
    """A journal where Trip/t ran its failing trip (every kind of entry), then hello."""
    offline_app.attempts.clear()

    async def go() -> None:
        async with await SqliteStore.open(journal) as store, Runtime(store, [Trip]) as rt:
            trip = rt.ref(Trip, "t")
            await trip.deliver("go-ahead", "yes")
            invocation = await trip.send(Trip.go, "oslo")
            with contextlib.suppress(Exception):
                await rt.result(invocation)
            await rt.result(await trip.send(Trip.hello))

    anyio.run(go)


@pytest.fixture
def journal(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "journal.db"
    write_trip(path)
    return path


def damage(journal: pathlib.Path, statement: str, *args: object) -> None:
    """Change the file behind the journal's back (as a bad disk or a bad hand would)."""
    conn = sqlite3.connect(journal)
    try:
        conn.execute(statement, args)
        conn.commit()
    finally:
        conn.close()


STREAM_ID = "(SELECT id FROM streams WHERE name = 'actor/Trip/t')"


def test_the_tools_read_a_closed_journal_without_changing_its_bytes(
    journal: pathlib.Path,
) -> None:
    before = journal.read_bytes()
    checked = run("verify", "--journal", str(journal))
    assert checked.exit_code == 0, checked.output
    assert re.fullmatch(
        rf"{re.escape(str(journal))}: ok \(\d+ streams, \d+ records, 0 stored values checked\)\n",
        checked.stdout,
    )
    assert run("inspect", "Trip/t", "--journal", str(journal)).exit_code == 0
    assert run("stats", "--journal", str(journal)).exit_code == 0
    assert run("verify", "--json", "--journal", str(journal)).exit_code == 0
    assert journal.read_bytes() == before
    wal = journal.with_name(journal.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # SQLite's reader index only


def test_verify_names_the_stream_and_position_of_a_flipped_byte(journal: pathlib.Path) -> None:
    (data,) = (
        sqlite3.connect(journal)
        .execute(f"SELECT data FROM records WHERE stream_id = {STREAM_ID} AND position = 4")
        .fetchone()
    )
    flipped = bytes([data[0] ^ 0x01]) + data[1:]
    damage(
        journal,
        f"UPDATE records SET data = ? WHERE stream_id = {STREAM_ID} AND position = 4",
        flipped,
    )
    found = run("verify", "--journal", str(journal))
    assert found.exit_code == 1
    assert found.stdout == (
        "stream 'actor/Trip/t' position 4: checksum: record checksum mismatch\n"
    )
    assert f"{journal}: 1 problems found" in found.stderr

    as_json = run("verify", "--json", "--journal", str(journal))
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert report["problems"] == [
        {
            "stream": "actor/Trip/t",
            "position": 4,
            "kind": "checksum",
            "detail": "record checksum mismatch",
        }
    ]

    shown = run("inspect", "Trip/t", "--journal", str(journal))
    assert shown.exit_code == 0, shown.output
    line = next(x for x in shown.stdout.splitlines() if re.match(r"actor\s+4\s", x))
    assert "DAMAGED: checksum mismatch" in line
    assert re.search(r"actor\s+5\s+.*timer\s+turn 1 step 3 nap", shown.stdout)  # read on

    stats = run("stats", "--json", "--journal", str(journal))
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["damaged"] == 1


def test_verify_names_a_deleted_record_as_a_gap(journal: pathlib.Path) -> None:
    damage(journal, f"DELETE FROM records WHERE stream_id = {STREAM_ID} AND position = 6")
    found = run("verify", "--journal", str(journal))
    assert found.exit_code == 1
    assert found.stdout == ("stream 'actor/Trip/t' position 6: gap: expected position 6, found 7\n")


def test_what_cannot_be_opened_exits_2_saying_why_and_creates_nothing(
    tmp_path: pathlib.Path, journal: pathlib.Path
) -> None:
    missing = tmp_path / "missing.db"
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    newer = tmp_path / "newer.db"
    newer.write_bytes(journal.read_bytes())
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    cases = {
        str(missing): "no journal file there",
        str(text): "is not a SQLite database",
        str(foreign): "is a SQLite file but not an actorflow journal",
        str(newer): "was written by a newer journal schema (version 999",
        str(tmp_path): "is a directory, not a journal file",
        "postgresql://nobody@127.0.0.1:1/none": "cannot connect to postgresql://nobody@",
    }
    for target, said in cases.items():
        for command in (["verify"], ["stats"], ["inspect", "Trip/t"]):
            done = run(*command, "--journal", target)
            assert done.exit_code == 2, (command, target, done.output)
            assert said in done.stderr, (command, target, done.stderr)
            assert "Traceback" not in done.output
    assert not missing.exists()


def test_inspect_shows_every_kind_of_entry_with_iso_times(journal: pathlib.Path) -> None:
    shown = run("inspect", "Trip/t", "--journal", str(journal))
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    expected = [
        r"checkpoint\s+10\s+-\s+snapshot\s+checkpoint after turn 2, covering actor position 10 "
        r"and inbox through 3; \d+ bytes",
        rf"actor\s+1\s+{ISO}\s+turn\s+turn 1: go\(\{{\"city\": \"oslo\"\}}\)",
        rf"actor\s+2\s+{ISO}\s+step\s+turn 1 step 1 book: \"seat in oslo\"\s+\+\d+\.\d{{3}}s",
        rf"actor\s+3\s+{ISO}\s+step_retry\s+turn 1 step 2 weather: attempt 1 failed "
        rf"\(builtins.ConnectionError: \"weather timed out\"\); retry at {ISO} \+\d+\.\d{{3}}s",
        rf"actor\s+4\s+{ISO}\s+step\s+turn 1 step 2 weather: \"weather answered\" after 2 "
        rf"attempts",
        rf"actor\s+5\s+{ISO}\s+timer\s+turn 1 step 3 nap: sleep timer due {ISO}",
        rf"actor\s+6\s+{ISO}\s+step\s+turn 1 step 4 go-ahead \(event\): \"yes\"",
        rf"actor\s+7\s+{ISO}\s+step\s+turn 1 step 1~undo book \(compensation\): null",
        rf"actor\s+8\s+{ISO}\s+turn_failed\s+turn 1 failed: builtins.RuntimeError: \"no trip "
        rf"after all\"; compensated book",
        rf"actor\s+9\s+{ISO}\s+turn\s+turn 2: hello\(\{{\}}\)",
        rf"actor\s+10\s+{ISO}\s+turn_done\s+turn 2 -> \"hi\"",
        rf"inbox\s+1\s+{ISO}\s+event\s+event go-ahead: \"yes\"",
        rf"inbox\s+2\s+{ISO}\s+message\s+go\(\{{\"city\": \"oslo\"\}}\) as Trip/t#\w+",
        rf"inbox\s+3\s+{ISO}\s+message\s+hello\(\{{\}}\) as Trip/t#\w+",
        rf"outcome\s+1\s+{ISO}\s+ended\s+Trip/t#\w+ \(turn 1\) failed: builtins.RuntimeError: "
        rf"no trip after all",
        rf"outcome\s+2\s+{ISO}\s+ended\s+Trip/t#\w+ \(turn 2\) completed",
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.match(pattern, line), (pattern, line)

    as_json = run("inspect", "Trip/t", "--json", "--journal", str(journal))
    entries = json.loads(as_json.stdout)
    assert [(e["stream"], e["position"]) for e in entries][:3] == [
        ("checkpoint", 10),
        ("actor", 1),
        ("actor", 2),
    ]
    timer = next(e for e in entries if e["type"] == "timer")
    assert re.fullmatch(ISO, timer["time"])
    assert timer["data"]["name"] == "nap"
    assert all(e["damage"] is None and e["decode_error"] is None for e in entries)


def test_inspect_of_an_unknown_actor_is_a_clear_error(journal: pathlib.Path) -> None:
    unknown = run("inspect", "Trip/nobody", "--journal", str(journal))
    assert unknown.exit_code == 1
    assert f"{journal} holds no journal for Trip/nobody" in unknown.stderr
    badly_named = run("inspect", "Trip", "--journal", str(journal))
    assert badly_named.exit_code == 2
    assert "actors are named Type/key" in badly_named.stderr


def test_stats_counts_records_by_type_and_ranks_actors(journal: pathlib.Path) -> None:
    conn = sqlite3.connect(journal)
    (records, stored) = conn.execute("SELECT count(*), sum(length(data)) FROM records").fetchone()
    (snapshots,) = conn.execute("SELECT count(*) FROM snapshots").fetchone()
    conn.close()
    done = run("stats", "--json", "--top", "1", "--journal", str(journal))
    assert done.exit_code == 0, done.output
    stats = json.loads(done.stdout)
    assert stats["records"] == {"count": records, "bytes": stored}
    assert stats["snapshots"]["count"] == snapshots
    by_type = {(t["stream_kind"], t["type"]): t for t in stats["types"]}
    assert by_type["actor", "step"]["event"] == "StepCompleted"
    assert by_type["actor", "step"]["count"] == 4  # book, weather, go-ahead, the undo
    assert by_type["actor", "step_retry"]["event"] == "StepRetrying"
    assert by_type["inbox", "event"]["event"] == "EventDelivered"
    assert sum(t["count"] for t in stats["types"]) == records
    assert [a["actor"] for a in stats["largest_actors"]] == ["Trip/t"]
    assert stats["largest_actors"][0]["records"] == records  # its invocations' indexes too


def test_verify_and_stats_see_stored_values_and_the_records_that_refer_to_them(
    tmp_path: pathlib.Path,
) -> None:
    journal = tmp_path / "values.db"
    value = b"a long conversation " * 100
    digest = value_digest(value)

    async def write() -> None:
        async with await SqliteStore.open(journal) as store:
            record = NewRecord("note", b"\x01", refs=(digest,))
            await store.append_many([StreamAppend("notes/a", (record,), values={digest: value})])

    anyio.run(write)
    counted = json.loads(run("stats", "--json", "--journal", str(journal)).stdout)
    assert counted["values"] == {"count": 1, "bytes": len(value)}
    assert run("verify", "--journal", str(journal)).exit_code == 0

    damage(journal, "UPDATE stored_values SET data = ? WHERE digest = ?", b"x" + value, digest)
    found = run("verify", "--journal", str(journal))
    assert found.exit_code == 1
    assert found.stdout == (
        f"the journal as a whole: value: value {digest}: stored bytes do not match their SHA-256\n"
    )
    damage(journal, "DELETE FROM stored_values WHERE digest = ?", digest)
    found = run("verify", "--journal", str(journal))
    assert found.exit_code == 1
    assert found.stdout == (
        f"stream 'notes/a' position 1: dangling ref: refers to value {digest}, not stored\n"
    )


def test_the_journal_is_named_by_actorflow_journal_unless_given(
    journal: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    named = run("verify", env={"ACTORFLOW_JOURNAL": str(journal)})
    assert named.exit_code == 0, named.output
    assert named.stdout.startswith(f"{journal}: ok")
    elsewhere = tmp_path / "elsewhere.db"
    given = run("verify", "--journal", str(elsewhere), env={"ACTORFLOW_JOURNAL": str(journal)})
    assert given.exit_code == 2
    assert f"{elsewhere}: no journal file there" in given.stderr


def test_inspect_shows_a_large_value_and_marks_a_record_whose_value_is_damaged(
    tmp_path: pathlib.Path,
) -> None:
    """A step result stored as a journal value is shown as its content, not as the
    reference the record holds; with the value's bytes damaged, that record is shown
    DAMAGED and the rest of the journal still reads."""
    path = tmp_path / "journal.db"

    async def go() -> None:
        async with await SqliteStore.open(path) as store, Runtime(store, [Reader]) as rt:
            await rt.result(await rt.ref(Reader, "r").send(Reader.read, "canary-7319"))

    anyio.run(go)
    (stored,) = sqlite3.connect(path).execute("SELECT count(*) FROM stored_values").fetchone()
    assert stored == 1
    shown = run("inspect", "Reader/r", "--json", "--journal", str(path))
    assert shown.exit_code == 0, shown.output
    assert "document canary-7319 lorem ipsum" in shown.stdout

    (data,) = sqlite3.connect(path).execute("SELECT data FROM stored_values").fetchone()
    damage(path, "UPDATE stored_values SET data = ?", b"x" + data[1:])
    shown = run("inspect", "Reader/r", "--journal", str(path))
    assert shown.exit_code == 0, shown.output
    damaged = [line for line in shown.stdout.splitlines() if "DAMAGED" in line]
    assert len(damaged) == 1, shown.stdout
    assert "document canary-7319" not in shown.stdout
    assert re.search(r"outcome\s+1\s.*completed", shown.stdout), shown.stdout  # read on
