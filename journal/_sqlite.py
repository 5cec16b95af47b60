"""`SqliteStore`: the durable journal in one SQLite file, with a group-commit writer.

Writes go through one writer connection. Callers queue their requests; a single writer
task takes everything queued while the previous commit was under way and commits it as one
transaction, on the connection's own thread, in one hop: one sync shared by every caller in
the batch, and each caller's await returns only once its records are durable. Reads use
their own connections (WAL lets them proceed while the writer commits).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import aiosqlite

from journal._errors import (
    CorruptionError,
    JournalError,
    StoreClosedError,
    StoreReadOnlyError,
)
from journal._file_lock import FileLock
from journal._records import (
    Appended,
    NewRecord,
    Record,
    Salvaged,
    SalvagedSnapshot,
    Snapshot,
    StreamAppend,
    StreamInfo,
    VerifyReport,
    check_prefix,
    check_stream_name,
    snapshot_checksum,
)
from journal._sqlite_reads import (
    READ_BATCH,
    global_page,
    salvage_page,
    salvage_snapshot,
    stream_info,
    stream_infos,
    stream_page,
    verify_all,
)
from journal._sqlite_restore import SqliteRestore
from journal._sqlite_schema import (
    DELETE_STREAM,
    HIGH_WATER,
    check_readable,
    prepare,
    read_only_uri,
    translate,
)
from journal._sqlite_txn import Transaction as _Transaction
from journal._sqlite_txn import apply_appends as _apply_appends
from journal._sqlite_values import (
    DELETE_STREAM_REFS,
    DELETE_TRUNCATED_REFS,
    check_values,
    collect,
    decode_refs,
    has_values,
    read_value,
    store_values,
)
from journal._store import (
    DEFAULT_MAX_RECORD_BYTES,
    Durability,
    GroupCommitStore,
    check_digest,
    check_digests,
    check_limit,
    check_position,
)
from journal._streams import StreamState

T = TypeVar("T")

#: Stream states the writer keeps in memory, by default (see `SqliteStore.open`).
DEFAULT_CACHED_STREAMS = 100_000


async def _on_thread(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` with the raw connection on ``conn``'s own thread, in one hop.

    aiosqlite's public calls cost one thread hop each, so a transaction of BEGIN, an
    insert and COMMIT would cost three. Its queue-a-function primitive does the whole
    transaction in one; this is the only place that relies on it.
    """
    raw: sqlite3.Connection = conn._conn
    result: T = await conn._execute(fn, raw)  # type: ignore[no-untyped-call]
    return result


@dataclasses.dataclass
class CommitStats:
    """Counters of the group-commit writer, for metrics and benchmarks."""

    commits: int = 0
    requests: int = 0
    records: int = 0
    #: How many commits carried each number of records.
    batch_sizes: Counter[int] = dataclasses.field(default_factory=Counter)
    #: How many times the writer found the file changed by another writer, and read its
    #: cached stream states back from the file (see docs/journal.md, "Two writers").
    resyncs: int = 0


# A queued write: ``op(arg, transaction)``'s outcome goes to the future (tuples: hot path).
_Apply = Callable[["_Transaction"], Any]
_Request = tuple[Callable[[Any, "_Transaction"], Any], Any, "asyncio.Future[Any]"]


class SqliteStore(SqliteRestore, GroupCommitStore):
    """A `Store` in one SQLite file (WAL mode), safe across process crashes.

    Open it with ``await SqliteStore.open(path)`` and close it with ``await store.close()``
    (or ``async with``). ``durability="full"`` (the default) syncs every commit, so an
    acknowledged append survives a power loss; ``"normal"`` survives a process crash but may
    lose the last commits on power loss. One store at a time may open a file for writing;
    ``read_only=True`` opens it for reading beside that writer.
    """

    _loop: asyncio.AbstractEventLoop  # set by `open`
    #: The journal's identity (see `Store.identity`), read from the file by `open`.
    identity: str

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "full",
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        cached_streams: int = DEFAULT_CACHED_STREAMS,
        read_only: bool = False,
    ) -> None:
        if durability not in ("full", "normal"):
            raise ValueError(f"durability must be 'full' or 'normal', got {durability!r}")
        if not isinstance(cached_streams, int) or cached_streams < 1:
            raise ValueError(f"cached_streams must be an integer >= 1, got {cached_streams!r}")
        self.cached_streams = cached_streams
        self._path = os.fspath(path)
        self.durability: Durability = durability
        #: Opened with ``read_only=True``: reads only, beside whichever writer has the file.
        self.read_only = read_only
        self.max_record_bytes = max_record_bytes
        self.stats = CommitStats()
        self._states: dict[str, StreamState] = {}
        self._pending: list[_Request] = []
        self._wakeup = asyncio.Event()
        self._lock = FileLock(self._path)
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all_readers: list[aiosqlite.Connection] = []
        self._writer: aiosqlite.Connection | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._next_global = 1
        #: SQLite's ``data_version`` as the writer last saw it (see `_written_behind_our_back`).
        self._data_version = 0

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "full",
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        max_bytes: int | None = None,
        readers: int = 2,
        cached_streams: int = DEFAULT_CACHED_STREAMS,
        read_only: bool = False,
    ) -> SqliteStore:
        """Open (creating if needed) the journal file at ``path``.

        ``max_bytes`` caps the file's size (appends past it fail with
        `StorageFullError`); ``readers`` is the number of read connections;
        ``cached_streams`` bounds how many streams' positions and epochs the writer keeps in
        memory (those cached longest are dropped, and read back from the file when next
        written).

        ``read_only=True`` opens an existing journal for reading only: no lock is taken
        (it reads beside a server that has the file open for writing, through SQLite's
        WAL), nothing in the file is created, upgraded or changed, and every write raises
        `StoreReadOnlyError`.
        """
        self = cls(
            path,
            durability=durability,
            max_record_bytes=max_record_bytes,
            cached_streams=cached_streams,
            read_only=read_only,
        )
        self._loop = asyncio.get_running_loop()
        try:
            if read_only:
                await self._connect_read_only(readers)
                return self
            await self._connect(durability, max_bytes, readers)
        except BaseException:
            await self._release()
            raise
        self._writer_task = asyncio.get_running_loop().create_task(self._write_loop())
        return self

    async def _connect(self, durability: Durability, max_bytes: int | None, readers: int) -> None:
        self._lock.acquire()
        self._writer = await aiosqlite.connect(self._path, isolation_level=None)

        def setup(conn: sqlite3.Connection) -> int:
            self.identity = prepare(conn, self._path, durability)
            if max_bytes is not None:
                page = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page)}")
            high_water = int(conn.execute(HIGH_WATER).fetchone()[0])
            self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            return high_water

        try:
            self._next_global = await _on_thread(self._writer, setup) + 1
        except sqlite3.Error as exc:
            raise translate(exc, self._path, "opening the journal") from exc
        await self._connect_readers(self._path, readers, uri=False)

    async def _connect_read_only(self, readers: int) -> None:
        await self._connect_readers(read_only_uri(self._path), readers, uri=True)
        check = partial(check_readable, path=self._path)
        self.identity = await self._read(check, "opening the journal read-only")

    async def _connect_readers(self, target: str, readers: int, *, uri: bool) -> None:
        for _ in range(max(1, readers)):
            reader = await aiosqlite.connect(target, isolation_level=None, uri=uri)
            self._all_readers.append(reader)
            self._readers.put_nowait(reader)
            await reader.execute("PRAGMA query_only = 1")

    # -- writes ---------------------------------------------------------------------------

    def _enqueue(self, op: Callable[[Any, _Transaction], Any], arg: Any) -> asyncio.Future[Any]:
        """Queue a write for the next commit; its future gets the outcome."""
        if self.read_only:
            raise StoreReadOnlyError(
                f"{self._path} was opened read-only (SqliteStore.open(..., read_only=True)); "
                f"nothing was written. Open it without read_only= to write (one writer at "
                f"a time may)."
            )
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending.append((op, arg, future))
        self._wakeup.set()
        return future

    async def _submit(self, apply: _Apply) -> Any:
        self._check_open()
        return await self._enqueue(_call, apply)

    async def _start_commit(self, batch: list[_Request], waking: bool) -> asyncio.Task[list[Any]]:
        """Start committing ``batch`` on the writer thread. With callers still to wake, wait
        until the thread has staged the batch's rows and entered COMMIT (the sync, which
        runs without the GIL): waking earlier would make the loop and the writer take turns
        on the GIL while the rows are staged, which measured slower than either alone."""
        loop = asyncio.get_running_loop()
        syncing = loop.create_future() if waking else None
        committing = loop.create_task(self._commit(batch, syncing))
        if syncing is not None:
            committing.add_done_callback(partial(_settle, syncing))
            await syncing
        return committing

    async def _commit(
        self, batch: list[_Request], syncing: asyncio.Future[None] | None = None
    ) -> list[Any]:
        assert self._writer is not None

        def run(conn: sqlite3.Connection) -> tuple[list[Any], int]:
            try:
                return self._attempt(conn, batch, syncing, resync=False)
            except sqlite3.IntegrityError:
                # A row the writer did not know of is in the way: a position or a global
                # position that another writer took unseen. Read everything back and try
                # once more; the write lock is held from the re-read to the commit.
                return self._attempt(conn, batch, syncing, resync=True)

        try:
            outcomes, records = await _on_thread(self._writer, run)
        except sqlite3.Error as exc:
            error = translate(exc, self._path, "committing appends")
            return [error] * len(batch)
        except Exception as exc:  # a bug: fail the callers loudly rather than hang them
            return [exc] * len(batch)
        self.stats.commits += 1
        self.stats.requests += len(batch)
        self.stats.records += records
        self.stats.batch_sizes[records] += 1
        return outcomes

    def _attempt(
        self,
        conn: sqlite3.Connection,
        batch: list[_Request],
        syncing: asyncio.Future[None] | None,
        *,
        resync: bool,
    ) -> tuple[list[Any], int]:
        """Commit ``batch`` in one transaction (on the writer thread); return the outcomes
        and the number of records written. On failure nothing is written, in the file or
        in the cached states."""
        conn.execute("BEGIN IMMEDIATE")
        txn: _Transaction | None = None
        try:
            if self._written_behind_our_back(conn) or resync:
                self._resync(conn)
            txn = _Transaction(self, conn)
            outcomes = [_apply_one(op, arg, txn) for op, arg, _ in batch]
            txn.flush_rows()
            if txn.global_moved:
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'global_high_water'",
                    (txn.changes.next_global - 1,),
                )
            if syncing is not None:
                self._loop.call_soon_threadsafe(_settle, syncing)
            conn.execute("COMMIT")
        except BaseException:
            if txn is not None:
                txn.changes.rollback()
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        txn.changes.commit()
        records = txn.changes.next_global - self._next_global
        self._next_global = txn.changes.next_global
        self._forget_deleted(txn.deleted)
        self._forget_created(txn.changes.created)
        self._forget_oldest_streams()
        return outcomes, records

    def _written_behind_our_back(self, conn: sqlite3.Connection) -> bool:
        """Whether another connection has committed to the file since this writer last
        looked (inside a transaction, so the answer holds until it ends).

        SQLite's ``data_version`` changes exactly when another connection commits: one
        pragma per commit, whatever the batch holds, tells whether the cached states
        can be trusted. Only a writer that got past the lock can make it change.
        """
        version: int = conn.execute("PRAGMA data_version").fetchone()[0]
        changed = version != self._data_version
        self._data_version = version
        return changed

    def _resync(self, conn: sqlite3.Connection) -> None:
        """The file was written behind the writer's back: drop every cached stream state
        (each is read back from the file when next written) and re-read the global
        high-water mark, within the current transaction. The rules (positions, epochs,
        snapshots) then run against what the file holds."""
        self._states.clear()
        self._next_global = int(conn.execute(HIGH_WATER).fetchone()[0]) + 1
        self.stats.resyncs += 1

    def _forget_oldest_streams(self) -> None:
        """Keep at most `cached_streams` stream states (between commits, on the writer thread).

        Every state is committed by then, so the file holds the truth and `_load_state`
        reads a dropped one back. States go in the order they were first cached, a tenth
        of the bound beyond it in one pass, so the cost per new stream stays constant.
        """
        states = self._states
        excess = len(states) - self.cached_streams
        if excess > 0:
            keep = itertools.islice(states.items(), excess + self.cached_streams // 10, None)
            self._states = dict(keep)

    def _forget_created(self, created: list[str]) -> None:
        """Keep no state of the streams this batch created (once committed): many streams
        are written once (an index entry, a claim) and would crowd out those written again
        and again. A stream written again is read back once, then kept."""
        states = self._states
        for name in created:
            states.pop(name, None)

    def _forget_deleted(self, deleted: list[StreamState]) -> None:
        """Drop the states of streams deleted (and not written again) in a committed batch.

        The file has nothing of them, so `_load_state` gives the same fresh state; a loop
        deleting expired streams then does not push live streams out of the cache.
        """
        states = self._states
        for state in deleted:
            if state.id is None and states.get(state.name) is state:
                del states[state.name]

    def _load_state(self, stream: str) -> StreamState | None:
        """A stream's state as stored (on the writer thread, for streams not cached yet)."""
        assert self._writer is not None
        row: tuple[int, int, int, int, int | None] | None = self._writer._conn.execute(
            "SELECT id, first_position, epoch, snapshot_position, "
            "(SELECT max(position) FROM records WHERE stream_id = streams.id) "
            "FROM streams WHERE name = ?",
            (stream,),
        ).fetchone()
        if row is None:
            return None
        sid, first, epoch, snap, last = row
        return StreamState(stream, sid, max(last or 0, first - 1), first, epoch, snap)

    async def append(
        self,
        stream: str,
        records: Sequence[NewRecord],
        *,
        expected_position: int | None = None,
        epoch: int | None = None,
    ) -> Appended:
        """Append ``records`` to ``stream`` atomically; return where they landed.

        Returns once the records are durable (per the store's durability setting).
        """
        parts = (StreamAppend(stream, tuple(records), expected_position, epoch),)
        self._check_appends(parts, self._states)
        appended: list[Appended] = await self._enqueue(_apply_appends, parts)
        return appended[0]

    async def append_many(self, appends: Sequence[StreamAppend]) -> list[Appended]:
        """Append to several streams in one transaction: every part is written, or none."""
        parts = tuple(appends)
        self._check_appends(parts, self._states)
        appended: list[Appended] = await self._enqueue(_apply_appends, parts)
        return appended

    async def claim(self, stream: str) -> int:
        """Become the owner of ``stream``: return a new epoch, higher than every earlier one
        (since the stream was last deleted)."""
        check_stream_name(stream)

        def apply(txn: _Transaction) -> int:
            state = txn.changes.claim(stream)
            txn.update_stream(state)
            return state.epoch

        epoch: int = await self._submit(apply)
        return epoch

    async def save_snapshot(
        self,
        stream: str,
        position: int,
        data: bytes,
        *,
        epoch: int | None = None,
        refs: tuple[str, ...] = (),
        values: Mapping[str, bytes] | None = None,
    ) -> None:
        """Save ``data`` as the state of ``stream`` through ``position`` (inclusive),
        referring to the values ``refs`` (given in ``values`` or stored)."""
        check_position(stream, "position", position, 1)
        given = self._check_snapshot_values(stream, refs, values)
        payload = bytes(data)
        wanted = [ref for ref in dict.fromkeys(refs) if ref not in given]

        def apply(txn: _Transaction) -> None:
            new = check_values(txn.conn, given, wanted) if given or wanted else []
            state = txn.changes.snapshot(stream, position, epoch)
            store_values(txn.conn, given, new)
            txn.replace_snapshot(state, payload, refs)

        await self._submit(apply)

    async def read_value(self, digest: str) -> bytes:
        """The stored value ``digest``, its hash checked (`MissingValueError` if it is not
        stored, `CorruptionError` if its bytes do not match)."""
        check_digest(digest)
        return await self._read(partial(read_value, digest=digest), "reading a value")

    async def has_values(self, digests: Iterable[str]) -> set[str]:
        """Those of ``digests`` that are stored."""
        listed = check_digests(digests)
        return await self._read(partial(has_values, digests=listed), "looking up values")

    async def collect_values(self) -> int:
        """Delete every value that no stored record or snapshot refers to, through the
        writer: serialised with appends, which check their refs in their own transaction."""

        def apply(txn: _Transaction) -> int:
            txn.flush_rows()  # the refs of appends earlier in this batch count
            return collect(txn.conn)

        collected: int = await self._submit(apply)
        return collected

    async def truncate(self, stream: str, through: int, *, epoch: int | None = None) -> int:
        """Delete the stream's records up to ``through``, which a snapshot must cover."""
        check_position(stream, "through", through, 0)

        def apply(txn: _Transaction) -> int:
            state, old_first = txn.changes.truncate(stream, through, epoch)
            if state.first == old_first:
                return 0
            txn.update_stream(state)
            txn.conn.execute(DELETE_TRUNCATED_REFS, (state.id, state.first))
            deleted = txn.conn.execute(
                "DELETE FROM records WHERE stream_id = ? AND position < ?",
                (state.id, state.first),
            ).rowcount
            txn.global_moved = True
            return int(deleted)

        deleted: int = await self._submit(apply)
        return deleted

    async def delete_stream(self, stream: str, *, epoch: int | None = None) -> bool:
        """Remove ``stream`` whole: its records, its snapshot and the stream itself.

        Afterwards it reads as a stream never written (last position 0, epoch 0, not
        listed). Returns whether it existed. Global positions are not reused.
        """
        check_stream_name(stream)

        def apply(txn: _Transaction) -> bool:
            state, sid, existed = txn.changes.delete(stream, epoch)
            txn.deleted.append(state)
            if sid is not None:
                txn.flush_rows()  # rows staged earlier in this batch go too
                for statement in (*DELETE_STREAM_REFS, *DELETE_STREAM):
                    txn.conn.execute(statement, (sid,))
                txn.global_moved = True  # keep the high-water mark if these were the newest
            return existed

        existed: bool = await self._submit(apply)
        return existed

    # -- reads ----------------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T], doing: str) -> T:
        self._check_open()
        reader = await self._readers.get()
        try:
            return await _on_thread(reader, fn)
        except (sqlite3.Error, ValueError) as exc:
            if self._closed:  # closed while this read waited for its reader
                raise StoreClosedError(f"SqliteStore({self._path!r})") from exc
            if not isinstance(exc, sqlite3.Error):
                raise
            raise translate(exc, self._path, doing) from exc
        finally:
            self._readers.put_nowait(reader)

    async def read_batches(
        self, stream: str, from_position: int = 1, *, limit: int | None = None
    ) -> AsyncIterator[list[Record]]:
        """Iterate over ``stream``'s records in order, a list of up to `READ_BATCH` at a time.

        Memory stays bounded however long the stream and however large its records: a list
        holds at most `READ_BYTES` of payload (or one record, if that is larger). A damaged
        record raises `CorruptionError` once the records before it have been yielded. Replay
        reads this way: one await per batch instead of one per record. (Fetching the next
        batch while the caller decodes this one measured slower: both threads need the GIL.)
        With ``limit``, at most that many records are read from the file.
        """
        check_position(stream, "from_position", from_position, 1)
        check_limit(stream, limit)
        doing = f"reading stream {stream!r}"
        left = READ_BATCH if limit is None else limit
        while left > 0:
            batch, error, more = await self._read(
                partial(stream_page, stream, start=from_position, limit=left), doing
            )
            if batch:
                yield batch
            if error is not None:
                raise error
            if not more:
                return
            if limit is not None:
                left -= len(batch)
            from_position = batch[-1].position + 1

    async def read_all(self, from_global_position: int = 1) -> AsyncIterator[Record]:
        """Iterate over every stored record in global (commit) order."""
        check_position("<global>", "from_global_position", from_global_position, 1)
        while True:
            page, error, more = await self._read(
                partial(global_page, start=from_global_position), "reading the global log"
            )
            for record in page:
                yield record
            if error is not None:
                raise error
            if not more:
                return
            from_global_position = page[-1].global_position + 1

    async def last_position(self, stream: str) -> int:
        """The stream's last position (0 for a stream never written)."""
        return (await self.stream_info(stream)).last_position

    async def stream_info(self, stream: str) -> StreamInfo:
        """Positions, owner epoch and snapshot position of ``stream``."""
        check_stream_name(stream)
        return await self._read(partial(stream_info, stream=stream), f"reading stream {stream!r}")

    async def stream_infos(self, streams: Sequence[str]) -> list[StreamInfo]:
        """`stream_info` of each of ``streams``, in their order, in one read."""
        names = list(streams)
        for stream in names:
            check_stream_name(stream)

        def fetch(conn: sqlite3.Connection) -> list[StreamInfo]:
            return [stream_info(conn, stream=stream) for stream in names]

        return await self._read(fetch, "reading streams")

    async def list_streams(self, prefix: str = "") -> list[str]:
        """Names of the streams holding (or having held) records, starting with ``prefix``."""

        def fetch(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT name FROM streams WHERE name >= ? AND substr(name, 1, ?) = ? AND "
                "(first_position > 1 OR EXISTS (SELECT 1 FROM records WHERE stream_id = id)) "
                "ORDER BY name",
                (prefix, len(prefix), prefix),
            ).fetchall()
            return [str(name) for (name,) in rows]

        check_prefix(prefix)
        return await self._read(fetch, "listing streams")

    async def list_stream_infos(
        self, prefix: str = "", *, after: str = "", limit: int = 1000
    ) -> list[StreamInfo]:
        """The streams named after ``after`` that start with ``prefix`` (and hold, or held,
        records), with their infos, in name order: at most ``limit``, in one query."""
        check_prefix(prefix)
        check_prefix(after)
        check_limit("<streams>", limit)
        page = partial(stream_infos, prefix=prefix, after=after, limit=limit)
        return await self._read(page, "listing streams")

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        """The latest snapshot of ``stream``, or None; a damaged one raises `CorruptionError`."""
        check_stream_name(stream)

        def fetch(conn: sqlite3.Connection) -> tuple[int, bytes, int, str | None] | None:
            row: tuple[int, bytes, int, str | None] | None = conn.execute(
                "SELECT position, data, checksum, refs FROM snapshots "
                "WHERE stream_id = (SELECT id FROM streams WHERE name = ?)",
                (stream,),
            ).fetchone()
            return row

        row = await self._read(fetch, f"loading the snapshot of {stream!r}")
        if row is None:
            return None
        position, data, stored, refs = row
        if snapshot_checksum(stream, position, data) != stored:
            raise CorruptionError(stream, position, "snapshot checksum mismatch")
        return Snapshot(stream, position, data, decode_refs(refs))

    async def salvage(self, stream: str, from_position: int = 1) -> AsyncIterator[Salvaged]:
        """Iterate over ``stream``'s stored records in order, damaged ones included, each
        with its ``damage`` said (None when its checksum matches); pages are bounded as
        `read_batches`' are."""
        check_position(stream, "from_position", from_position, 1)
        doing = f"salvaging stream {stream!r}"
        while True:
            page = await self._read(partial(salvage_page, stream, start=from_position), doing)
            if not page:
                return
            for record in page:
                yield record
            from_position = page[-1].position + 1

    async def salvage_snapshot(self, stream: str) -> SalvagedSnapshot | None:
        """The latest snapshot of ``stream`` as stored, damaged or not; None if none."""
        check_stream_name(stream)
        doing = f"salvaging the snapshot of {stream!r}"
        return await self._read(partial(salvage_snapshot, stream), doing)

    async def verify(self) -> VerifyReport:
        """Check every record's checksum, every stream's gapless positions, every snapshot,
        and SQLite's own structure; report every problem found."""
        return await self._read(verify_all, "verifying the journal")

    # -- lifecycle ------------------------------------------------------------------------

    async def _release(self) -> None:
        for conn in [*self._all_readers, self._writer]:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._all_readers.clear()
        self._writer = None
        self._lock.release()

    def _check_open(self) -> None:
        if self._closed or (self._writer_task is None and not self.read_only):
            raise StoreClosedError(f"SqliteStore({self._path!r})")


def _call(apply: _Apply, txn: _Transaction) -> Any:
    return apply(txn)


def _apply_one(op: Callable[[Any, _Transaction], Any], arg: Any, txn: _Transaction) -> Any:
    try:
        return op(arg, txn)
    except JournalError as refused:  # this request is refused; the batch goes on
        return refused


def _settle(future: asyncio.Future[None], *_: object) -> None:
    if not future.done():
        future.set_result(None)
