"""The journal's value types: records to append, stored records, snapshots, verify reports."""

from __future__ import annotations

import functools
import hashlib
import zlib
from collections.abc import Iterable

import msgspec

from journal._errors import InvalidStreamError

#: Longest accepted stream name, in characters.
MAX_STREAM_NAME = 1024


class NewRecord(msgspec.Struct, frozen=True):
    """A record on its way into the journal: a type tag and an encoded payload.

    ``refs`` are the digests of the stored values the record refers to (see "Values
    stored once" in docs/journal.md): the payload embeds the references in whatever form
    the caller likes; ``refs`` tells the journal which values must stay stored.
    """

    type: str
    data: bytes
    refs: tuple[str, ...] = ()


class Record(msgspec.Struct, frozen=True, gc=False):
    """A stored record, as read back: where it sits and what it holds.

    (``gc=False``: its fields are strings, ints and bytes, which cannot form cycles, so
    replaying long streams does not feed the cycle collector.)
    """

    stream: str
    position: int
    global_position: int
    type: str
    data: bytes
    #: The digests of the values the record refers to, as appended.
    refs: tuple[str, ...] = ()


class StreamAppend(msgspec.Struct, frozen=True):
    """One stream's part of a (possibly multi-stream) atomic append.

    ``expected_position`` is the stream's last position that the writer saw (0 for a new
    stream); ``None`` skips that check. ``epoch`` is the writer's owner epoch from
    `Store.claim`; ``None`` skips fencing. ``snapshot``, when given, replaces the stream's
    snapshot in the same transaction, covering the stream through the last position of
    this part (its current last position if ``records`` is empty).

    ``values`` are values to store with the append, keyed by their digest
    (`value_digest`); ``snapshot_refs`` are the digests the snapshot refers to. Every ref
    of the part must be a value given in the append or one already stored, else the
    append fails with `MissingValueError` and nothing is written.
    """

    stream: str
    records: tuple[NewRecord, ...]
    expected_position: int | None = None
    epoch: int | None = None
    snapshot: bytes | None = None
    values: dict[str, bytes] = {}
    snapshot_refs: tuple[str, ...] = ()


class Appended(msgspec.Struct, frozen=True):
    """Where an append landed: positions ``first_position..last_position`` of ``stream``."""

    stream: str
    first_position: int
    last_position: int
    last_global_position: int


class Snapshot(msgspec.Struct, frozen=True):
    """Opaque state saved for a stream, covering its records up to ``position`` inclusive."""

    stream: str
    position: int
    data: bytes
    #: The digests of the values the snapshot refers to.
    refs: tuple[str, ...] = ()


class Salvaged(msgspec.Struct, frozen=True, gc=False):
    """A stored record read back without trusting it (see `Store.salvage`).

    ``damage`` says why its bytes do not match their checksum, or is None when they do:
    a record with damage holds whatever the file holds, which may be wrong in any byte.
    """

    stream: str
    position: int
    global_position: int
    type: str
    data: bytes
    damage: str | None = None


class SalvagedSnapshot(msgspec.Struct, frozen=True):
    """A stream's snapshot read back without trusting it (see `Store.salvage_snapshot`);
    ``damage`` as in `Salvaged`."""

    stream: str
    position: int
    data: bytes
    damage: str | None = None


class Problem(msgspec.Struct, frozen=True):
    """One integrity problem that `Store.verify` found."""

    stream: str
    position: int
    kind: str
    detail: str


class VerifyReport(msgspec.Struct, frozen=True):
    """The result of checking a whole store: every problem found, and what was checked."""

    streams: int
    records: int
    problems: tuple[Problem, ...]
    #: Stored values checked (see "Values stored once" in docs/journal.md).
    values: int = 0

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


#: Odd multiplier that spreads a position over 32 bits (a bijection modulo 2**32).
POSITION_MIX = 0x9E3779B1


def compute_head_crc(stream: str, record_type: str) -> int:
    """The CRC-32 of a record's stream name and type tag: the seed of its checksum (for
    callers that keep it themselves, as the SQLite writer does in its stream states)."""
    return zlib.crc32(f"{stream}\x00{record_type}\x00".encode())


#: `compute_head_crc`, cached for readers and checks (one entry per stream and type).
head_crc = functools.lru_cache(maxsize=4096)(compute_head_crc)


def checksum(stream: str, position: int, record_type: str, data: bytes) -> int:
    """CRC-32 of a record's bytes, bound to its stream, type and position.

    The CRC runs over the stream name, the type tag and the payload (the name and tag part
    is cached, so a record costs one CRC over its payload); the position is then mixed in by
    an odd multiplier, so a record that damage moved or renumbered fails as surely as one
    with a flipped payload byte.
    """
    crc = zlib.crc32(data, head_crc(stream, record_type))
    return crc ^ ((position * POSITION_MIX) & 0xFFFFFFFF)


def snapshot_checksum(stream: str, position: int, data: bytes) -> int:
    """CRC-32 over a snapshot's bytes and the stream position it covers."""
    return checksum(stream, position, "\x00snapshot", data)


def value_digest(data: bytes) -> str:
    """The digest a value is stored under: the SHA-256 of its bytes, 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


#: How the bytes of a *sealed value* begin: a value stored under a key that is not its
#: SHA-256 (an encrypted journal's, keyed by a secret digest: see docs/encryption.md). Its
#: last 32 bytes are the SHA-256 of the bytes before them, which the store checks instead.
SEALED_VALUE_MAGIC = b"\x00AFV1"


def is_sealed_value(data: bytes) -> bool:
    """True when ``data`` is a sealed value whose trailing SHA-256 matches its bytes."""
    return (
        len(data) > len(SEALED_VALUE_MAGIC) + 32
        and data.startswith(SEALED_VALUE_MAGIC)
        and hashlib.sha256(memoryview(data)[:-32]).digest() == data[-32:]
    )


def value_intact(digest: str, data: bytes) -> bool:
    """True when a value's bytes are what was stored under ``digest``: their SHA-256 is
    the digest, or they are an intact sealed value (`is_sealed_value`)."""
    return value_digest(data) == digest or is_sealed_value(data)


def is_digest(value: object) -> bool:
    """True when ``value`` has the form of a value digest."""
    return type(value) is str and len(value) == 64 and not value.strip("0123456789abcdef")


def check_refs(stream: str, refs: object, what: str = "record") -> tuple[str, ...]:
    """Refuse refs that are not a tuple of value digests; return them."""
    if not isinstance(refs, tuple) or not all(is_digest(ref) for ref in refs):
        raise InvalidStreamError(
            f"stream {stream!r}: a {what}'s refs must be a tuple of value digests (64 "
            f"lowercase hex digits, the SHA-256 of the value), got {refs!r:.200}"
        )
    return refs


def check_values(stream: str, values: object) -> None:
    """Refuse values that are not bytes keyed by their own digest (hashing each one)."""
    if not isinstance(values, dict):
        raise InvalidStreamError(
            f"stream {stream!r}: values must be a dict of digest to bytes, got "
            f"{type(values).__name__}"
        )
    for digest, data in values.items():
        if not isinstance(data, bytes):
            raise InvalidStreamError(
                f"stream {stream!r}: value {digest!r:.80} must be bytes, got {type(data).__name__}"
            )
        if not is_digest(digest) or not value_intact(digest, data):
            raise InvalidStreamError(
                f"stream {stream!r}: value keyed {digest!r:.80} does not match its bytes "
                f"(their SHA-256 is {value_digest(data)}); a value is keyed by the SHA-256 "
                f"hex digest of its bytes (or is a sealed value, see docs/encryption.md). "
                f"Nothing was written."
            )


def distinct(refs: Iterable[str]) -> list[str]:
    """``refs`` without repeats, in order."""
    return list(dict.fromkeys(refs))


def check_stream_name(stream: object) -> str:
    """Return ``stream`` if it is a usable stream name, else raise `InvalidStreamError`."""
    if not isinstance(stream, str):
        raise InvalidStreamError(f"stream name must be a str, got {type(stream).__name__}")
    if not stream or len(stream) > MAX_STREAM_NAME or "\x00" in stream or not is_utf8(stream):
        raise InvalidStreamError(
            f"stream name {stream[:80]!r} is not usable: it must be 1 to {MAX_STREAM_NAME} "
            f"characters of Unicode text (encodable as UTF-8) with no NUL character"
        )
    return stream


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` if it can prefix stream names, else raise `InvalidStreamError`."""
    if not isinstance(prefix, str) or "\x00" in prefix or not is_utf8(prefix):
        raise InvalidStreamError(f"a stream name prefix must be Unicode text, got {prefix!r}")
    return prefix


#: Record type tags that passed `check_new_record` (bounded: a program has few types).
_usable_types: set[str] = set()


def check_new_record(stream: str, record: object) -> None:
    """Refuse anything but a `NewRecord` with a usable type tag and bytes payload."""
    if not isinstance(record, NewRecord):
        raise InvalidStreamError(
            f"stream {stream!r}: records to append must be NewRecord, got {type(record).__name__}"
        )
    kind = record.type
    if type(kind) is not str or kind not in _usable_types:
        if not isinstance(kind, str) or not kind or "\x00" in kind or not is_utf8(kind):
            raise InvalidStreamError(
                f"stream {stream!r}: record type {kind!r} must be non-empty Unicode text "
                f"(encodable as UTF-8) with no NUL character"
            )
        if len(_usable_types) < 4096:
            _usable_types.add(kind)
    if not isinstance(record.data, bytes):
        raise InvalidStreamError(
            f"stream {stream!r}: record payload must be bytes, got {type(record.data).__name__}; "
            f"encode it first (a Codec does)"
        )
    if record.refs:
        check_refs(stream, record.refs)


def check_counter(stream: str, name: str, value: object) -> None:
    """Refuse an expected position or epoch that is neither None nor an int >= 0."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise InvalidStreamError(
            f"stream {stream!r}: {name} must be None or an integer >= 0, got {value!r}"
        )


def is_utf8(text: str) -> bool:
    """True when ``text`` can be stored (encoded as UTF-8: no lone surrogates)."""
    if text.isascii():  # O(1) for the usual names
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class StreamInfo(msgspec.Struct, frozen=True):
    """A stream's bookkeeping: positions stored, owner epoch, latest snapshot position."""

    stream: str
    last_position: int
    first_position: int
    epoch: int
    snapshot_position: int
