"""Values stored once in a SQLite journal: what the file holds, its upgrade from schema
version 2, damage found by reads and verify, and a value larger than any record."""

from __future__ import annotations

import os
import pathlib
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from journal import CorruptionError, NewRecord, SqliteStore, StreamAppend
from journal._sqlite_schema import _add_identity
from tests.journal.contract_values import DOC, PROMPT, digest, given
from tests.journal.test_sqlite import make_version_1_journal, pragma, raw

pytestmark = pytest.mark.anyio


@pytest.fixture
def path(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "journal.db"


def make_version_2_journal(path: pathlib.Path) -> None:
    """The version 1 journal of test_sqlite, upgraded to version 2 as that version did."""
    make_version_1_journal(path)
    with raw(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        _add_identity(conn)
        conn.execute("PRAGMA user_version = 2")
        conn.execute("COMMIT")


async def test_a_version_2_file_is_upgraded_and_then_stores_values(path: pathlib.Path) -> None:
    make_version_2_journal(path)
    with raw(path) as conn:
        identity = conn.execute("SELECT value FROM identity").fetchone()[0]

    async with await SqliteStore.open(path) as store:
        assert pragma(path, "user_version") == 3
        assert store.identity == identity
        assert [(r.stream, r.position, r.data, r.refs) async for r in store.read_all()] == [
            ("a", 2, b"a2", ()),
            ("a", 3, b"a3", ()),
            ("b", 1, b"b1", ()),
        ]
        snapshot = await store.load_snapshot("a")
        assert snapshot is not None
        assert snapshot.refs == ()
        record = NewRecord("t", b"b2", refs=(digest(DOC),))
        await store.append_many([StreamAppend("b", (record,), values=given(DOC))])
        assert await store.read_value(digest(DOC)) == DOC
        assert (await store.verify()).ok

    async with await SqliteStore.open(path) as again:
        assert [r.refs async for r in again.read("b")] == [(), (digest(DOC),)]


async def refer_to_doc_and_prompt(path: pathlib.Path) -> None:
    async with await SqliteStore.open(path) as store:
        parts = [
            StreamAppend(
                "s",
                (NewRecord("t", b"r1"), NewRecord("t", b"r2", refs=(digest(DOC),))),
                values=given(DOC, PROMPT),
            )
        ]
        await store.append_many(parts)
        await store.save_snapshot("s", 1, b"state", refs=(digest(PROMPT),))


async def test_a_damaged_value_is_never_returned_and_verify_names_it(path: pathlib.Path) -> None:
    await refer_to_doc_and_prompt(path)
    with raw(path) as conn:
        damaged = b"X" + DOC[1:]
        conn.execute("UPDATE stored_values SET data = ? WHERE digest = ?", (damaged, digest(DOC)))

    async with await SqliteStore.open(path) as store:
        with pytest.raises(CorruptionError, match=digest(DOC)):
            await store.read_value(digest(DOC))
        assert await store.read_value(digest(PROMPT)) == PROMPT
        report = await store.verify()

    assert [(p.kind, digest(DOC) in p.detail) for p in report.problems] == [("value", True)]


async def test_verify_names_every_dangling_ref(path: pathlib.Path) -> None:
    await refer_to_doc_and_prompt(path)
    with raw(path) as conn:
        conn.execute("DELETE FROM stored_values")

    async with await SqliteStore.open(path) as store:
        report = await store.verify()

    assert sorted((p.stream, p.position, p.kind, p.detail) for p in report.problems) == [
        ("s", 1, "dangling ref", f"refers to value {digest(PROMPT)}, not stored"),
        ("s", 2, "dangling ref", f"refers to value {digest(DOC)}, not stored"),
    ]


async def test_refs_rows_go_with_what_refers(path: pathlib.Path) -> None:
    """The refs tables hold one row per (record or snapshot, digest), and lose it in the
    transaction that deletes what refers."""
    await refer_to_doc_and_prompt(path)

    def rows() -> tuple[int, int]:
        with raw(path) as conn:
            records = conn.execute("SELECT count(*) FROM record_refs").fetchone()[0]
            snapshots = conn.execute("SELECT count(*) FROM snapshot_refs").fetchone()[0]
            return records, snapshots

    assert rows() == (1, 1)
    async with await SqliteStore.open(path) as store:
        await store.save_snapshot("s", 2, b"state2")
        await store.truncate("s", 2)
        assert rows() == (0, 0)
        assert await store.collect_values() == 2


#: Writes and reads a value of 64 MiB in a fresh process, and prints how much its peak
#: resident memory grew, in values, from holding the value to having written it (ideally
#: 0: SQLite reads the caller's bytes) and to having read it back (ideally 1: the copy
#: returned).
_LARGE_VALUE = textwrap.dedent(
    """
    import asyncio, hashlib, resource, sys
    from journal import NewRecord, SqliteStore, StreamAppend

    SIZE = 64 * 1024 * 1024

    async def main(path):
        value = hashlib.sha256(b"seed").digest() * (SIZE // 32)
        key = hashlib.sha256(value).hexdigest()
        store = await SqliteStore.open(path, durability="normal", max_record_bytes=1024)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        record = NewRecord("t", key.encode(), refs=(key,))
        await store.append_many([StreamAppend("s", (record,), values={key: value})])
        written = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        back = await store.read_value(key)
        read = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        assert back == value
        del back
        assert (await store.verify()).ok
        await store.close()
        print(written * 1024 / SIZE, read * 1024 / SIZE)

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_a_value_of_64_mib_is_stored_and_read_within_a_few_copies(path: pathlib.Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", _LARGE_VALUE, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    written, read = map(float, done.stdout.split())
    assert written <= 0.5, f"writing grew peak memory by {written:.2f} times the value"
    assert read <= 1.5, f"reading grew peak memory by {read:.2f} times the value"
    with sqlite3.connect(path) as conn:
        (size,) = conn.execute("SELECT length(data) FROM stored_values").fetchone()
    assert size == 64 * 1024 * 1024
