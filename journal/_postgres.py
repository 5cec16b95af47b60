"""`PostgresStore`: the journal in a PostgreSQL database, shared by any number of processes.

Writes go through one writer connection per store with group commit: callers queue their
requests, and a writer task commits everything queued while the previous commit was under
way as one transaction; each caller's await returns only once that transaction committed.

Every write transaction first reads and locks the rows of the streams it writes, so the
rules (expected positions, epochs, snapshot bounds) run against what the database holds,
and stages its records. Only at its end does it lock the single ``journal_meta`` row, to
take the next global positions and insert the records in one statement, then commits:
global positions follow commit order across all processes, and the one lock every writer
shares is held for that last statement and the COMMIT, not for the whole transaction.
The database enforces the rules as well: a record's (stream, position) is unique, and
each stream row is written back only if it still holds the position and epoch that the
transaction read, so no two writers can both append at one position or under a stale epoch.

A commit whose outcome is unknown (the connection dropped while COMMIT was under way) is
resolved by asking the server about the transaction's id on a new connection
(``pg_xact_status``): callers are told their records are committed only when they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from journal import _postgres_values as _values
from journal._errors import (
    CorruptionError,
    JournalError,
    StorageError,
    StorageFullError,
    StoreClosedError,
)
from journal._postgres_readers import Readers
from journal._postgres_restore import PostgresRestore
from journal._postgres_txn import RetryTransaction, Transaction, apply_appends
from journal._records import (
    Appended,
    NewRecord,
    Problem,
    Record,
    Salvaged,
    SalvagedSnapshot,
    Snapshot,
    StreamAppend,
    StreamInfo,
    VerifyReport,
    check_prefix,
    check_stream_name,
    checksum,
    snapshot_checksum,
)
from journal._store import (
    DEFAULT_MAX_RECORD_BYTES,
    GroupCommitStore,
    check_digest,
    check_digests,
    check_limit,
    check_position,
)

try:
    import asyncpg
except ImportError:  # pragma: no cover - the optional extra is missing
    asyncpg = None

from journal import _postgres_cluster as cluster
from journal import _postgres_schema as sql

T = TypeVar("T")

#: Records fetched per read query, at most.
READ_BATCH = 2048
#: How long the first reconnect waits; each later one waits twice as long, up to a second.
_FIRST_BACKOFF = 0.05

_Op = Callable[["Transaction"], Awaitable[Any]]
_Request = tuple[_Op, tuple[str, ...], "asyncio.Future[Any]"]


#: Seconds the server lets one of our sessions sit inside a transaction, waiting for us,
#: before it ends the session. Our transactions last milliseconds; a process stopped in
#: the middle of one (SIGSTOP, a VM paused) would otherwise keep its stream rows and
#: perhaps the journal_meta row locked, and every writer of every process behind them,
#: for as long as it stays stopped.
IDLE_IN_TRANSACTION = 2.0


def _connection_errors() -> tuple[type[BaseException], ...]:
    return (
        OSError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.CannotConnectNowError,
        asyncpg.AdminShutdownError,
        # asyncpg's protocol can be caught mid-way through a server's unsolicited FATAL
        # message (a terminated backend): the connection is as good as lost
        asyncpg.InternalClientError,
    )


class PostgresStore(PostgresRestore, GroupCommitStore):
    """A `Store` in a PostgreSQL database, which any number of processes may share.

    It keeps values stored once (see `journal._postgres_values` for the tables and how
    collecting is made safe beside other processes' appends).

    Open it with ``await PostgresStore.open(dsn)`` and close it with ``await store.close()``
    (or ``async with``). Every acknowledged write is committed (with the server's
    ``synchronous_commit`` as configured; the default syncs the WAL at every commit).
    """

    identity: str
    #: Callers woken per event-loop turn (see `GroupCommitStore._write_loop`): small, for a
    #: commit's five round trips each wait their turn on the loop behind the callers woken
    #: before them. With 1,000 actors on one store, 16 gave 40,500 steps/s against
    #: 30,000 with every caller woken at once (64: 33,100; 8: 38,300; 4: 34,700).
    wake_slice = 16

    def __init__(
        self,
        dsn: str,
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        statement_timeout: float = 30.0,
        reconnect_timeout: float = 30.0,
        pool_size: int = 4,
        notify_prefixes: Sequence[str] = (),
    ) -> None:
        if asyncpg is None:
            raise ImportError("PostgresStore needs asyncpg: pip install 'actorflow[postgres]'")
        self._dsn = dsn
        self.max_record_bytes = max_record_bytes
        self.statement_timeout = statement_timeout
        self.reconnect_timeout = reconnect_timeout
        self._pool_size = max(1, pool_size)
        self._notify = tuple(check_prefix(p) for p in notify_prefixes if p is not None)
        #: Leases and members shared by the processes on this journal.
        self.leases = cluster.Leases(self._read)
        self._readers: Readers | None = None
        self._writer: Any = None
        self._writer_task: asyncio.Task[None] | None = None
        self._pending: list[_Request] = []
        self._wakeup = asyncio.Event()
        #: Commits and requests committed, and transactions whose outcome was unknown.
        self.commits = 0
        self.requests = 0
        self.unknown_outcomes = 0
        #: Called (awaited) with the writer connection just before each COMMIT: for tests
        #: that cut the connection at that moment.
        self.before_commit: Callable[[Any], Awaitable[None]] | None = None

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        statement_timeout: float = 30.0,
        reconnect_timeout: float = 30.0,
        pool_size: int = 4,
        notify_prefixes: Sequence[str] = (),
    ) -> PostgresStore:
        """Connect to the database at ``dsn`` (a ``postgresql://`` URL), creating the
        journal's tables if it has none, and refusing a newer schema than this code's.

        ``statement_timeout`` (seconds) bounds every statement on the server;
        ``reconnect_timeout`` bounds how long a call keeps retrying while the server is
        unreachable (restarting, say) before it fails with `StorageError`; ``pool_size``
        is the number of connections for reads. Appends to streams whose names start with
        one of ``notify_prefixes`` are announced to `listen`ers once committed.
        """
        self = cls(
            dsn,
            max_record_bytes=max_record_bytes,
            statement_timeout=statement_timeout,
            reconnect_timeout=reconnect_timeout,
            pool_size=pool_size,
            notify_prefixes=notify_prefixes,
        )
        try:
            self._writer = await self._connect()
            self.identity, _ = await sql.prepare(self._writer, _describe(dsn))
            self._readers = Readers(self._connect, self._pool_size)
        except BaseException:
            await self._release()
            raise
        self._writer_task = asyncio.get_running_loop().create_task(self._write_loop())
        return self

    def _settings(self) -> dict[str, str]:
        return {
            "statement_timeout": str(int(self.statement_timeout * 1000)),
            "idle_in_transaction_session_timeout": str(int(IDLE_IN_TRANSACTION * 1000)),
        }

    async def _connect(self) -> Any:
        return await asyncpg.connect(self._dsn, server_settings=self._settings())

    def listen(self) -> cluster.Listener:
        """Hear the notices of appends (see ``notify_prefixes``) and of released leases,
        committed by any process on this journal: ``async with store.listen() as notices:
        async for notice in notices: ...``."""
        self._check_open()
        return cluster.Listener(self._connect)

    # -- writes ---------------------------------------------------------------------------

    def _submit(self, op: _Op, streams: tuple[str, ...]) -> asyncio.Future[Any]:
        """Queue ``op`` for the writer; the future of its outcome, set once committed."""
        self._check_open()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, streams, future))
        self._wakeup.set()
        return future

    async def _start_commit(self, batch: list[_Request], waking: bool) -> asyncio.Task[list[Any]]:
        return asyncio.get_running_loop().create_task(self._commit(batch))

    async def _commit(self, batch: list[_Request]) -> list[Any]:
        """Commit ``batch`` in one transaction, reconnecting and retrying while the server
        is unreachable; if one request breaks the transaction, each goes alone."""
        try:
            outcomes = await self._retrying(lambda: self._attempt(batch), "committing writes")
        except asyncpg.PostgresError as exc:
            if len(batch) == 1 or isinstance(exc, asyncpg.QueryCanceledError):
                # (a statement timeout would only time out again, once per request)
                return [_translate(exc, "committing writes")] * len(batch)
            return [(await self._commit([request]))[0] for request in batch]
        except JournalError as exc:
            return [exc] * len(batch)
        except Exception as exc:  # a bug: fail the callers loudly rather than hang them
            return [exc] * len(batch)
        self.commits += 1
        self.requests += len(batch)
        return outcomes

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], doing: str) -> T:
        """Run ``attempt``, again after each lost connection, until `reconnect_timeout`."""
        deadline = time.monotonic() + self.reconnect_timeout
        backoff = _FIRST_BACKOFF
        retried: tuple[type[BaseException], ...] = (RetryTransaction, *_connection_errors())
        while True:
            try:
                return await attempt()
            except retried as exc:
                if time.monotonic() + backoff > deadline:
                    raise StorageError(
                        f"{doing}: lost the connection to PostgreSQL, or found rows changed "
                        f"under the transaction, again and again for {self.reconnect_timeout} "
                        f"s ({exc}); nothing was acknowledged that is not committed"
                    ) from exc
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2)

    async def _writer_connection(self) -> Any:
        if self._writer is None or self._writer.is_closed():
            if self._writer is not None:
                self._writer.terminate()
            self._writer = None
            self._writer = await self._connect()
        return self._writer

    async def _attempt(self, batch: list[_Request]) -> list[Any]:
        conn = await self._writer_connection()
        names = {name for _, streams, _ in batch for name in streams}
        xid: str | None = None
        transaction = conn.transaction()
        await transaction.start()
        committing = False
        try:
            txn = Transaction(conn, self._notify)
            await txn.load(names)
            outcomes = []
            for op, _, _ in batch:
                try:
                    outcomes.append(await op(txn))
                except JournalError as refused:  # refused before it wrote: fails alone
                    outcomes.append(refused)
            await txn.write_back()
            if txn.grown:  # (notices delivered at commit, in commit order)
                await conn.execute(cluster.NOTIFY_APPENDED, txn.grown)
            await txn.finish()
            xid = txn.xid
            outcomes = txn.rebase(outcomes)
            if self.before_commit is not None:
                await self.before_commit(conn)
            committing = True
            await transaction.commit()
        except _connection_errors():
            # Close our end: a transaction the server still holds open is then aborted, so
            # its outcome below is decided, and the next attempt starts on a new connection.
            conn.terminate()
            if committing and xid is not None and await self._committed(xid):
                return outcomes
            raise
        except BaseException:
            if not conn.is_closed():
                with contextlib.suppress(Exception):
                    await transaction.rollback()
            raise
        return outcomes

    async def _committed(self, xid: str) -> bool:
        """Whether the transaction ``xid``, whose COMMIT lost its connection, committed:
        asked of the server on a new connection, waiting while it is still in progress."""
        self.unknown_outcomes += 1

        async def ask() -> str | None:
            conn = await self._connect()
            try:
                while True:
                    status: str | None = await conn.fetchval(
                        "SELECT pg_xact_status($1::text::xid8)", xid
                    )
                    if status != "in progress":
                        return status
                    await asyncio.sleep(_FIRST_BACKOFF)
            finally:
                await conn.close()

        status = await self._retrying(ask, "reading back a commit of unknown outcome")
        return status == "committed"

    async def append(
        self,
        stream: str,
        records: Sequence[NewRecord],
        *,
        expected_position: int | None = None,
        epoch: int | None = None,
    ) -> Appended:
        """Append ``records`` to ``stream`` atomically; return where they landed, once
        committed."""
        parts = (StreamAppend(stream, tuple(records), expected_position, epoch),)
        self._check_appends(parts)
        appended: list[Appended] = await self._submit(
            lambda txn: apply_appends(parts, txn), (stream,)
        )
        return appended[0]

    def append_many(self, appends: Sequence[StreamAppend]) -> asyncio.Future[list[Appended]]:
        """Append to several streams in one transaction: every part is written, or none.
        The appends are checked at once; the future is set once they are committed."""
        parts = tuple(appends)
        self._check_appends(parts)
        names = tuple(part.stream for part in parts)
        return self._submit(lambda txn: apply_appends(parts, txn), names)

    async def claim(self, stream: str) -> int:
        """Become the owner of ``stream``: return a new epoch, higher than every earlier one
        (since the stream was last deleted)."""
        check_stream_name(stream)

        async def apply(txn: Transaction) -> int:
            state = txn.changes.claim(stream)
            await txn.stream_id(state)
            return state.epoch

        epoch: int = await self._submit(apply, (stream,))
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

        async def apply(txn: Transaction) -> None:
            new = await _values.check_values(txn.conn, given, wanted) if given or wanted else []
            state = txn.changes.snapshot(stream, position, epoch)
            if new:
                await _values.store_values(txn.conn, given, new)
            await txn.replace_snapshot(state, payload, refs)

        await self._submit(apply, (stream,))

    async def truncate(self, stream: str, through: int, *, epoch: int | None = None) -> int:
        """Delete the stream's records up to ``through``, which a snapshot must cover."""
        check_position(stream, "through", through, 0)

        async def apply(txn: Transaction) -> int:
            state, old_first = txn.changes.truncate(stream, through, epoch)
            if state.first == old_first:
                return 0
            await txn.flush_rows()
            await txn.conn.execute(_values.DELETE_TRUNCATED_REFS, state.id, state.first)
            status = await txn.conn.execute(
                "DELETE FROM journal_records WHERE stream_id = $1 AND position < $2",
                state.id,
                state.first,
            )
            return int(status.split()[-1])

        deleted: int = await self._submit(apply, (stream,))
        return deleted

    async def delete_stream(self, stream: str, *, epoch: int | None = None) -> bool:
        """Remove ``stream`` whole: its records, its snapshot and the stream itself.

        Afterwards it reads as a stream never written. Global positions are not reused.
        """
        check_stream_name(stream)

        async def apply(txn: Transaction) -> bool:
            _, sid, existed = txn.changes.delete(stream, epoch)
            if sid is not None:
                await txn.flush_rows()  # rows staged earlier in this batch go too
                txn.snapshots.pop(sid, None)  # a snapshot staged earlier in this batch
                for statement in _values.DELETE_STREAM_REFS:
                    await txn.conn.execute(statement, sid)
                for table in ("journal_records", "journal_snapshots"):
                    await txn.conn.execute(f"DELETE FROM {table} WHERE stream_id = $1", sid)
                await txn.conn.execute("DELETE FROM journal_streams WHERE id = $1", sid)
                del txn.read_back[sid]
            return existed

        existed: bool = await self._submit(apply, (stream,))
        return existed

    # -- values ---------------------------------------------------------------------------

    async def read_value(self, digest: str) -> bytes:
        """The stored value ``digest``, its hash checked (`MissingValueError` if it is not
        stored, `CorruptValueError` naming the digest if its bytes do not match)."""
        check_digest(digest)
        return await self._read(lambda conn: _values.read_value(conn, digest), "reading a value")

    async def has_values(self, digests: Iterable[str]) -> set[str]:
        """Those of ``digests`` that are stored."""
        listed = check_digests(digests)
        return await self._read(lambda conn: _values.has_values(conn, listed), "finding values")

    async def collect_values(self) -> int:
        """Delete every value that no stored record or snapshot refers to; return how many.

        Runs on a connection of its own, beside the writers of every process: a value that
        a write transaction has locked (it refers to it, or gives it) is left for the next
        collection, and a write that comes after finds the value gone and fails with
        `MissingValueError` (see `journal._postgres_values`)."""
        return await self._read(_values.collect, "collecting values")

    # -- reads ----------------------------------------------------------------------------

    async def _read(self, fn: Callable[[Any], Awaitable[T]], doing: str) -> T:
        self._check_open()

        readers = self._readers
        assert readers is not None

        async def attempt() -> T:
            conn = await readers.take()
            clean = False
            try:
                result = await fn(conn)
                clean = True
                return result
            finally:
                readers.give_back(conn, clean=clean)

        try:
            return await self._retrying(attempt, doing)
        except asyncpg.PostgresError as exc:
            raise _translate(exc, doing) from exc

    async def read_batches(
        self, stream: str, from_position: int = 1, *, limit: int | None = None
    ) -> AsyncIterator[list[Record]]:
        """Iterate over ``stream``'s records in order, a list of up to `READ_BATCH` at a
        time; a damaged record raises `CorruptionError` once those before it are yielded.
        With ``limit``, at most that many records are fetched."""
        check_position(stream, "from_position", from_position, 1)
        check_limit(stream, limit)
        left = READ_BATCH if limit is None else limit
        while left > 0:
            size = min(left, READ_BATCH)

            async def page(conn: Any, start: int = from_position, size: int = size) -> Any:
                return await conn.fetch(sql.STREAM_PAGE, stream, start, size)

            rows = await self._read(page, f"reading stream {stream!r}")
            batch: list[Record] = []
            for position, global_position, kind, data, stored, refs in rows:
                if checksum(stream, position, kind, data) != stored:
                    if batch:
                        yield batch
                    raise CorruptionError(stream, position, "checksum mismatch")
                if refs is None:
                    batch.append(Record(stream, position, global_position, kind, data))
                else:
                    record = Record(stream, position, global_position, kind, data, decode(refs))
                    batch.append(record)
            if batch:
                yield batch
            if len(rows) < size:
                return
            if limit is not None:
                left -= len(batch)
            from_position = batch[-1].position + 1

    async def read_all(self, from_global_position: int = 1) -> AsyncIterator[Record]:
        """Iterate over every stored record in global (commit) order."""
        check_position("<global>", "from_global_position", from_global_position, 1)
        while True:

            async def page(conn: Any, start: int = from_global_position) -> Any:
                return await conn.fetch(sql.GLOBAL_PAGE, start, READ_BATCH)

            rows = await self._read(page, "reading the global log")
            for position, global_position, kind, data, stored, stream, refs in rows:
                if checksum(stream, position, kind, data) != stored:
                    raise CorruptionError(stream, position, "checksum mismatch")
                yield Record(stream, position, global_position, kind, data, decode(refs))
            if len(rows) < READ_BATCH:
                return
            from_global_position = rows[-1][1] + 1

    async def last_position(self, stream: str) -> int:
        """The stream's last position (0 for a stream never written)."""
        return (await self.stream_info(stream)).last_position

    async def stream_info(self, stream: str) -> StreamInfo:
        """Positions, owner epoch and snapshot position of ``stream``."""
        check_stream_name(stream)

        async def fetch(conn: Any) -> Any:
            return await conn.fetchrow(sql.STREAM_INFO, stream)

        row = await self._read(fetch, f"reading stream {stream!r}")
        if row is None:
            return StreamInfo(stream, 0, 1, 0, 0)
        return StreamInfo(stream, *row)

    async def stream_infos(self, streams: Sequence[str]) -> list[StreamInfo]:
        """`stream_info` of each of ``streams``, in their order, in one query."""
        names = list(streams)
        for stream in names:
            check_stream_name(stream)

        async def fetch(conn: Any) -> Any:
            return await conn.fetch(sql.STREAM_INFOS_NAMED, names)

        found = {row[0]: StreamInfo(*row) for row in await self._read(fetch, "reading streams")}
        return [found.get(stream) or StreamInfo(stream, 0, 1, 0, 0) for stream in names]

    async def list_streams(self, prefix: str = "") -> list[str]:
        """Names of the streams holding (or having held) records, starting with ``prefix``."""
        check_prefix(prefix)
        names: list[str] = []
        after = ""
        while True:
            page = await self.list_stream_infos(prefix, after=after, limit=10_000)
            names.extend(info.stream for info in page)
            if len(page) < 10_000:
                return names
            after = page[-1].stream

    async def list_stream_infos(
        self, prefix: str = "", *, after: str = "", limit: int = 1000
    ) -> list[StreamInfo]:
        """The streams named after ``after`` that start with ``prefix`` (and hold, or held,
        records), with their infos, in name order: at most ``limit``, in one query."""
        check_prefix(prefix)
        check_prefix(after)
        check_limit("<streams>", limit)

        async def fetch(conn: Any) -> Any:
            return await conn.fetch(sql.STREAM_INFOS, after, prefix, limit)

        rows = await self._read(fetch, "listing streams")
        return [StreamInfo(*row) for row in rows]

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        """The latest snapshot of ``stream``, or None; a damaged one raises `CorruptionError`."""
        row = await self._snapshot_row(stream)
        if row is None:
            return None
        position, data, stored, refs = row
        if snapshot_checksum(stream, position, data) != stored:
            raise CorruptionError(stream, position, "snapshot checksum mismatch")
        return Snapshot(stream, position, data, decode(refs))

    async def salvage(self, stream: str, from_position: int = 1) -> AsyncIterator[Salvaged]:
        """Iterate over ``stream``'s stored records in order, damaged ones included, each
        with its ``damage`` said (None when its checksum matches)."""
        check_position(stream, "from_position", from_position, 1)
        while True:

            async def page(conn: Any, start: int = from_position) -> Any:
                return await conn.fetch(sql.STREAM_PAGE, stream, start, READ_BATCH)

            rows = await self._read(page, f"salvaging stream {stream!r}")
            for position, global_position, kind, data, stored, _ in rows:
                intact = checksum(stream, position, kind, data) == stored
                damage = None if intact else "checksum mismatch"
                yield Salvaged(stream, position, global_position, kind, data, damage)
            if len(rows) < READ_BATCH:
                return
            from_position = rows[-1][0] + 1

    async def salvage_snapshot(self, stream: str) -> SalvagedSnapshot | None:
        """The latest snapshot of ``stream`` as stored, damaged or not; None if none."""
        row = await self._snapshot_row(stream)
        if row is None:
            return None
        position, data, stored, _ = row
        intact = snapshot_checksum(stream, position, data) == stored
        return SalvagedSnapshot(stream, position, data, None if intact else "checksum mismatch")

    async def _snapshot_row(self, stream: str) -> Any:
        check_stream_name(stream)

        async def fetch(conn: Any) -> Any:
            return await conn.fetchrow(sql.SNAPSHOT, stream)

        return await self._read(fetch, f"loading the snapshot of {stream!r}")

    async def verify(self) -> VerifyReport:
        """Check every record's checksum, every stream's gapless positions, every
        snapshot, every value's hash and every ref; report every problem found."""
        return await self._read(_verify, "verifying the journal")

    # -- lifecycle ------------------------------------------------------------------------

    async def _release(self) -> None:
        if self._readers is not None:
            with contextlib.suppress(Exception):
                await self._readers.close()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer.close()
        self._readers = self._writer = None

    def _check_open(self) -> None:
        if self._closed or self._writer_task is None:
            raise StoreClosedError(f"PostgresStore({_describe(self._dsn)!r})")


async def _verify(conn: Any) -> VerifyReport:
    problems: list[Problem] = []
    streams = await conn.fetch("SELECT id, name, first_position FROM journal_streams ORDER BY id")
    records = 0
    for sid, name, first in streams:
        expected = first
        rows = await conn.fetch(
            "SELECT position, type, data, checksum FROM journal_records WHERE stream_id = $1 "
            "ORDER BY position",
            sid,
        )
        for position, kind, data, stored in rows:
            records += 1
            if position != expected:
                detail = f"expected position {expected}, found {position}"
                problems.append(Problem(name, expected, "gap", detail))
            if checksum(name, position, kind, data) != stored:
                problems.append(Problem(name, position, "checksum", "record checksum mismatch"))
            expected = position + 1
    for name, position, data, stored in await conn.fetch(
        "SELECT s.name, p.position, p.data, p.checksum FROM journal_snapshots p "
        "JOIN journal_streams s ON s.id = p.stream_id"
    ):
        if snapshot_checksum(name, position, data) != stored:
            problems.append(Problem(name, position, "snapshot", "snapshot checksum mismatch"))
    problems += [problem async for problem in _values.value_problems(conn)]
    count = await conn.fetchval("SELECT count(*) FROM journal_values")
    return VerifyReport(len(streams), records, tuple(problems), count)


def _translate(exc: Exception, doing: str) -> StorageError:
    if isinstance(exc, asyncpg.DiskFullError):
        return StorageFullError(f"{doing}: PostgreSQL is out of disk space ({exc}); rolled back")
    return StorageError(f"{doing}: PostgreSQL refused it ({exc}); rolled back")


decode = _values.decode_refs


def _describe(dsn: str) -> str:
    """``dsn`` without its password, for messages."""
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"
    return dsn
