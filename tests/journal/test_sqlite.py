"""What only the SQLite store does: its file, its lock, group commit, damage and a full disk."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from unittest import mock

import anyio
import anyio.to_thread
import pytest

import journal._sqlite_reads
from journal import (
    DEFAULT_MAX_RECORD_BYTES,
    ConflictError,
    CorruptionError,
    FencingError,
    JournalError,
    NewRecord,
    Problem,
    Record,
    Salvaged,
    SchemaVersionError,
    Snapshot,
    SnapshotError,
    SqliteStore,
    StorageError,
    StorageFullError,
    StoreClosedError,
    StoreConfigurationError,
    StoreLockedError,
    StoreReadOnlyError,
    StreamAppend,
    StreamInfo,
)
from journal._file_lock import WRITER_BYTE, FileLock
from journal._records import checksum, head_crc, snapshot_checksum
from journal._sqlite import _Transaction
from journal._sqlite_schema import DELETE_STREAM

pytestmark = pytest.mark.anyio

APPLICATION_ID = 0x616A6631  # "afj1", the journal's PRAGMA application_id
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def path(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "journal.db"


# -- helpers (file access is synchronous on purpose: these are test set-up steps) --------------


@contextlib.contextmanager
def raw(path: pathlib.Path) -> Iterator[sqlite3.Connection]:
    """A plain stdlib connection to ``path``, closed on leaving."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def pragma(path: pathlib.Path, name: str) -> object:
    with raw(path) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


def contents(path: pathlib.Path) -> bytes:
    return path.read_bytes()


def overwrite(path: pathlib.Path, data: bytes) -> None:
    path.write_bytes(data)


def flip(path: pathlib.Path, marker: bytes, offsets: list[int]) -> bytes:
    """Invert the bytes at ``offsets`` into the one place ``marker`` sits in the file.

    Returns the damaged file's bytes.
    """
    original = contents(path)
    at = original.find(marker)
    assert at >= 0, "the marker's bytes were not in the main file after close"
    assert original.find(marker, at + 1) == -1, "the marker is in the file twice"
    damaged = bytearray(original)
    for offset in offsets:
        damaged[at + offset] ^= 0xFF
    overwrite(path, bytes(damaged))
    return bytes(damaged)


async def read_list(store: SqliteStore, stream: str, from_position: int = 1) -> list[Record]:
    return [r async for r in store.read(stream, from_position)]


async def read_all_list(store: SqliteStore) -> list[Record]:
    return [r async for r in store.read_all()]


async def make_journal(path: pathlib.Path) -> None:
    """A small, healthy, closed journal file."""
    store = await SqliteStore.open(path)
    try:
        await store.append("s", [NewRecord("t", b"kept")])
    finally:
        await store.close()


# -- the file ---------------------------------------------------------------------------------


async def test_open_sets_wal_and_marks_the_file_as_a_journal(path: pathlib.Path) -> None:
    store = await SqliteStore.open(path)
    try:
        await store.append("s", [NewRecord("t", b"x")])

        assert pragma(path, "journal_mode") == "wal"
        assert pragma(path, "application_id") == APPLICATION_ID
        assert pragma(path, "user_version") == 3
        assert store.durability == "full"
    finally:
        await store.close()


async def test_unknown_durability_is_refused_before_touching_the_file(path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="bogus"):
        await SqliteStore.open(path, durability="bogus")  # type: ignore[arg-type]

    assert list(path.parent.iterdir()) == []  # no journal, no lock file


async def test_a_file_from_a_newer_schema_is_refused_and_left_untouched(
    path: pathlib.Path,
) -> None:
    await make_journal(path)
    with raw(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    before = contents(path)

    with pytest.raises(SchemaVersionError) as refused:
        await SqliteStore.open(path)

    assert str(path) in str(refused.value)
    assert "version 99" in str(refused.value)
    assert contents(path) == before
    assert pragma(path, "user_version") == 99


async def test_a_foreign_sqlite_file_is_refused_and_left_untouched(path: pathlib.Path) -> None:
    with raw(path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
    before = contents(path)

    with pytest.raises(SchemaVersionError) as refused:
        await SqliteStore.open(path)

    assert str(path) in str(refused.value)
    assert "not an actorflow journal" in str(refused.value)
    assert contents(path) == before
    with raw(path) as conn:
        assert conn.execute("SELECT body FROM notes").fetchall() == [("mine",)]


async def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(
    path: pathlib.Path,
) -> None:
    overwrite(path, b"these are my notes, not a database\n" * 200)
    before = contents(path)

    with pytest.raises(SchemaVersionError) as refused:
        await SqliteStore.open(path)

    assert str(path) in str(refused.value)
    assert contents(path) == before


# -- identity and schema upgrades -------------------------------------------------------------


async def identity_of(path: pathlib.Path) -> str:
    store = await SqliteStore.open(path)
    identity = store.identity
    await store.close()
    return identity


async def test_each_new_file_gets_its_own_identity_and_keeps_it(tmp_path: pathlib.Path) -> None:
    first, second, copy = tmp_path / "first.db", tmp_path / "second.db", tmp_path / "copy.db"
    await make_journal(first)
    await make_journal(second)
    identity = await identity_of(first)
    assert not (tmp_path / "first.db-wal").exists()  # closing checkpointed everything
    shutil.copyfile(first, copy)

    assert re.fullmatch("[0-9a-f]{32}", identity), identity
    assert await identity_of(first) == identity  # after another close and reopen
    assert await identity_of(second) != identity
    assert await identity_of(copy) == identity
    with raw(first) as conn:
        assert conn.execute("SELECT value FROM identity").fetchall() == [(identity,)]


#: Version 1's tables, exactly as version 1 of the journal made them (copied here, so that
#: the upgrade is tested on a file that the code under test did not write).
V1_SCHEMA = """
CREATE TABLE streams (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    first_position INTEGER NOT NULL DEFAULT 1,
    epoch INTEGER NOT NULL DEFAULT 0,
    snapshot_position INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE records (
    global_position INTEGER PRIMARY KEY,
    stream_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    type TEXT NOT NULL,
    data BLOB NOT NULL,
    checksum INTEGER NOT NULL
);
CREATE UNIQUE INDEX records_by_stream ON records (stream_id, position);
CREATE TABLE snapshots (
    stream_id INTEGER PRIMARY KEY,
    position INTEGER NOT NULL,
    data BLOB NOT NULL,
    checksum INTEGER NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('global_high_water', 0);
"""


def make_version_1_journal(path: pathlib.Path) -> None:
    """A journal file as version 1 left it: stream "a" claimed twice, snapshotted at 2 and
    truncated through 1; stream "b"; stream "c", whose one record (the newest in the
    file, global position 5) was truncated away."""
    rows = [(2, "a", 2, b"a2"), (3, "a", 3, b"a3"), (4, "b", 1, b"b1")]
    with raw(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(
            f"BEGIN IMMEDIATE; {V1_SCHEMA} PRAGMA application_id = {APPLICATION_ID}; "
            f"PRAGMA user_version = 1; COMMIT;"
        )
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO streams (id, name, first_position, epoch, snapshot_position) "
            "VALUES (?, ?, ?, ?, ?)",
            [(1, "a", 2, 2, 2), (2, "b", 1, 0, 0), (3, "c", 2, 0, 1)],
        )
        conn.executemany(
            "INSERT INTO records VALUES (?, ?, ?, 't', ?, ?)",
            [
                (g, {"a": 1, "b": 2}[name], at, data, checksum(name, at, "t", data))
                for g, name, at, data in rows
            ],
        )
        conn.executemany(
            "INSERT INTO snapshots VALUES (?, ?, ?, ?)",
            [
                (1, 2, b"state-a", snapshot_checksum("a", 2, b"state-a")),
                (3, 1, b"state-c", snapshot_checksum("c", 1, b"state-c")),
            ],
        )
        conn.execute("UPDATE meta SET value = 5 WHERE key = 'global_high_water'")
        conn.execute("COMMIT")


async def test_a_version_1_file_is_upgraded_in_place_and_gets_an_identity(
    path: pathlib.Path,
) -> None:
    make_version_1_journal(path)
    assert pragma(path, "user_version") == 1

    store = await SqliteStore.open(path)
    try:
        identity = store.identity
        assert pragma(path, "user_version") == 3
        assert [
            (r.stream, r.position, r.global_position, r.data) for r in await read_all_list(store)
        ] == [
            ("a", 2, 2, b"a2"),
            ("a", 3, 3, b"a3"),
            ("b", 1, 4, b"b1"),
        ]
        assert await store.stream_info("a") == StreamInfo("a", 3, 2, 2, 2)
        assert await store.stream_info("c") == StreamInfo("c", 1, 2, 0, 1)
        assert await store.load_snapshot("a") == Snapshot("a", 2, b"state-a")
        assert await store.list_streams() == ["a", "b", "c"]
        with pytest.raises(FencingError):
            await store.append("a", [NewRecord("t", b"stale")], epoch=1)
        appended = await store.append("c", [NewRecord("t", b"c2")], expected_position=1)
        assert (appended.first_position, appended.last_global_position) == (2, 6)
        assert (await store.verify()).ok
    finally:
        await store.close()

    assert re.fullmatch("[0-9a-f]{32}", identity), identity
    assert await identity_of(path) == identity  # generated once, kept from then on
    with raw(path) as conn:
        assert conn.execute("SELECT value FROM identity").fetchall() == [(identity,)]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3


async def test_a_file_that_lost_its_identity_is_refused(path: pathlib.Path) -> None:
    await make_journal(path)
    with raw(path) as conn:
        conn.execute("DELETE FROM identity")
    before = contents(path)

    with pytest.raises(SchemaVersionError, match="identity is missing or malformed"):
        await SqliteStore.open(path)

    assert contents(path) == before  # a journal's identity is never silently replaced


async def test_a_second_open_of_an_open_file_is_refused(path: pathlib.Path) -> None:
    first = await SqliteStore.open(path)
    try:
        with pytest.raises(StoreLockedError) as refused:
            await SqliteStore.open(path)

        assert str(path) in str(refused.value)
        await first.append("s", [NewRecord("t", b"first still works")])
    finally:
        await first.close()

    second = await SqliteStore.open(path)
    try:
        assert [r.data for r in await read_list(second, "s")] == [b"first still works"]
    finally:
        await second.close()


# -- large records ----------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])  # once is enough
async def test_a_record_at_the_default_limit_round_trips(path: pathlib.Path) -> None:
    """SQLite takes a record as large as the default limit, and gives it back intact.

    (Compared by digest: a failing comparison of two 32 MiB values would take pytest ages
    to explain.)
    """
    size = 32 * 1024 * 1024
    big = bytes(range(256)) * (size // 256)  # varied bytes, so a cut or shifted copy shows
    digest = hashlib.sha256(big).hexdigest()
    store = await SqliteStore.open(path)  # with the default limit
    try:
        assert (store.max_record_bytes, DEFAULT_MAX_RECORD_BYTES) == (size, size)
        await store.append("big", [NewRecord("t", big), NewRecord("t", b"after")])
    finally:
        await store.close()

    store = await SqliteStore.open(path)
    try:
        stored = await read_list(store, "big")
        assert [(r.position, len(r.data)) for r in stored] == [(1, size), (2, 5)]
        assert hashlib.sha256(stored[0].data).hexdigest() == digest
        assert stored[1].data == b"after"
    finally:
        await store.close()


async def test_a_page_read_holds_a_bounded_number_of_payload_bytes(
    path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With records this large, a page of `READ_BATCH` could hold gigabytes: pages stop
    once past `READ_BYTES` (here 2,500 bytes, so three 1,000-byte records a page)."""
    monkeypatch.setattr(journal._sqlite_reads, "READ_BYTES", 2500)
    store = await SqliteStore.open(path)
    try:
        await store.append("big", [NewRecord("t", b"%04d" % n * 250) for n in range(1, 11)])
        await store.append("other", one(b"after"))

        batches = [[r.position for r in batch] async for batch in store.read_batches("big")]
        log = await read_all_list(store)
    finally:
        await store.close()

    assert batches == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    assert [(r.stream, r.position) for r in log] == [("big", n) for n in range(1, 11)] + [
        ("other", 1)
    ]
    assert [r.data[:4] for r in log[:10]] == [b"%04d" % n for n in range(1, 11)]


# -- one writer per file ---------------------------------------------------------------------


def another_name(path: pathlib.Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Another way to name the file at ``path`` (which need not exist yet)."""
    directory = path.parent
    (directory / "sub").mkdir()
    if kind == "symlink":
        (directory / "link.db").symlink_to(path)
        return str(directory / "link.db")
    if kind == "symlinked-directory":
        (directory / "linked").symlink_to(directory, target_is_directory=True)
        return str(directory / "linked" / path.name)
    if kind == "dot-dot":
        return f"{directory}/sub/../{path.name}"
    if kind == "dot":
        return f"{directory}/./{path.name}"
    assert kind == "relative"
    monkeypatch.chdir(directory / "sub")
    return f"../{path.name}"


ALIASES = ["symlink", "symlinked-directory", "dot-dot", "dot", "relative"]


@pytest.mark.parametrize("kind", ALIASES)
async def test_another_name_for_an_open_file_is_refused(
    path: pathlib.Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    alias = another_name(path, kind, monkeypatch)
    first = await SqliteStore.open(path)
    try:
        with pytest.raises(StoreLockedError) as refused:
            await SqliteStore.open(alias)
        assert alias in str(refused.value)
        await first.append("s", [NewRecord("t", b"through the real name")])
    finally:
        await first.close()

    second = await SqliteStore.open(alias)
    try:
        with pytest.raises(StoreLockedError):
            await SqliteStore.open(path)
        await second.append("s", [NewRecord("t", b"through the alias")])
        assert [r.data for r in await read_list(second, "s")] == [
            b"through the real name",
            b"through the alias",
        ]
    finally:
        await second.close()


TRY_OPEN = """
import asyncio, sys
from journal import SqliteStore, StoreConfigurationError, StoreLockedError

async def main() -> None:
    try:
        store = await SqliteStore.open(sys.argv[1])
    except (StoreLockedError, StoreConfigurationError) as exc:
        print(type(exc).__name__)
    else:
        await store.close()
        print("opened")

asyncio.run(main())
"""


def try_open_in_another_process(path: str) -> str:
    """Open ``path`` from a child process: "opened", or the name of the error it got."""
    child = subprocess.run(
        [sys.executable, "-c", TRY_OPEN, path],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
        check=True,
    )
    return child.stdout.decode().strip()


@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])
async def test_a_symlink_to_a_file_open_in_another_process_is_refused(
    path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alias = another_name(path, "symlink", monkeypatch)
    for mine, theirs in [(path, alias), (alias, str(path))]:
        store = await SqliteStore.open(mine)
        try:
            refused = await anyio.to_thread.run_sync(try_open_in_another_process, theirs)
            assert refused == "StoreLockedError"
        finally:
            await store.close()
        assert await anyio.to_thread.run_sync(try_open_in_another_process, theirs) == "opened"


async def test_a_file_with_a_second_name_is_refused(path: pathlib.Path) -> None:
    await make_journal(path)
    link = path.parent / "hard-link.db"
    os.link(path, link)
    before = contents(path)

    for name in (path, link):
        with pytest.raises(StoreConfigurationError) as refused:
            await SqliteStore.open(name)
        assert str(name) in str(refused.value)
        assert "2 names (hard links)" in str(refused.value)
    assert contents(path) == before

    link.unlink()
    store = await SqliteStore.open(path)  # the lock was let go with the refusal
    try:
        assert [r.data for r in await read_list(store, "s")] == [b"kept"]
    finally:
        await store.close()


@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])
async def test_a_hard_link_to_a_file_open_in_another_process_is_refused(
    path: pathlib.Path,
) -> None:
    """Both stores would get their lock (the paths differ), and SQLite would give each name
    its own write-ahead log: the second is refused before it touches the file."""
    store = await SqliteStore.open(path)
    try:
        await store.append("s", [NewRecord("t", b"1")])
        link = path.parent / "hard-link.db"
        os.link(path, link)
        opened = await anyio.to_thread.run_sync(try_open_in_another_process, str(link))
        assert opened == "StoreConfigurationError"
        assert not (path.parent / "hard-link.db-wal").exists()
        await store.append("s", [NewRecord("t", b"2")])
    finally:
        await store.close()


def delete_lock_file(path: pathlib.Path) -> None:
    pathlib.Path(f"{path}.lock").unlink()


def delete_side_files(path: pathlib.Path) -> list[str]:
    """Delete every file beside the journal whose name extends the journal's (its lock
    file, write-ahead log and shared index); the names deleted."""
    gone = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "."))
    gone += sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "-"))
    for name in gone:
        (path.parent / name).unlink()
    return gone


@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])
@pytest.mark.parametrize("where", ["this process", "another process"])
async def test_deleting_the_lock_file_does_not_let_a_second_writer_in(
    path: pathlib.Path, where: str
) -> None:
    """The lock is on the journal file itself: the `.lock` file beside it (which older
    versions relied on, and a clean-up of "stale" lock files deletes) decides nothing."""
    store = await SqliteStore.open(path)
    try:
        await store.append("s", one(b"1"))
        delete_lock_file(path)

        if where == "this process":
            with pytest.raises(StoreLockedError, match="open for writing elsewhere"):
                await SqliteStore.open(path)
        else:
            opened = await anyio.to_thread.run_sync(try_open_in_another_process, str(path))
            assert opened == "StoreLockedError"
        await store.append("s", one(b"2"))  # the owner goes on, and reads what it wrote
        assert [r.data for r in await read_list(store, "s")] == [b"1", b"2"]
    finally:
        await store.close()


@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])
async def test_deleting_every_side_file_does_not_let_a_second_writer_in(
    path: pathlib.Path,
) -> None:
    """Not even the write-ahead log and its index. (Deleting those loses what they hold;
    SQLite then refuses to go on with the store, with a "disk I/O error": it is the lock
    that is checked here, not the wisdom of deleting them.)"""
    store = await SqliteStore.open(path)
    try:
        await store.append("s", one(b"1"))
        gone = delete_side_files(path)
        assert gone == ["journal.db.lock", "journal.db-shm", "journal.db-wal"]

        opened = await anyio.to_thread.run_sync(try_open_in_another_process, str(path))
        assert opened == "StoreLockedError"
        with pytest.raises(StoreLockedError):
            await SqliteStore.open(path)
    finally:
        await store.close()


PROBE_LOCKS = """
import ctypes, fcntl, os, sys

class Flock(ctypes.Structure):
    _fields_ = [("l_type", ctypes.c_short), ("l_whence", ctypes.c_short),
                ("l_start", ctypes.c_int64), ("l_len", ctypes.c_int64), ("l_pid", ctypes.c_int)]

fd = os.open(sys.argv[1], os.O_RDWR)
for start, length in [(0x40000002, 510), (int(sys.argv[2]), 1)]:
    asked = bytes(Flock(fcntl.F_WRLCK, os.SEEK_SET, start, length, 0))
    found = Flock.from_buffer_copy(fcntl.fcntl(fd, fcntl.F_GETLK, asked))
    print("held" if found.l_type != fcntl.F_UNLCK else "free")
"""


def locks_seen_from_outside(path: pathlib.Path) -> tuple[str, str]:
    """From another process: whether SQLite's shared lock bytes of the journal file are
    locked (a WAL connection holds them while it is open), and whether the writer's byte
    is."""
    child = subprocess.run(
        [sys.executable, "-c", PROBE_LOCKS, str(path), str(WRITER_BYTE)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    shared, writer = child.stdout.decode().split()
    return shared, writer


@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])
async def test_a_refused_opener_in_this_process_leaves_sqlites_locks_alone(
    path: pathlib.Path,
) -> None:
    """Closing any descriptor of a file drops every POSIX lock the process holds on it,
    SQLite's included: a second store of this process is refused without opening (and
    so without closing) the file, and a read-only store's connections are SQLite's own."""
    store = await SqliteStore.open(path)
    try:
        await store.append("s", one(b"1"))
        assert await anyio.to_thread.run_sync(locks_seen_from_outside, path) == ("held", "held")

        for _ in range(3):
            with pytest.raises(StoreLockedError):
                await SqliteStore.open(path)
        reader = await SqliteStore.open(path, read_only=True)
        assert [r.data for r in await read_list(reader, "s")] == [b"1"]
        await reader.close()

        assert await anyio.to_thread.run_sync(locks_seen_from_outside, path) == ("held", "held")
        await store.append("s", one(b"2"))
    finally:
        await store.close()
    assert await anyio.to_thread.run_sync(locks_seen_from_outside, path) == ("free", "free")


# -- reading beside the writer ----------------------------------------------------------------


async def test_a_read_only_store_reads_beside_the_writer_and_writes_nothing(
    path: pathlib.Path,
) -> None:
    store = await SqliteStore.open(path)
    try:
        await store.append("s", [NewRecord("t", b"1"), NewRecord("t", b"2")])
        await store.save_snapshot("s", 1, b"state")
        reader = await SqliteStore.open(path, read_only=True)
        try:
            assert reader.identity == store.identity
            await store.append("s", one(b"3"))  # seen by the reader: WAL, no lock
            assert [r.data for r in await read_list(reader, "s")] == [b"1", b"2", b"3"]
            assert await reader.load_snapshot("s") == Snapshot("s", 1, b"state")
            assert await reader.list_streams() == ["s"]
            assert (await reader.verify()).ok
            before = contents(path)
            writes: list[Callable[[], Awaitable[object]]] = [
                lambda: reader.append("s", one(b"x")),
                lambda: reader.append_many([StreamAppend("t", tuple(one(b"x")))]),
                lambda: reader.claim("s"),
                lambda: reader.save_snapshot("s", 2, b"x"),
                lambda: reader.truncate("s", 1),
                lambda: reader.delete_stream("s"),
            ]
            for write in writes:
                with pytest.raises(StoreReadOnlyError, match="opened read-only") as refused:
                    await write()
                assert str(path) in str(refused.value)
            assert contents(path) == before
        finally:
            await reader.close()
        with pytest.raises(StoreClosedError):
            await read_list(reader, "s")
        await store.append("s", one(b"4"))
    finally:
        await store.close()


async def test_a_read_only_open_changes_nothing_and_refuses_what_it_cannot_read(
    tmp_path: pathlib.Path,
) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(StorageError, match="no journal file there to read"):
        await SqliteStore.open(missing, read_only=True)
    assert not missing.exists()

    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(SchemaVersionError, match="holds no journal"):
        await SqliteStore.open(empty, read_only=True)
    assert empty.read_bytes() == b""

    foreign = tmp_path / "foreign.db"
    with raw(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    before = contents(foreign)
    with pytest.raises(SchemaVersionError, match="not an actorflow journal"):
        await SqliteStore.open(foreign, read_only=True)
    assert contents(foreign) == before


# -- group commit -----------------------------------------------------------------------------


async def test_concurrent_appends_share_commits(path: pathlib.Path) -> None:
    store = await SqliteStore.open(path)
    try:
        async with anyio.create_task_group() as tg:
            for n in range(200):
                tg.start_soon(store.append, f"s{n % 7}", [NewRecord("t", b"%d" % n)])

        stats = store.stats
        assert stats.records == 200
        assert stats.requests == 200
        assert stats.commits < 200
        assert sum(stats.batch_sizes.values()) == stats.commits
        assert sum(size * count for size, count in stats.batch_sizes.items()) == 200
        assert sum([await store.last_position(f"s{k}") for k in range(7)]) == 200
    finally:
        await store.close()


async def test_a_crowd_larger_than_a_wake_slice_takes_turns_in_commits(
    path: pathlib.Path,
) -> None:
    """Callers of one commit are woken a slice at a time, and the next commit starts with
    the first slice's new appends instead of waiting for the whole crowd."""
    crowd, rounds = 3 * SqliteStore.wake_slice, 4
    store = await SqliteStore.open(path)
    try:
        landed: dict[str, list[int]] = {}

        async def agent(stream: str) -> None:
            for n in range(1, rounds + 1):
                appended = await store.append(stream, [NewRecord("t", b"%d" % n)])
                landed.setdefault(stream, []).append(appended.first_position)

        async with anyio.create_task_group() as tg:
            for n in range(crowd):
                tg.start_soon(agent, f"agent/{n:04}")

        assert all(positions == [1, 2, 3, 4] for positions in landed.values())
        assert len(landed) == crowd
        sizes = store.stats.batch_sizes
        assert sizes.total() == store.stats.commits
        assert max(sizes) == crowd  # everyone's first append shares the first commit
        # then a commit starts after the first slice is woken
        assert SqliteStore.wake_slice in sizes
        assert store.stats.records == crowd * rounds
        assert store.stats.resyncs == 0  # a writer alone never sees the file change under it
    finally:
        await store.close()
    reopened = await SqliteStore.open(path)
    try:
        assert (await reopened.verify()).ok
        assert await reopened.last_position("agent/0000") == rounds
    finally:
        await reopened.close()


async def test_callers_are_woken_only_once_the_next_commit_is_staged(
    path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the writer thread stages a commit, the loop wakes nobody (both would need the
    GIL): the previous commit's callers, but for the first slice whose appends formed this
    commit, run once the writer has entered COMMIT."""
    resumed = 0  # callers whose append has returned (counted on the event loop)
    stagings: list[tuple[int, int]] = []  # resumed callers as each staging began and ended
    flush_rows = _Transaction.flush_rows

    def counted_flush_rows(txn: _Transaction) -> None:  # on the writer thread
        before = resumed
        flush_rows(txn)
        stagings.append((before, resumed))

    monkeypatch.setattr(_Transaction, "flush_rows", counted_flush_rows)
    store = await SqliteStore.open(path)
    try:

        async def agent(stream: str) -> None:
            nonlocal resumed
            for n in range(3):
                await store.append(stream, [NewRecord("t", b"%d" % n)])
                resumed += 1

        crowd = 4 * SqliteStore.wake_slice
        async with anyio.create_task_group() as tg:
            for n in range(crowd):
                tg.start_soon(agent, f"agent/{n:04}")
        assert store.stats.records == 3 * crowd
    finally:
        await store.close()
    assert stagings[0] == (0, 0)  # the whole crowd's first appends
    woken = SqliteStore.wake_slice
    assert stagings[1] == (woken, woken)  # only the first slice was woken
    assert all(before == after for before, after in stagings)


async def test_a_refused_request_fails_alone_in_its_commit(path: pathlib.Path) -> None:
    store = await SqliteStore.open(path)
    try:
        await store.append("contended", [NewRecord("t", b"base")])
        commits_before = store.stats.commits
        refused: list[ConflictError] = []

        async def write(stream: str, expected: int | None) -> None:
            try:
                await store.append(stream, [NewRecord("t", b"x")], expected_position=expected)
            except ConflictError as exc:
                refused.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write, "a", None)
            tg.start_soon(write, "contended", 0)  # wrong: the stream is at 1
            tg.start_soon(write, "b", None)

        assert [(c.stream, c.expected, c.actual) for c in refused] == [("contended", 0, 1)]
        assert await store.last_position("a") == 1
        assert await store.last_position("b") == 1
        assert await store.last_position("contended") == 1
        assert store.stats.commits - commits_before < 3  # they did share a commit
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("stream", "bad"),
    [
        ("bad", NewRecord("t", "text, not bytes")),  # type: ignore[arg-type]
        ("bad \ud800", NewRecord("t", b"x")),
        ("bad", NewRecord("type \ud800", b"x")),
    ],
    ids=["payload-not-bytes", "unencodable-stream-name", "unencodable-type"],
)
async def test_a_malformed_request_does_not_fail_its_neighbours(
    path: pathlib.Path, stream: str, bad: NewRecord
) -> None:
    store = await SqliteStore.open(path)
    try:
        landed: list[str] = []
        innocent_failures: list[str] = []
        malformed_failures: list[BaseException] = []

        async def good(name: str) -> None:
            try:
                await store.append(name, [NewRecord("t", name.encode())])
            except Exception as exc:
                innocent_failures.append(f"{name}: {type(exc).__name__}: {exc}")
            else:
                landed.append(name)

        async def malformed() -> None:
            try:
                await store.append(stream, [bad])
            except (TypeError, ValueError, JournalError) as exc:
                malformed_failures.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(good, "innocent/1")
            tg.start_soon(malformed)
            tg.start_soon(good, "innocent/2")

        assert innocent_failures == []
        assert len(malformed_failures) == 1
        assert sorted(landed) == ["innocent/1", "innocent/2"]
        assert await store.list_streams() == ["innocent/1", "innocent/2"]
        assert (await store.verify()).ok
    finally:
        await store.close()


# -- deleting streams -------------------------------------------------------------------------


async def test_deleting_a_stream_finds_its_rows_by_index(path: pathlib.Path) -> None:
    await make_journal(path)
    with raw(path) as conn:
        plans = {
            statement: " ".join(
                row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}", (1,))
            )
            for statement in DELETE_STREAM
        }

    records, snapshots, streams = DELETE_STREAM
    assert "USING INDEX records_by_stream (stream_id=?)" in plans[records]
    assert "USING INTEGER PRIMARY KEY (rowid=?)" in plans[snapshots]
    assert "USING INTEGER PRIMARY KEY (rowid=?)" in plans[streams]
    assert not [plan for plan in plans.values() if "SCAN" in plan]


async def test_a_delete_in_a_commit_applies_in_order_with_the_appends_around_it(
    path: pathlib.Path,
) -> None:
    store = await SqliteStore.open(path)
    try:
        await store.append("deleted-last", [NewRecord("t", b"old")])
        await store.append("deleted-first", [NewRecord("t", b"old")])
        await store.claim("deleted-first")
        commits = store.stats.commits
        done: list[object] = []

        async def call(fn: Callable[[], Awaitable[object]]) -> None:
            done.append(await fn())

        async with anyio.create_task_group() as tg:  # queued in this order, in one commit
            for fn in [
                lambda: store.append("deleted-last", [NewRecord("t", b"staged")]),
                lambda: store.delete_stream("deleted-last"),
                lambda: store.delete_stream("deleted-first"),
                lambda: store.append("deleted-first", [NewRecord("t", b"new")]),
            ]:
                tg.start_soon(call, fn)

        assert store.stats.commits == commits + 1
        assert await store.stream_info("deleted-last") == StreamInfo("deleted-last", 0, 1, 0, 0)
        assert [(r.position, r.data) for r in await read_list(store, "deleted-first")] == [
            (1, b"new")
        ]
        assert await store.list_streams() == ["deleted-first"]
        assert (await store.verify()).ok
        assert await store.claim("deleted-first") == 1  # the writer forgot the old epoch too
    finally:
        await store.close()
    with raw(path) as conn:  # nothing staged before the delete was left behind
        assert conn.execute("SELECT data FROM records").fetchall() == [(b"new",)]


async def test_a_failed_commit_deletes_nothing(path: pathlib.Path) -> None:
    store = await SqliteStore.open(path, max_bytes=256 * 1024)
    try:
        epoch = await store.claim("s")
        await store.append("s", [NewRecord("t", b"1"), NewRecord("t", b"2")], epoch=epoch)
        refused: list[BaseException] = []

        async def call(fn: Callable[[], Awaitable[object]]) -> None:
            try:
                await fn()
            except StorageFullError as exc:
                refused.append(exc)

        async with anyio.create_task_group() as tg:  # one commit, which the disk cannot take
            tg.start_soon(call, lambda: store.delete_stream("s", epoch=epoch))
            tg.start_soon(call, lambda: store.append("big", [NewRecord("t", b"x" * 512 * 1024)]))

        assert len(refused) == 2
        assert await store.stream_info("s") == StreamInfo("s", 2, 1, epoch, 0)
        # the writer's memory was rolled back with the file: the stream goes on where it was
        appended = await store.append("s", [NewRecord("t", b"3")], expected_position=2, epoch=epoch)
        assert appended.first_position == 3
        assert await store.delete_stream("s", epoch=epoch) is True
    finally:
        await store.close()


async def test_deleted_streams_do_not_crowd_the_writers_memory(path: pathlib.Path) -> None:
    store = await SqliteStore.open(path, cached_streams=1000)
    try:
        await store.append("live", [NewRecord("t", b"x")])
        await store.append("live", [NewRecord("t", b"y")])  # written again: kept in memory
        for n in range(500):
            await store.append(f"claim/{n}", [NewRecord("t", b"x")])
            await store.delete_stream(f"claim/{n}")

        assert list(store._states) == ["live"]
        assert await store.list_streams() == ["live"]
        with raw(path) as conn:
            assert conn.execute("SELECT count(*) FROM streams").fetchone()[0] == 1
            assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 2
    finally:
        await store.close()


# -- two writers on one file ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def two_writers(path: pathlib.Path) -> AsyncIterator[tuple[SqliteStore, SqliteStore]]:
    """Two stores writing one file, as when the lock does not work (a file system whose
    locks do nothing, or an older actorflow that only locked a side file someone deleted):
    the second opens without the lock, and each trusts its own cache of positions and
    epochs."""
    first = await SqliteStore.open(path)
    try:
        with lock_not_working():
            second = await SqliteStore.open(path)
        try:
            yield first, second
        finally:
            await second.close()
    finally:
        await first.close()


@contextlib.contextmanager
def lock_not_working() -> Iterator[None]:
    """Stores opened meanwhile take no lock, as on a file system whose locks do nothing."""
    with mock.patch.object(FileLock, "acquire", return_value=None):
        yield


def one(data: bytes) -> list[NewRecord]:
    return [NewRecord("t", data)]


async def test_a_stale_owner_is_fenced_by_the_file(path: pathlib.Path) -> None:
    async with two_writers(path) as (zombie, owner):
        old = await zombie.claim("s")
        await zombie.append("s", one(b"old owner"), epoch=old)
        new = await owner.claim("s")  # read from the file: the zombie's cache still says old

        with pytest.raises(FencingError) as refused:
            await zombie.append("s", one(b"zombie"), epoch=old)

        assert (refused.value.stream, refused.value.epoch, refused.value.current) == ("s", old, new)
        assert f"epoch is {new}" in str(refused.value)
        await owner.append("s", one(b"new owner"), epoch=new)
        assert [r.data for r in await read_list(owner, "s")] == [b"old owner", b"new owner"]
        assert zombie.stats.resyncs == 1


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda store, e: store.save_snapshot("s", 1, b"zombie", epoch=e), id="snapshot"
        ),
        pytest.param(lambda store, e: store.truncate("s", 0, epoch=e), id="truncate"),
        pytest.param(lambda store, e: store.delete_stream("s", epoch=e), id="delete"),
        pytest.param(
            lambda store, e: store.append_many([StreamAppend("s", (), epoch=e, snapshot=b"z")]),
            id="append-snapshot",
        ),
    ],
)
async def test_a_stale_owner_cannot_rewrite_a_stream_either(
    path: pathlib.Path, write: Callable[[SqliteStore, int], Awaitable[object]]
) -> None:
    async with two_writers(path) as (zombie, owner):
        old = await zombie.claim("s")
        await zombie.append("s", one(b"1"), epoch=old)
        new = await owner.claim("s")

        with pytest.raises(FencingError) as refused:
            await write(zombie, old)

        assert (refused.value.epoch, refused.value.current) == (old, new)
        assert await owner.stream_info("s") == StreamInfo("s", 1, 1, new, 0)
        assert await owner.load_snapshot("s") is None


async def test_a_claim_through_a_stale_cache_is_still_the_highest(path: pathlib.Path) -> None:
    async with two_writers(path) as (first, second):
        assert await first.claim("s") == 1
        assert await second.claim("s") == 2
        assert await second.claim("s") == 3

        assert await first.claim("s") == 4
        assert (await second.stream_info("s")).epoch == 4


async def test_a_stale_position_is_refused_with_the_files_position(path: pathlib.Path) -> None:
    async with two_writers(path) as (first, second):
        await first.append("s", one(b"1"))
        await second.append("s", [NewRecord("t", b"2"), NewRecord("t", b"3")])

        with pytest.raises(ConflictError) as refused:  # the first still believes s is at 1
            await first.append("s", one(b"lost?"), expected_position=1)
        appended = await first.append("s", one(b"4"))  # and without an expected position

        assert (refused.value.expected, refused.value.actual) == (1, 3)
        assert appended.first_position == 4
        assert [r.data for r in await read_list(second, "s")] == [b"1", b"2", b"3", b"4"]
        assert (await first.verify()).ok


async def test_a_commit_with_stale_requests_still_commits_the_good_ones(
    path: pathlib.Path,
) -> None:
    async with two_writers(path) as (first, second):
        mine = await first.claim("mine")
        stale = await first.claim("taken")
        await first.append("taken", one(b"t1"), epoch=stale)
        await first.append("moved", one(b"m1"))
        current = await second.claim("taken")
        await second.append("moved", one(b"m2"))  # and global positions move on too
        outcomes: dict[str, object] = {}

        async def write(label: str, call: Callable[[], Awaitable[object]]) -> None:
            try:
                outcomes[label] = await call()
            except JournalError as exc:
                outcomes[label] = exc

        commits = first.stats.commits
        async with anyio.create_task_group() as tg:  # queued together: one commit
            tg.start_soon(write, "fenced", lambda: first.append("taken", one(b"x"), epoch=stale))
            tg.start_soon(write, "mine", lambda: first.append("mine", one(b"ok1"), epoch=mine))
            tg.start_soon(
                write, "conflict", lambda: first.append("moved", one(b"x"), expected_position=1)
            )
            tg.start_soon(
                write, "new", lambda: first.append("new", one(b"ok2"), expected_position=0)
            )

        assert first.stats.commits == commits + 1
        fenced, conflict = outcomes["fenced"], outcomes["conflict"]
        assert isinstance(fenced, FencingError)
        assert (fenced.epoch, fenced.current) == (stale, current)
        assert isinstance(conflict, ConflictError)
        assert (conflict.expected, conflict.actual) == (1, 2)
        assert [r.data for r in await read_list(second, "mine")] == [b"ok1"]
        assert [r.data for r in await read_list(second, "new")] == [b"ok2"]
        assert [r.data for r in await read_list(second, "taken")] == [b"t1"]
        assert [r.data for r in await read_list(second, "moved")] == [b"m1", b"m2"]
        log = await read_all_list(second)
        assert [r.global_position for r in log] == sorted({r.global_position for r in log})
        assert (await second.verify()).ok


async def test_two_writers_appending_together_lose_nothing(path: pathlib.Path) -> None:
    acknowledged: list[tuple[str, bytes]] = []

    async def writer(store: SqliteStore, name: str) -> None:
        for n in range(40):
            stream = f"shared/{n % 3}"
            data = f"{name}:{n}".encode()
            await store.append(stream, one(data))
            acknowledged.append((stream, data))

    async with two_writers(path) as (first, second):
        async with anyio.create_task_group() as tg:
            for k in range(4):
                tg.start_soon(writer, first, f"first-{k}")
                tg.start_soon(writer, second, f"second-{k}")
        stored = {
            (r.stream, r.data): r.position
            for stream in ("shared/0", "shared/1", "shared/2")
            for r in await read_list(first, stream)
        }
        report = await second.verify()
        resyncs = first.stats.resyncs + second.stats.resyncs

    assert resyncs > 0  # they did get in each other's way
    assert sorted(stored) == sorted(acknowledged)
    assert report.ok, report.problems
    assert report.records == len(acknowledged) == 320


async def test_an_append_to_a_stream_another_writer_deleted_starts_it_over(
    path: pathlib.Path,
) -> None:
    async with two_writers(path) as (first, second):
        await first.append("s", [NewRecord("t", b"1"), NewRecord("t", b"2")])
        assert await second.delete_stream("s") is True

        appended = await first.append("s", one(b"again"))  # unfenced: no epoch to check

        assert (appended.first_position, appended.last_position) == (1, 1)
        assert [(r.position, r.data) for r in await read_list(second, "s")] == [(1, b"again")]
        report = await second.verify()
        assert report.ok, report.problems  # nothing left under the deleted stream's id


async def test_global_positions_stay_unique_when_another_writer_deleted_the_newest(
    path: pathlib.Path,
) -> None:
    async with two_writers(path) as (first, second):
        await first.append("a", one(b"a1"))
        newest = await second.append("b", [NewRecord("t", b"b1"), NewRecord("t", b"b2")])
        await second.delete_stream("b")  # the newest records go; their global positions stay used

        later = await first.append("c", one(b"c1"))

        assert later.last_global_position > newest.last_global_position


async def test_the_unique_index_catches_a_stale_position_the_writer_missed(
    path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a writer fail to notice the other's commits, its stale positions still
    collide with the other's rows in the (stream_id, position) index: the commit is
    tried again on what the file holds, and the good requests go through."""
    monkeypatch.setattr(SqliteStore, "_written_behind_our_back", lambda self, conn: False)
    async with two_writers(path) as (first, second):
        await first.append("s", one(b"1"))
        await second.append("s", [NewRecord("t", b"2"), NewRecord("t", b"3")])
        outcomes: dict[str, object] = {}

        async def write(label: str, call: Callable[[], Awaitable[object]]) -> None:
            try:
                outcomes[label] = await call()
            except JournalError as exc:
                outcomes[label] = exc

        async with anyio.create_task_group() as tg:  # queued together: one commit
            tg.start_soon(write, "stale", lambda: first.append("s", one(b"x"), expected_position=1))
            tg.start_soon(write, "good", lambda: first.append("t", one(b"ok")))
            tg.start_soon(write, "after", lambda: first.append("s", one(b"4")))

        stale = outcomes["stale"]
        assert isinstance(stale, ConflictError)
        assert (stale.expected, stale.actual) == (1, 3)
        assert [r.data for r in await read_list(second, "s")] == [b"1", b"2", b"3", b"4"]
        assert [r.data for r in await read_list(second, "t")] == [b"ok"]
        assert first.stats.resyncs == 1
        assert (await second.verify()).ok


# -- reads beside the writer ------------------------------------------------------------------


async def test_reads_proceed_while_the_writer_waits(path: pathlib.Path) -> None:
    store = await SqliteStore.open(path)
    try:
        await store.append("s", [NewRecord("t", b"committed")])
        written = anyio.Event()

        async def write() -> None:
            await store.append("s", [NewRecord("t", b"queued")])
            written.set()

        with raw(path) as blocker:
            blocker.execute("BEGIN IMMEDIATE")  # holds SQLite's write lock: the writer waits
            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                try:
                    assert [r.data for r in await read_list(store, "s")] == [b"committed"]
                    assert await store.last_position("s") == 1
                    assert await store.list_streams() == ["s"]
                    assert (await store.verify()).ok
                    assert not written.is_set()
                finally:
                    blocker.execute("ROLLBACK")

        assert written.is_set()
        assert [r.data for r in await read_list(store, "s")] == [b"committed", b"queued"]
    finally:
        await store.close()


async def test_an_open_read_does_not_hold_a_reader_between_batches(path: pathlib.Path) -> None:
    store = await SqliteStore.open(path, readers=1)
    try:
        for first in range(0, 6000, 1000):
            for stream in ("a", "b"):
                batch = [NewRecord("t", b"%d" % n) for n in range(first, first + 1000)]
                await store.append(stream, batch)

        a, b = store.read("a"), store.read("b")
        pairs = []
        with anyio.fail_after(30):  # a reader held across batches would deadlock here
            for _ in range(6000):
                pairs.append(((await anext(a)).position, (await anext(b)).position))
                if len(pairs) % 1500 == 0:
                    assert await store.last_position("a") == 6000
            for exhausted in (a, b):
                with pytest.raises(StopAsyncIteration):
                    await anext(exhausted)

        assert pairs == [(n, n) for n in range(1, 6001)]
    finally:
        await store.close()


# -- damage -----------------------------------------------------------------------------------


async def test_a_damaged_record_is_reported_and_nothing_is_written(path: pathlib.Path) -> None:
    marker = b"<<unique-marker-7f3a9c-" + b"0123456789" * 4 + b">>"
    victim = [b"v1", b"v2", b"pad" * 30 + marker + b"pad" * 30, b"v4", b"v5"]
    store = await SqliteStore.open(path)
    try:
        for data in victim:
            await store.append("victim", [NewRecord("t", data)])
        await store.append("bystander", [NewRecord("t", b"b1"), NewRecord("t", b"b2")])
    finally:
        await store.close()
    damaged = flip(path, marker, [20, 21])

    store = await SqliteStore.open(path)
    try:
        seen: list[int] = []

        async def read_victim() -> None:
            async for r in store.read("victim"):
                seen.append(r.position)

        with pytest.raises(CorruptionError) as damage:
            await read_victim()
        after = await read_list(store, "victim", 4)
        bystander = await read_list(store, "bystander")
        with pytest.raises(CorruptionError) as in_log:
            await read_all_list(store)
        report = await store.verify()
    finally:
        await store.close()

    assert seen == [1, 2]
    assert (damage.value.stream, damage.value.position) == ("victim", 3)
    assert "'victim'" in str(damage.value)
    assert "position 3" in str(damage.value)
    assert [(r.position, r.data) for r in after] == [(4, b"v4"), (5, b"v5")]
    assert [r.data for r in bystander] == [b"b1", b"b2"]
    assert (in_log.value.stream, in_log.value.position) == ("victim", 3)
    assert not report.ok
    assert [(p.stream, p.position, p.kind) for p in report.problems] == [("victim", 3, "checksum")]
    assert all(isinstance(p, Problem) for p in report.problems)
    assert contents(path) == damaged, "reading a damaged journal wrote to it"


@pytest.mark.parametrize("written_by", ["save_snapshot", "append"])
async def test_a_damaged_snapshot_is_reported(path: pathlib.Path, written_by: str) -> None:
    marker = b"<<snapshot-marker-51c0e2-" + b"abcdefghij" * 4 + b">>"
    store = await SqliteStore.open(path)
    try:
        if written_by == "save_snapshot":
            await store.append("s", [NewRecord("t", b"1"), NewRecord("t", b"2")])
            await store.save_snapshot("s", 2, marker)
        else:
            records = (NewRecord("t", b"1"), NewRecord("t", b"2"))
            await store.append_many([StreamAppend("s", records, snapshot=marker)])
    finally:
        await store.close()
    damaged = flip(path, marker, [30])

    store = await SqliteStore.open(path)
    try:
        with pytest.raises(CorruptionError) as damage:
            await store.load_snapshot("s")
        report = await store.verify()
        records = await read_list(store, "s")
    finally:
        await store.close()

    assert (damage.value.stream, damage.value.position) == ("s", 2)
    assert [(p.stream, p.position, p.kind) for p in report.problems] == [("s", 2, "snapshot")]
    assert [r.data for r in records] == [b"1", b"2"]
    assert contents(path) == damaged, "reading a damaged journal wrote to it"


async def test_salvage_gives_back_a_damaged_stream_whole_saying_what_is_damaged(
    path: pathlib.Path,
) -> None:
    """What an operator exports from a damaged stream: every record as stored, the
    damaged one too (its bytes as the file holds them), and the damaged snapshot."""
    marker = b"<<salvage-marker-3e8d1b-" + b"0123456789" * 4 + b">>"
    snapshot_marker = b"<<salvage-snapshot-77a4f0-" + b"abcdefghij" * 4 + b">>"
    store = await SqliteStore.open(path)
    try:
        await store.append("s", [NewRecord("t", b"1"), NewRecord("t", marker), one(b"3")[0]])
        await store.save_snapshot("s", 1, snapshot_marker)
    finally:
        await store.close()
    flip(path, marker, [5])
    damaged = flip(path, snapshot_marker, [7])
    expected = bytearray(marker)
    expected[5] ^= 0xFF

    store = await SqliteStore.open(path, read_only=True)
    try:
        salvaged = await salvage_list(store, "s")
        snapshot = await store.salvage_snapshot("s")
    finally:
        await store.close()

    assert [(r.position, r.damage) for r in salvaged] == [
        (1, None),
        (2, "checksum mismatch"),
        (3, None),
    ]
    assert [r.data for r in salvaged] == [b"1", bytes(expected), b"3"]
    assert snapshot is not None
    assert (snapshot.position, snapshot.damage) == (1, "checksum mismatch")
    assert snapshot.data[:7] + snapshot.data[8:] == snapshot_marker[:7] + snapshot_marker[8:]
    assert snapshot.data[7] == snapshot_marker[7] ^ 0xFF
    assert contents(path) == damaged, "salvaging wrote to the journal"


async def salvage_list(store: SqliteStore, stream: str) -> list[Salvaged]:
    return [r async for r in store.salvage(stream)]


async def test_verify_reports_rows_that_belong_to_no_stream(path: pathlib.Path) -> None:
    store = await SqliteStore.open(path)
    try:
        await store.append("s", [NewRecord("t", b"1"), NewRecord("t", b"2")])
        await store.save_snapshot("s", 2, b"state")
    finally:
        await store.close()
    with raw(path) as conn:
        conn.execute("DELETE FROM streams")

    store = await SqliteStore.open(path)
    try:
        report = await store.verify()
    finally:
        await store.close()

    assert [(p.kind, p.detail) for p in report.problems] == [
        ("orphan", "2 records belong to no stream"),
        ("orphan", "1 snapshots belong to no stream"),
    ]


# -- a full disk ------------------------------------------------------------------------------


async def test_a_full_journal_refuses_appends_and_keeps_what_it_acknowledged(
    path: pathlib.Path,
) -> None:
    acknowledged: list[bytes] = []

    async def fill(store: SqliteStore) -> None:
        for n in range(1000):  # 4 MB in all: far past the cap
            data = b"%05d:" % n + bytes([n % 251]) * 4000
            await store.append("fill", [NewRecord("t", data)])
            acknowledged.append(data)

    store = await SqliteStore.open(path, max_bytes=256 * 1024)
    try:
        with pytest.raises(StorageFullError) as full:
            await fill(store)
        with pytest.raises(StorageFullError):
            await store.append("fill", [NewRecord("t", b"y" * 8000)])
        kept = await read_list(store, "fill")
    finally:
        await store.close()

    message = str(full.value)
    assert str(path) in message
    assert "full" in message
    assert "max_bytes" in message
    assert isinstance(full.value, StorageError)
    assert 0 < len(acknowledged) < 1000
    assert [r.data for r in kept] == acknowledged
    assert [r.position for r in kept] == list(range(1, len(acknowledged) + 1))

    store = await SqliteStore.open(path)
    try:
        assert [r.data for r in await read_list(store, "fill")] == acknowledged
        later = await store.append("fill", [NewRecord("t", b"room again")])
        assert later.first_position == len(acknowledged) + 1
        report = await store.verify()
        assert report.ok
        assert report.records == len(acknowledged) + 1
    finally:
        await store.close()


async def test_a_failed_commit_keeps_neither_the_records_nor_their_snapshot(
    path: pathlib.Path,
) -> None:
    store = await SqliteStore.open(path, max_bytes=256 * 1024)
    try:
        await store.append("s", [NewRecord("t", b"1")])
        await store.save_snapshot("s", 1, b"state@1")

        with pytest.raises(StorageFullError):
            await store.append_many(
                [StreamAppend("s", (NewRecord("t", b"2"),), snapshot=b"x" * 512 * 1024)]
            )

        assert await store.load_snapshot("s") == Snapshot("s", 1, b"state@1")
        assert await store.stream_info("s") == StreamInfo("s", 1, 1, 0, 1)
        with pytest.raises(SnapshotError):  # the writer forgot the snapshot too
            await store.truncate("s", 2)
        assert [r.data for r in await read_list(store, "s")] == [b"1"]
    finally:
        await store.close()


async def test_a_crowd_filling_the_journal_gets_every_answer_and_loses_nothing(
    path: pathlib.Path,
) -> None:
    """A commit that fails while the callers of the one before wait to be woken: every
    caller still gets its answer (no hang), and each acknowledged record is kept."""
    crowd = 2 * SqliteStore.wake_slice + 7
    acknowledged: dict[str, list[bytes]] = {}
    refused: list[str] = []

    async def agent(stream: str) -> None:
        for n in range(100):  # far past the cap
            data = b"%s:%03d:" % (stream.encode(), n) + b"x" * 1000
            try:
                await store.append(stream, [NewRecord("t", data)])
            except StorageFullError:
                refused.append(stream)
                return
            acknowledged.setdefault(stream, []).append(data)

    store = await SqliteStore.open(path, max_bytes=1024 * 1024)
    with anyio.fail_after(60):  # a lost answer shows as a hang
        try:
            async with anyio.create_task_group() as tg:
                for n in range(crowd):
                    tg.start_soon(agent, f"agent/{n:04}")
        finally:
            await store.close()

    assert sorted(refused) == [f"agent/{n:04}" for n in range(crowd)]  # all got an answer
    assert acknowledged
    store = await SqliteStore.open(path)
    try:
        for stream, records in acknowledged.items():
            assert [r.data for r in await read_list(store, stream)] == records
        assert (await store.verify()).ok
    finally:
        await store.close()


# -- the writer's bounded memory --------------------------------------------------------------


async def test_the_writer_keeps_a_bounded_number_of_streams_and_reads_the_rest_back(
    path: pathlib.Path,
) -> None:
    store = await SqliteStore.open(path, cached_streams=10)
    try:
        epoch = await store.claim("owned")
        await store.append("owned", [NewRecord("t", b"1"), NewRecord("t", b"2")], epoch=epoch)
        await store.save_snapshot("owned", 2, b"state", epoch=epoch)
        await store.truncate("owned", 2, epoch=epoch)
        for n in range(200):  # streams written twice push "owned" out of the writer's memory
            await store.append(f"idempotency/{n:03}", [NewRecord("t", b"x")])
            await store.append(f"idempotency/{n:03}", [NewRecord("t", b"y")])
        assert len(store._states) <= 10
        assert "owned" not in store._states

        # read back from the file: the epoch still fences, positions go on, no conflict lost
        with pytest.raises(FencingError):
            await store.append("owned", [NewRecord("t", b"stale")], epoch=epoch - 1)
        with pytest.raises(ConflictError):
            await store.append("owned", [NewRecord("t", b"late")], expected_position=1)
        appended = await store.append(
            "owned", [NewRecord("t", b"3")], expected_position=2, epoch=epoch
        )
        assert appended.first_position == 3
        assert await store.claim("owned") == epoch + 1
        assert [r.position for r in await read_list(store, "owned")] == [3]
        assert await store.last_position("idempotency/000") == 2
    finally:
        await store.close()


async def test_streams_written_once_are_not_kept_in_the_writers_memory(
    path: pathlib.Path,
) -> None:
    store = await SqliteStore.open(path, cached_streams=1000)
    head_crc.cache_clear()
    try:
        await store.append("hot", [NewRecord("t", b"1")])
        await store.append("hot", [NewRecord("t", b"2")])
        for n in range(300):  # one record each, as an index entry per invocation
            await store.append_many(
                [
                    StreamAppend("hot", (NewRecord("t", b"%d" % n),)),
                    StreamAppend(f"index/{n:03}", (NewRecord("t", b"x"),)),
                ]
            )
        assert list(store._states) == ["hot"]
        # nor are their checksum seeds kept in the cache shared with the readers
        assert head_crc.cache_info().currsize == 0
        # a stream written again is read back, its position and conflicts intact
        with pytest.raises(ConflictError):
            await store.append("index/007", [NewRecord("t", b"late")], expected_position=0)
        appended = await store.append("index/007", [NewRecord("t", b"y")], expected_position=1)
        assert appended.first_position == 2
        assert "index/007" in store._states
        assert await store.last_position("hot") == 302
    finally:
        await store.close()


@pytest.mark.parametrize("bound", [0, -1, 1.5])
async def test_a_useless_stream_bound_is_refused(path: pathlib.Path, bound: object) -> None:
    with pytest.raises(ValueError, match="cached_streams"):
        await SqliteStore.open(path, cached_streams=bound)  # type: ignore[arg-type]
