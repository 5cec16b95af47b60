"""The journal's error family: every failure a caller can see derives from `JournalError`."""

from __future__ import annotations


class JournalError(Exception):
    """Root of every error the journal raises on purpose."""


class ConflictError(JournalError):
    """An append expected a stream position that the stream has moved past (or not reached)."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream!r}: append expected the stream at position {expected}, "
            f"but it is at position {actual}; nothing was written. Re-read the stream "
            f"and retry against position {actual}."
        )


class FencingError(JournalError):
    """A write carried an owner epoch that is no longer the stream's current one."""

    def __init__(self, stream: str, epoch: int, current: int) -> None:
        self.stream = stream
        self.epoch = epoch
        self.current = current
        super().__init__(
            f"stream {stream!r}: write under owner epoch {epoch} refused, the stream's "
            f"current epoch is {current}; another owner has claimed it. Nothing was written; "
            f"stop writing to this stream (or claim it again)."
        )


class RecordTooLargeError(JournalError, ValueError):
    """A record's payload is larger than the store's configured limit."""

    def __init__(self, stream: str, size: int, limit: int) -> None:
        self.stream = stream
        self.size = size
        self.limit = limit
        super().__init__(
            f"stream {stream!r}: record payload of {size} bytes exceeds the limit of "
            f"{limit} bytes; nothing was written. Store large blobs elsewhere and journal "
            f"a reference, or raise the limit with max_record_bytes= when opening the store."
        )


class InvalidStreamError(JournalError, ValueError):
    """A stream name or argument is malformed."""


class CorruptionError(JournalError):
    """Stored bytes do not match their checksum: the record was damaged at rest.

    For a stored value, ``stream`` is "" and ``position`` 0; the detail names its digest.
    """

    def __init__(self, stream: str, position: int, detail: str) -> None:
        self.stream = stream
        self.position = position
        self.detail = detail
        super().__init__(
            f"stream {stream!r} position {position}: stored record is corrupt ({detail}). "
            f"It was not returned. Restore the journal file from a backup, or run "
            f"verify() to list every damaged record."
        )


class CorruptValueError(CorruptionError):
    """A stored value's bytes do not match its digest: it was damaged at rest."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.stream, self.position = "", 0
        self.detail = f"value {digest}: stored bytes do not match their SHA-256"
        JournalError.__init__(
            self,
            f"stored value {digest} is corrupt (its bytes do not match their SHA-256); it "
            f"was not returned. Restore the journal from a backup, or run verify() to list "
            f"every damaged value.",
        )


class MissingValueError(JournalError, KeyError):
    """Values that were asked for, or referred to by an append, are not stored.

    Raised by `Store.read_value` for a digest not stored, and by an append whose records
    (or snapshot) refer to values neither given in the append nor stored: that append
    fails alone and writes nothing; send the values' bytes with it and retry.
    """

    def __init__(self, digests: list[str] | tuple[str, ...], doing: str = "") -> None:
        self.digests = tuple(digests)
        shown = ", ".join(self.digests[:5]) + (" ..." if len(self.digests) > 5 else "")
        what = f"{doing}: " if doing else ""
        self.message = (
            f"{what}{len(self.digests)} value(s) not stored: {shown}. A value is stored by "
            f"an append that gives its bytes (StreamAppend.values) and kept while a record "
            f"or snapshot refers to it; nothing was written."
        )
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would show the message quoted
        return self.message


class DecodeError(JournalError):
    """A record's payload could not be decoded into the expected record types."""

    def __init__(self, stream: str, position: int, record_type: str, detail: str) -> None:
        self.stream = stream
        self.position = position
        self.record_type = record_type
        self.detail = detail
        super().__init__(
            f"stream {stream!r} position {position}: cannot decode record of type "
            f"{record_type!r}: {detail}"
        )


class SnapshotError(JournalError, ValueError):
    """A snapshot or truncation request does not fit the stream."""


class StoreClosedError(JournalError):
    """The store was closed; it accepts no more calls."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is closed; open a new store to keep using the journal.")


class SchemaVersionError(JournalError):
    """The file was written by an unknown (newer) schema or is not a journal at all."""


class StoreConfigurationError(JournalError):
    """The database did not accept a setting that the journal's guarantees depend on."""


class StoreLockedError(JournalError):
    """Another process holds the journal file open for writing."""


class StoreNotEmptyError(JournalError):
    """The store holds streams, and what was asked of it needs an empty one (a copy's
    destination); nothing was changed."""

    def __init__(self, what: str, count: int, names: list[str]) -> None:
        self.count = count
        self.names = tuple(names)
        shown = ", ".join(repr(name) for name in names)
        more = f" and {count - len(names)} more" if count > len(names) else ""
        super().__init__(
            f"{what} is not empty: it holds {count} stream(s) ({shown}{more}); a journal is "
            f"copied only into an empty one, which takes its identity. Nothing was changed."
        )


class StoreReadOnlyError(JournalError):
    """A write was asked of a store opened read-only; nothing was written."""


class StorageError(JournalError):
    """The database failed underneath a write or read; the write was rolled back."""


class StorageFullError(StorageError):
    """The disk (or the store's size limit) is full; the write was rolled back."""
