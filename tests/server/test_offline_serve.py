"""The offline journal tools beside a real `actorflow serve` (fed by the client), on SQLite
and PostgreSQL: verify and stats read the live journal, and `inspect --follow` prints a
live actor's new entries as the server appends them, then stops cleanly on SIGTERM or
Ctrl-C. Every wait is bounded."""

from __future__ import annotations

import contextlib
import json
import pathlib
import queue
import re
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator

import anyio
import asyncpg

from actorflow import SyncClient
from tests.server.processes import ACTORFLOW, ROOT, clean_env, cli, served
from tests.server.test_offline_tools import write_trip

#: Longest a followed entry may take to be printed.
LINE_DEADLINE = 20.0
#: Longest a follower may take to stop after a signal.
STOP_DEADLINE = 10.0


class Follower:
    """A running `actorflow journal inspect ACTOR --follow`, its stdout read line by line
    on a thread."""

    def __init__(self, actor: str, journal: str, interval: str) -> None:
        command = [ACTORFLOW, "journal", "inspect", actor, "--follow", "--interval", interval]
        self.process = subprocess.Popen(
            [*command, "--journal", journal],
            cwd=ROOT,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.unmatched: list[str] = []  # seen, and matched by no `until` yet
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def until(self, pattern: str) -> str:
        """The first line not matched yet that matches ``pattern`` (waiting for it). Lines
        of different streams come in no fixed order (a turn's outcome may be printed before
        its actor records), so a line printed before an earlier `until` matched counts."""
        for line in self.unmatched:
            if re.search(pattern, line):
                self.unmatched.remove(line)
                return line
        while True:
            try:
                line = self.lines.get(timeout=LINE_DEADLINE)
            except queue.Empty:
                raise AssertionError(f"no line matched {pattern!r}; saw {self.seen}") from None
            self.seen.append(line)
            if re.search(pattern, line):
                return line
            self.unmatched.append(line)

    def stop(self, signum: signal.Signals) -> tuple[int, str]:
        """Send ``signum``; its exit code and stderr."""
        self.process.send_signal(signum)
        code = self.process.wait(timeout=STOP_DEADLINE)
        assert self.process.stderr is not None
        return code, self.process.stderr.read()

    def kill(self) -> None:
        """Kill it if it still runs; close its pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=STOP_DEADLINE)
        self.reader.join(timeout=STOP_DEADLINE)  # it reads to the end of the pipe
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def following(actor: str, journal: str, interval: str = "0.05") -> Iterator[Follower]:
    follower = Follower(actor, journal, interval)
    try:
        yield follower
    finally:
        follower.kill()


def test_follow_prints_a_live_actors_entries_and_stops_on_sigterm(
    tmp_path: pathlib.Path,
) -> None:
    journal = str(tmp_path / "journal.db")
    with served(tmp_path) as server, SyncClient(server.url) as client:
        client.send("Greeter/f", "greet", {"name": "ann"}, wait=10)
        checked = cli("journal", "verify", "--journal", journal)
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout.startswith(f"{journal}: ok (")
        stats = cli("journal", "stats", "--json", "--journal", journal)
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["largest_actors"][0]["actor"] == "Greeter/f"

        with following("Greeter/f", journal) as follower:
            follower.until(r"^outcome\s+1\s.*completed")  # what was there: printed at once
            client.send("Greeter/f", "greet", {"name": "bob", "times": 2}, wait=10)
            follower.until(r"^actor\s+\d+\s.*turn\s+turn 2: greet\(\{\"name\": \"bob\"")
            follower.until(r"step\s+turn 2 step 1 greeting: \"hello bob hello bob\"")
            follower.until(r"^outcome\s+2\s.*\(turn 2\) completed")
            code, errors = follower.stop(signal.SIGTERM)
        assert code == 0, errors
        assert "Traceback" not in errors
        assert server.process.poll() is None  # the server ran on, undisturbed


def test_the_tools_on_postgresql_verify_stats_follow_and_find_damage(
    tmp_path: pathlib.Path, postgres_dsn: str
) -> None:
    with served(tmp_path, journal=postgres_dsn) as server, SyncClient(server.url) as client:
        client.send("Greeter/p", "greet", {"name": "ann"}, wait=10)
        # Reading every minute only: what follows is printed because the server's
        # notices of the appends to the actor's inbox and outcomes wake the follower.
        with following("Greeter/p", postgres_dsn, interval="60") as follower:
            follower.until(r"^outcome\s+1\s.*completed")
            client.send("Greeter/p", "greet", {"name": "cy"}, wait=10)
            follower.until(r"^outcome\s+2\s.*\(turn 2\) completed")
            code, errors = follower.stop(signal.SIGINT)
        assert code == 0, errors

        checked = cli("journal", "verify", "--journal", postgres_dsn)
        assert checked.returncode == 0, checked.stderr
        stats = cli("journal", "stats", "--json", "--journal", postgres_dsn)
        assert stats.returncode == 0, stats.stderr
        figures = json.loads(stats.stdout)
        assert figures["largest_actors"][0]["actor"] == "Greeter/p"
        assert figures["largest_actors"][0]["records"] >= 10

    async def flip() -> None:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(
                "UPDATE journal_records SET data = decode('c0', 'hex') || data WHERE position = 2 "
                "AND stream_id = (SELECT id FROM journal_streams WHERE name = 'actor/Greeter/p')"
            )
        finally:
            await conn.close()

    anyio.run(flip)
    found = cli("journal", "verify", "--journal", postgres_dsn)
    assert found.returncode == 1, found.stderr
    assert "stream 'actor/Greeter/p' position 2: checksum:" in found.stdout


def test_an_empty_postgresql_database_is_refused_and_left_empty(postgres_dsn: str) -> None:
    refused = cli("journal", "stats", "--journal", postgres_dsn)
    assert refused.returncode == 2
    assert "holds no actorflow journal (no journal_meta table)" in refused.stderr

    async def tables() -> list[str]:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            rows = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
            return [row[0] for row in rows]
        finally:
            await conn.close()

    assert anyio.run(tables) == []


def test_a_journal_failing_under_follow_ends_it_with_one_clear_line(
    tmp_path: pathlib.Path,
) -> None:
    journal = tmp_path / "journal.db"
    write_trip(journal)
    with following("Trip/t", str(journal)) as follower:
        follower.until(r"^outcome\s+2\s")
        conn = sqlite3.connect(journal)  # the file changed under it beyond repair
        conn.execute("DROP TABLE records")
        conn.commit()
        conn.close()
        code = follower.process.wait(timeout=STOP_DEADLINE)
        assert follower.process.stderr is not None
        errors = follower.process.stderr.read()
    assert code == 1
    assert errors.startswith("Error: reading the journal failed: ")
    assert "no such table: records" in errors
    assert "Traceback" not in errors
