"""`EncryptedStore`: any `Store` with every payload sealed (records, snapshots, values).

See docs/encryption.md. The wrapper seals on the way in and opens on the way out; the
store under it keeps only sealed bytes, checksums them as it does any bytes, and never
sees a value's SHA-256 (values are stored under a keyed digest of it).
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from journal._crypt import SEALED_MAGIC, Keyring, TamperedError, sealed_key_id
from journal._errors import (
    ConflictError,
    CorruptValueError,
    InvalidStreamError,
    JournalError,
    MissingValueError,
)
from journal._records import (
    SEALED_VALUE_MAGIC,
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
    check_values,
    value_digest,
)
from journal._store import (
    Store,
    StoreConveniences,
    check_digest,
    check_digests,
    check_position,
)
from journal._streams import check_request

#: Room a record's seal takes (header, nonce, tag, framing), kept off the store's limit.
SEAL_ROOM = 1024
#: Attempts of an append whose positions had to be predicted (see `_predict`).
_ATTEMPTS = 100
#: Streams whose next position is remembered, at most (then forgotten and read again).
_REMEMBERED = 10_000

_PLAIN = msgspec.msgpack.Decoder(tuple[bytes, tuple[str, ...]])
_encode = msgspec.msgpack.encode


class EncryptedStore(StoreConveniences):
    """A `Store` that seals every payload written to ``store`` with AES-256-GCM under the
    keyring's write key, and opens what it reads with whichever key of the keyring sealed
    it (`journal.load_keyring` reads a key file).

    A record is bound to its journal identity, stream, position and type; a snapshot to
    its stream and position; a value to the key it is stored under: moved anywhere else,
    it fails to open (`TamperedError`, a `CorruptionError`). A payload sealed with a key
    the keyring lacks raises `KeyMissingError`, with another key under the same id
    `WrongKeyError`, and one not sealed at all `NotSealedError`: never wrong bytes.
    """

    def __init__(self, store: Store, keyring: Keyring) -> None:
        if isinstance(store, EncryptedStore):
            raise JournalError("the store is already an EncryptedStore")
        self.inner = store
        self.keyring = keyring
        #: Per stream, the last position after the appends submitted so far, for appends
        #: that give no expected position (see `_predict`).
        self._next: dict[str, int] = {}

    # -- what passes through ---------------------------------------------------------

    @property
    def identity(self) -> str:
        """The journal's identity (the store's)."""
        return self.inner.identity

    @property
    def max_record_bytes(self) -> int:
        """The store's limit less the room a seal takes."""
        return max(1, self.inner.max_record_bytes - SEAL_ROOM)

    @property
    def leases(self) -> Any:
        """The store's leases (PostgreSQL): names and owners, no payloads."""
        return self.inner.leases  # type: ignore[attr-defined]

    def listen(self) -> Any:
        """The store's notices (PostgreSQL): stream names and positions, no payloads."""
        return self.inner.listen()  # type: ignore[attr-defined]

    async def last_position(self, stream: str) -> int:
        return await self.inner.last_position(stream)

    async def stream_info(self, stream: str) -> StreamInfo:
        return await self.inner.stream_info(stream)

    async def stream_infos(self, streams: Sequence[str]) -> list[StreamInfo]:
        return await self.inner.stream_infos(streams)

    async def list_streams(self, prefix: str = "") -> list[str]:
        return await self.inner.list_streams(prefix)

    async def list_stream_infos(
        self, prefix: str = "", *, after: str = "", limit: int = 1000
    ) -> list[StreamInfo]:
        return await self.inner.list_stream_infos(prefix, after=after, limit=limit)

    async def claim(self, stream: str) -> int:
        return await self.inner.claim(stream)

    async def collect_values(self) -> int:
        return await self.inner.collect_values()

    async def truncate(self, stream: str, through: int, *, epoch: int | None = None) -> int:
        return await self.inner.truncate(stream, through, epoch=epoch)

    async def delete_stream(self, stream: str, *, epoch: int | None = None) -> bool:
        self._next.pop(stream, None)
        return await self.inner.delete_stream(stream, epoch=epoch)

    async def create_stream(self, stream: str, *, first_position: int = 1, epoch: int = 0) -> None:
        self._next.pop(stream, None)
        await self.inner.create_stream(stream, first_position=first_position, epoch=epoch)

    async def adopt_identity(self, identity: str) -> None:
        await self.inner.adopt_identity(identity)

    async def verify(self) -> VerifyReport:
        """The store's own check (checksums over the sealed bytes): needs no key."""
        return await self.inner.verify()

    async def close(self) -> None:
        await self.inner.close()

    # -- sealing ---------------------------------------------------------------------

    def _record_bound(self, stream: str, position: int, record_type: str) -> bytes:
        return b"\x00".join(
            (
                b"record",
                self.inner.identity.encode(),
                stream.encode(),
                struct.pack(">Q", position),
                record_type.encode(),
            )
        )

    def _snapshot_bound(self, stream: str, position: int) -> bytes:
        return b"\x00".join(
            (
                b"snapshot",
                self.inner.identity.encode(),
                stream.encode(),
                struct.pack(">Q", position),
            )
        )

    def _keys(self, refs: tuple[str, ...]) -> tuple[str, ...]:
        value_key = self.keyring.value_key
        return tuple(value_key(ref) for ref in refs)

    def _seal_record(self, stream: str, position: int, record: NewRecord) -> NewRecord:
        refs = check_refs(stream, record.refs)
        sealed = self.keyring.seal(
            _encode((record.data, refs)), self._record_bound(stream, position, record.type)
        )
        return NewRecord(record.type, sealed, self._keys(refs))

    def _seal_values(self, stream: str, values: Mapping[str, bytes]) -> dict[str, bytes]:
        """Values sealed and keyed by the keyed digest, each checked first against the
        SHA-256 of its bytes (the store can no longer check that)."""
        check_values(stream, dict(values))
        sealed = {}
        for digest, data in values.items():
            if value_digest(data) != digest:  # a sealed value under another key
                raise InvalidStreamError(
                    f"stream {stream!r}: value keyed {digest!r:.80} does not match its bytes "
                    f"(their SHA-256 is {value_digest(data)}). Nothing was written."
                )
            key = self.keyring.value_key(digest)
            sealed[key] = self.keyring.seal_value(data, key)
        return sealed

    def _open(
        self, stream: str, position: int, bound: bytes, data: bytes, keys: tuple[str, ...] | None
    ) -> tuple[bytes, tuple[str, ...]]:
        """A sealed payload's bytes and refs; ``keys``, the refs the store holds for it,
        must be the keyed digests of the sealed refs (None: not checked)."""
        where = f"stream {stream!r} position {position}"
        plain = self.keyring.open(data, bound, where, stream, position, SEALED_MAGIC)
        try:
            body, refs = _PLAIN.decode(plain)
        except msgspec.DecodeError:
            raise TamperedError(stream, position, sealed_key_id(data) or "", where) from None
        if keys is not None and self._keys(refs) != tuple(keys):
            raise TamperedError(stream, position, sealed_key_id(data) or "", f"{where} (its refs)")
        return body, refs

    def _open_record(self, record: Record) -> Record:
        bound = self._record_bound(record.stream, record.position, record.type)
        data, refs = self._open(record.stream, record.position, bound, record.data, record.refs)
        return Record(
            record.stream, record.position, record.global_position, record.type, data, refs
        )

    def _open_snapshot(self, snapshot: Snapshot) -> Snapshot:
        bound = self._snapshot_bound(snapshot.stream, snapshot.position)
        data, refs = self._open(
            snapshot.stream, snapshot.position, bound, snapshot.data, snapshot.refs
        )
        return Snapshot(snapshot.stream, snapshot.position, data, refs)

    # -- writing ---------------------------------------------------------------------

    async def append_many(self, appends: Sequence[StreamAppend]) -> list[Appended]:
        """Append to several streams in one transaction, every payload sealed.

        A record is sealed bound to its position, so a part that gives no expected
        position gets one: the position this wrapper predicts from the appends it has
        submitted (read from the store the first time). A prediction that another writer
        made wrong fails the append with `ConflictError` before anything is written, and
        the append is sealed again and retried against the store's position, so callers
        see the semantics of an unchecked append.
        """
        check_request(appends, self.max_record_bytes)
        explicit = {p.stream for p in appends if p.expected_position is not None}
        for attempt in range(_ATTEMPTS):
            # From here to the store's append, no await: predictions are taken in order.
            parts, before, after = self._seal_parts(appends)
            try:
                return await self.inner.append_many(parts)
            except BaseException as exc:
                self._unpredict(before, after)
                if isinstance(exc, MissingValueError):
                    raise self._missing(exc, _all_refs(appends), "append refused") from None
                if (
                    not isinstance(exc, ConflictError)
                    or exc.stream in explicit
                    or exc.stream not in before
                    or attempt == _ATTEMPTS - 1
                ):
                    raise
                self._next[exc.stream] = exc.actual  # where the stream really is
        raise AssertionError("unreachable")

    def _unpredict(self, before: dict[str, int], after: dict[str, int]) -> None:
        """Take back the predictions of an append that failed: each stream's goes back to
        what it was, unless a later append has predicted on top of it (that one fails
        too, and its retry learns where the stream is)."""
        for stream, position in before.items():
            if self._next.get(stream) == after[stream]:
                self._next[stream] = position

    def _seal_parts(
        self, appends: Sequence[StreamAppend]
    ) -> tuple[list[StreamAppend], dict[str, int], dict[str, int]]:
        """The parts sealed, the positions predicted before them for the streams of
        parts without an expected position, and every stream's position after them (see
        `append_many`). A stream
        never seen is guessed new (position 0): if it is not, the store's `ConflictError`
        says where it is, and the append is sealed again."""
        running: dict[str, int] = {}
        before: dict[str, int] = {}
        parts = []
        for part in appends:
            stream = part.stream
            expected = part.expected_position
            if expected is None:
                if stream not in running:
                    if len(self._next) >= _REMEMBERED and stream not in self._next:
                        self._next.clear()
                    before.setdefault(stream, self._next.get(stream, 0))
                start = running.get(stream, self._next.get(stream, 0))
            else:
                start = expected
            running[stream] = start + len(part.records)
            records = tuple(
                self._seal_record(stream, start + 1 + offset, record)
                for offset, record in enumerate(part.records)
            )
            snapshot = None
            if part.snapshot is not None:
                refs = check_refs(stream, part.snapshot_refs, "snapshot")
                snapshot = self.keyring.seal(
                    _encode((part.snapshot, refs)), self._snapshot_bound(stream, running[stream])
                )
            parts.append(
                StreamAppend(
                    stream,
                    records,
                    start,
                    part.epoch,
                    snapshot,
                    self._seal_values(stream, part.values) if part.values else {},
                    self._keys(part.snapshot_refs),
                )
            )
        for stream, position in running.items():
            if stream in before or stream in self._next:
                self._next[stream] = position
        return parts, before, running

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
        """Save ``data`` sealed as the state of ``stream`` through ``position``."""
        check_position(stream, "position", position, 1)
        refs = check_refs(stream, refs, "snapshot")
        sealed = data
        if isinstance(data, bytes):
            sealed = self.keyring.seal(
                _encode((data, refs)), self._snapshot_bound(stream, position)
            )
        try:
            await self.inner.save_snapshot(
                stream,
                position,
                sealed,
                epoch=epoch,
                refs=self._keys(refs),
                values=self._seal_values(stream, values) if values else values,
            )
        except MissingValueError as exc:
            raise self._missing(exc, refs, "append refused") from None

    def _missing(
        self, exc: MissingValueError, digests: Iterable[str], doing: str
    ) -> MissingValueError:
        """``exc`` of the store, naming the values by their SHA-256 again."""
        keys = {self.keyring.value_key(digest): digest for digest in digests}
        return MissingValueError([keys.get(key, key) for key in exc.digests], doing)

    # -- reading ---------------------------------------------------------------------

    async def read_batches(
        self, stream: str, from_position: int = 1, *, limit: int | None = None
    ) -> AsyncIterator[list[Record]]:
        """Like the store's, every record opened."""
        opened = self._open_record
        async for batch in self.inner.read_batches(stream, from_position, limit=limit):
            yield [opened(record) for record in batch]

    async def read_all(self, from_global_position: int = 1) -> AsyncIterator[Record]:
        async for record in self.inner.read_all(from_global_position):
            yield self._open_record(record)

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        snapshot = await self.inner.load_snapshot(stream)
        return None if snapshot is None else self._open_snapshot(snapshot)

    async def read_value(self, digest: str) -> bytes:
        """The value whose SHA-256 is ``digest``, opened and its hash checked."""
        check_digest(digest)
        key = self.keyring.value_key(digest)
        try:
            data = await self.inner.read_value(key)
        except MissingValueError:
            raise MissingValueError(
                [digest],
                "read_value (looked up under the key file's digest key: a journal written "
                "with another digest key shows every value as not stored)",
            ) from None
        except CorruptValueError:
            raise CorruptValueError(digest) from None
        return self.keyring.open_value(data, key, digest)

    async def has_values(self, digests: Iterable[str]) -> set[str]:
        listed = check_digests(digests)
        for digest in listed:
            check_digest(digest)
        keys = {self.keyring.value_key(digest): digest for digest in listed}
        return {keys[key] for key in await self.inner.has_values(list(keys))}

    async def salvage(self, stream: str, from_position: int = 1) -> AsyncIterator[Salvaged]:
        """The store's salvage, each record opened; one that cannot be opened comes back
        sealed, with the reason in ``damage``."""
        async for found in self.inner.salvage(stream, from_position):
            if found.damage is None:
                bound = self._record_bound(found.stream, found.position, found.type)
                try:
                    data, _ = self._open(found.stream, found.position, bound, found.data, None)
                except JournalError as exc:
                    found = msgspec.structs.replace(found, damage=str(exc))
                else:
                    found = msgspec.structs.replace(found, data=data)
            yield found

    async def salvage_snapshot(self, stream: str) -> SalvagedSnapshot | None:
        found = await self.inner.salvage_snapshot(stream)
        if found is None or found.damage is not None:
            return found
        try:
            bound = self._snapshot_bound(stream, found.position)
            data, _ = self._open(stream, found.position, bound, found.data, None)
        except JournalError as exc:
            return msgspec.structs.replace(found, damage=str(exc))
        return msgspec.structs.replace(found, data=data)


def _all_refs(appends: Sequence[StreamAppend]) -> list[str]:
    """Every digest an append refers to or gives."""
    digests: list[str] = []
    for part in appends:
        for record in part.records:
            digests += record.refs
        digests += part.snapshot_refs
        digests += part.values
    return digests


def is_sealed(data: bytes) -> bool:
    """Whether ``data`` is a sealed payload (record, snapshot or value): a header check."""
    return data.startswith((SEALED_MAGIC, SEALED_VALUE_MAGIC))
