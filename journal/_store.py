"""The `Store` protocol every journal backend implements, and the shared front half of one."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Container, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Protocol, Self, runtime_checkable

from journal._errors import InvalidStreamError, StoreClosedError
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
    check_refs,
    check_stream_name,
    check_values,
    is_digest,
)
from journal._streams import check_request

#: How hard a store works to keep acknowledged appends; see docs/journal.md.
Durability = Literal["full", "normal"]

#: Default largest record payload, in bytes: room for large payloads journaled whole (a
#: 10 MB document, say), well under SQLite's own limit of about 1 GB per value.
DEFAULT_MAX_RECORD_BYTES = 32 * 1024 * 1024


def new_identity() -> str:
    """A new journal identity: 128 random bits as 32 lowercase hex characters."""
    return secrets.token_hex(16)


def is_identity(value: object) -> bool:
    """True when ``value`` has the form of a journal identity."""
    return isinstance(value, str) and len(value) == 32 and set(value) <= _HEX_DIGITS


_HEX_DIGITS = frozenset("0123456789abcdef")


def check_identity(identity: object) -> str:
    """Return ``identity`` if it has the form of a journal identity, else raise ValueError."""
    if not is_identity(identity):
        raise ValueError(f"a journal identity is 32 lowercase hex characters, got {identity!r}")
    assert isinstance(identity, str)
    return identity


@runtime_checkable
class Store(Protocol):
    """Ordered, durable, named streams of records, with fencing and snapshots."""

    @property
    def identity(self) -> str:
        """The journal's identity: 32 lowercase hex characters, random, fixed for its life.

        Made when the journal is created and kept with its data (a copy keeps it, a new
        journal gets a new one): a value to mix into identifiers derived from the
        journal's contents, so that two journals never derive the same ones.
        """
        ...

    @property
    def max_record_bytes(self) -> int:
        """The largest record payload this store accepts, in bytes."""
        ...

    async def append(
        self,
        stream: str,
        records: Sequence[NewRecord],
        *,
        expected_position: int | None = None,
        epoch: int | None = None,
    ) -> Appended:
        """Append ``records`` to ``stream`` atomically; return where they landed."""
        ...

    def append_many(self, appends: Sequence[StreamAppend]) -> Awaitable[list[Appended]]:
        """Append to several streams in one transaction: every part is written, or none.
        (An ``async def`` implements it; a store on the hot path may instead check the
        appends at once and return the future of its commit, saving a coroutine.)"""
        ...

    def read(
        self, stream: str, from_position: int = 1, *, limit: int | None = None
    ) -> AsyncIterator[Record]:
        """Iterate over ``stream``'s records from ``from_position`` on, in order (at most
        ``limit`` of them, if given)."""
        ...

    def read_batches(
        self, stream: str, from_position: int = 1, *, limit: int | None = None
    ) -> AsyncIterator[list[Record]]:
        """Like `read`, a list of records at a time (one await per batch, for replay).

        With ``limit``, at most that many records in all, and the store fetches no more
        than it yields: reading one record of a long stream costs one record.
        """
        ...

    def read_all(self, from_global_position: int = 1) -> AsyncIterator[Record]:
        """Iterate over every stored record in global (commit) order."""
        ...

    async def last_position(self, stream: str) -> int:
        """The stream's last position (0 for a stream never written)."""
        ...

    async def stream_info(self, stream: str) -> StreamInfo:
        """Positions, owner epoch and snapshot position of ``stream``."""
        ...

    async def list_streams(self, prefix: str = "") -> list[str]:
        """Names of the streams holding (or having held) records, starting with ``prefix``."""
        ...

    async def stream_infos(self, streams: Sequence[str]) -> list[StreamInfo]:
        """`stream_info` of each of ``streams``, in their order, read together (one query
        where the backend has queries): what a reader that needs several streams' positions
        at once pays once rather than per stream."""
        ...

    async def list_stream_infos(
        self, prefix: str = "", *, after: str = "", limit: int = 1000
    ) -> list[StreamInfo]:
        """A page of `list_streams` with each stream's `stream_info`: the streams named
        after ``after`` (in name order) that start with ``prefix``, at most ``limit``.

        Page through every stream by passing the last name of a page as the next
        ``after``; each page costs what it holds, however many streams there are.
        """
        ...

    async def claim(self, stream: str) -> int:
        """Become the owner of ``stream``: return a new epoch, higher than every earlier one
        (since the stream was last deleted)."""
        ...

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
        """Save ``data`` as the state of ``stream`` through ``position`` (inclusive); the
        snapshot refers to the values ``refs``, given in ``values`` or already stored."""
        ...

    async def read_value(self, digest: str) -> bytes:
        """The stored value whose digest is ``digest``, its hash checked: `MissingValueError`
        if it is not stored, `CorruptionError` if its bytes do not match."""
        ...

    async def has_values(self, digests: Iterable[str]) -> set[str]:
        """Those of ``digests`` that are stored (whose bytes an append need not send)."""
        ...

    async def collect_values(self) -> int:
        """Delete every stored value that no stored record or snapshot refers to; return
        how many were deleted."""
        ...

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        """The latest snapshot of ``stream``, or None."""
        ...

    async def truncate(self, stream: str, through: int, *, epoch: int | None = None) -> int:
        """Delete the stream's records up to ``through``, which a snapshot must cover."""
        ...

    async def delete_stream(self, stream: str, *, epoch: int | None = None) -> bool:
        """Remove ``stream`` whole (records, snapshot, epoch); return whether it existed."""
        ...

    def salvage(self, stream: str, from_position: int = 1) -> AsyncIterator[Salvaged]:
        """Iterate over ``stream``'s stored records in order, damaged ones included.

        Unlike `read`, a record whose checksum does not match is not an error: it comes
        back as stored, with its ``damage`` said. For getting what can be got out of a
        damaged stream; never for replay, which must only see verified records.
        """
        ...

    async def salvage_snapshot(self, stream: str) -> SalvagedSnapshot | None:
        """The latest snapshot of ``stream`` as stored, damaged or not; None if none."""
        ...

    async def verify(self) -> VerifyReport:
        """Check every record and snapshot; report every problem found."""
        ...

    async def create_stream(self, stream: str, *, first_position: int = 1, epoch: int = 0) -> None:
        """Create ``stream`` with no records, its owner epoch ``epoch`` and its next record
        at ``first_position``: the positions before it count as truncated, so its last
        position is ``first_position - 1``.

        For copying a journal (see `journal.copy_journal`): the copy creates each stream as
        its source holds it, appends the records at their positions (with
        ``expected_position``), then saves the snapshot, which must cover the positions
        before ``first_position`` before the stream can be truncated further. Refused with
        `InvalidStreamError` if the store holds ``stream`` (records, positions or an epoch).
        """
        ...

    async def adopt_identity(self, identity: str) -> None:
        """Make ``identity`` (the form `identity` has) this journal's identity, for a copy
        that keeps its source's. Refused with `StoreNotEmptyError`, changing nothing,
        unless the store holds no stream at all (records, positions or an epoch)."""
        ...

    async def close(self) -> None:
        """Flush pending writes and release the store; later calls raise `StoreClosedError`."""
        ...


class StoreConveniences:
    """What a store derives from its primitives (`Store.append_many`, `read_batches` and
    `close`): `append`, `read`, and use as an async context manager. The stores inherit it
    through `StoreBase`, the wrappers around a store (`EncryptedStore`, the runtime's
    value store) directly."""

    def append_many(self, appends: Sequence[StreamAppend]) -> Awaitable[list[Appended]]:
        raise NotImplementedError

    def read_batches(
        self, stream: str, from_position: int = 1, *, limit: int | None = None
    ) -> AsyncIterator[list[Record]]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def append(
        self,
        stream: str,
        records: Sequence[NewRecord],
        *,
        expected_position: int | None = None,
        epoch: int | None = None,
    ) -> Appended:
        """Append ``records`` to ``stream`` atomically; return where they landed."""
        part = StreamAppend(stream, tuple(records), expected_position, epoch)
        return (await self.append_many([part]))[0]

    async def read(
        self, stream: str, from_position: int = 1, *, limit: int | None = None
    ) -> AsyncIterator[Record]:
        """Iterate over ``stream``'s records from ``from_position`` on, in order (at most
        ``limit`` of them, if given).

        Batches are fetched behind the scenes, so memory stays bounded however long the
        stream; a damaged record raises `CorruptionError` when the iteration reaches it.
        """
        async for batch in self.read_batches(stream, from_position, limit=limit):
            for record in batch:
                yield record

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class StoreBase(StoreConveniences):
    """Argument checks and conveniences that every store shares."""

    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    _closed: bool = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(type(self).__name__)

    def _check_appends(
        self, appends: Sequence[StreamAppend], known_streams: Container[str] = ()
    ) -> None:
        self._check_open()
        check_request(appends, self.max_record_bytes, known_streams)

    def _check_snapshot_values(
        self, stream: str, refs: tuple[str, ...], values: Mapping[str, bytes] | None
    ) -> dict[str, bytes]:
        """Check `save_snapshot`'s ``refs`` and ``values``; return the values as a dict."""
        check_refs(stream, refs, "snapshot")
        given = dict(values) if values else {}
        check_values(stream, given)
        return given


class GroupCommitStore(StoreBase):
    """A store whose writes go through one writer task that commits queued requests in
    batches (`SqliteStore`, `PostgresStore`): the writer's loop and the shared end of its
    life. The subclass sets ``_wakeup``, ``_writer_task`` and ``_pending``, starts a
    batch's commit in `_start_commit`, and releases its connections in ``_release``."""

    _wakeup: asyncio.Event
    _writer_task: asyncio.Task[None] | None = None
    _pending: list[Any]
    #: Requests committed in one transaction, at most.
    max_batch_requests = 1024
    #: Callers woken per event-loop turn once their commit is durable (see `_write_loop`).
    wake_slice = 256

    async def _start_commit(self, batch: list[Any], waking: bool) -> asyncio.Task[list[Any]]:
        """Start committing ``batch``; the task of its outcomes, one per request.
        ``waking``: callers of the batch before are still to be woken meanwhile."""
        raise NotImplementedError

    async def _write_loop(self) -> None:
        """Commit queued requests in batches, overlapping each commit with waking callers.

        One batch commits while the event loop wakes the callers of the one before, so two
        cohorts of callers take turns: when a commit ends, the requests that arrived
        meanwhile go straight into the next one.

        Callers are woken `wake_slice` at a time, with a yield to the event loop between
        slices. A woken caller runs until it waits again (an actor takes its next step, say),
        and the commit under way advances only when its own turn on the loop comes, behind
        every callback ready before it (the reply of each statement, or of the writer
        thread). Woken all at once, a crowd of callers that waited on one commit would all
        run before the next commit took its next step.
        """
        committing: asyncio.Task[list[Any]] | None = None
        batch: list[Any] = []
        waking: list[Any] = []  # committed requests whose callers are not woken yet
        outcomes: list[Any] = []
        size, wake = self.max_batch_requests, self.wake_slice
        while True:
            self._wakeup.clear()
            if committing is None and self._pending:
                batch = self._pending[:size]
                del self._pending[:size]
                committing = await self._start_commit(batch, bool(waking))
            if waking:
                resolve(waking[:wake], outcomes[:wake])
                del waking[:wake], outcomes[:wake]
                await asyncio.sleep(0)  # let the woken callers run (and queue again)
            elif committing is not None:
                outcomes = await committing
                waking, committing = batch, None
            elif self._closed:
                return
            else:
                await self._wakeup.wait()

    async def close(self) -> None:
        """Commit everything queued, then close; later calls raise `StoreClosedError`."""
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        if self._writer_task is not None:
            with contextlib.suppress(Exception):
                await self._writer_task
        await self._release()

    async def _release(self) -> None:
        raise NotImplementedError


def resolve(requests: Sequence[tuple[Any, Any, asyncio.Future[Any]]], outcomes: list[Any]) -> None:
    """Hand each queued request's caller its outcome, a value or an exception (a caller
    who stopped waiting gets nothing)."""
    for (_, _, future), outcome in zip(requests, outcomes, strict=True):
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def check_digests(digests: Iterable[str]) -> list[str]:
    """Refuse a string (a common slip for a list of them) or anything but strings; return
    the digests, each once."""
    if isinstance(digests, str | bytes):
        raise InvalidStreamError(
            f"has_values takes an iterable of digests, not one {type(digests).__name__}"
        )
    listed = list(dict.fromkeys(digests))
    for digest in listed:
        if not isinstance(digest, str):
            raise InvalidStreamError(f"a value digest is a str, got {type(digest).__name__}")
    return listed


def check_digest(digest: object) -> str:
    """Return ``digest`` if it has the form of a value digest, else raise InvalidStreamError."""
    if not is_digest(digest):
        raise InvalidStreamError(
            f"a value digest is 64 lowercase hex digits (SHA-256), got {digest!r:.100}"
        )
    assert isinstance(digest, str)
    return digest


def check_limit(stream: str, limit: int | None) -> None:
    """Refuse a ``limit`` argument that is neither None nor an int of at least 1."""
    if limit is not None:
        check_position(stream, "limit", limit, 1)


def check_position(stream: str, name: str, value: int, minimum: int) -> None:
    """Refuse a position argument that is not an int at least ``minimum``."""
    check_stream_name(stream)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidStreamError(
            f"stream {stream!r}: {name} must be an integer >= {minimum}, got {value!r}"
        )
