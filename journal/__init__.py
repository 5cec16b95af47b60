"""journal: ordered, durable, msgspec-encoded streams of records.

A generic store that knows nothing of actors: named streams of records with gapless
positions, atomic (multi-stream) appends at an expected position, owner epochs for fencing,
snapshots and truncation, checksums on every record, values stored once by content hash,
encryption at rest (`EncryptedStore`, docs/encryption.md), and interchangeable backends
(`MemoryStore`, `SqliteStore`, and `PostgresStore` with the ``postgres`` extra). See
docs/journal.md.
"""

from journal._codec import Codec as Codec
from journal._copy import CopyError as CopyError
from journal._copy import CopyReport as CopyReport
from journal._copy import copy_journal as copy_journal
from journal._crypt import EncryptionError as EncryptionError
from journal._crypt import KeyMissingError as KeyMissingError
from journal._crypt import Keyring as Keyring
from journal._crypt import NotSealedError as NotSealedError
from journal._crypt import TamperedError as TamperedError
from journal._crypt import WrongKeyError as WrongKeyError
from journal._crypt import load_keyring as load_keyring
from journal._encrypted import EncryptedStore as EncryptedStore
from journal._errors import ConflictError as ConflictError
from journal._errors import CorruptionError as CorruptionError
from journal._errors import CorruptValueError as CorruptValueError
from journal._errors import DecodeError as DecodeError
from journal._errors import FencingError as FencingError
from journal._errors import InvalidStreamError as InvalidStreamError
from journal._errors import JournalError as JournalError
from journal._errors import MissingValueError as MissingValueError
from journal._errors import RecordTooLargeError as RecordTooLargeError
from journal._errors import SchemaVersionError as SchemaVersionError
from journal._errors import SnapshotError as SnapshotError
from journal._errors import StorageError as StorageError
from journal._errors import StorageFullError as StorageFullError
from journal._errors import StoreClosedError as StoreClosedError
from journal._errors import StoreConfigurationError as StoreConfigurationError
from journal._errors import StoreLockedError as StoreLockedError
from journal._errors import StoreNotEmptyError as StoreNotEmptyError
from journal._errors import StoreReadOnlyError as StoreReadOnlyError
from journal._memory import MemoryStore as MemoryStore
from journal._postgres import PostgresStore as PostgresStore
from journal._postgres_cluster import LeaseInfo as LeaseInfo
from journal._postgres_cluster import Leases as Leases
from journal._postgres_cluster import Listener as Listener
from journal._postgres_cluster import Member as Member
from journal._postgres_cluster import Notice as Notice
from journal._records import Appended as Appended
from journal._records import NewRecord as NewRecord
from journal._records import Problem as Problem
from journal._records import Record as Record
from journal._records import Salvaged as Salvaged
from journal._records import SalvagedSnapshot as SalvagedSnapshot
from journal._records import Snapshot as Snapshot
from journal._records import StreamAppend as StreamAppend
from journal._records import StreamInfo as StreamInfo
from journal._records import VerifyReport as VerifyReport
from journal._records import value_digest as value_digest
from journal._sqlite import CommitStats as CommitStats
from journal._sqlite import SqliteStore as SqliteStore
from journal._store import DEFAULT_MAX_RECORD_BYTES as DEFAULT_MAX_RECORD_BYTES
from journal._store import Durability as Durability
from journal._store import Store as Store

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "Appended",
    "Codec",
    "CopyError",
    "CopyReport",
    "CommitStats",
    "ConflictError",
    "CorruptionError",
    "CorruptValueError",
    "DecodeError",
    "EncryptedStore",
    "EncryptionError",
    "Durability",
    "FencingError",
    "InvalidStreamError",
    "JournalError",
    "KeyMissingError",
    "Keyring",
    "LeaseInfo",
    "Leases",
    "Listener",
    "Member",
    "MemoryStore",
    "MissingValueError",
    "NewRecord",
    "NotSealedError",
    "Notice",
    "PostgresStore",
    "Problem",
    "Record",
    "RecordTooLargeError",
    "Salvaged",
    "SalvagedSnapshot",
    "SchemaVersionError",
    "Snapshot",
    "SnapshotError",
    "SqliteStore",
    "StorageError",
    "StorageFullError",
    "Store",
    "StoreClosedError",
    "StoreConfigurationError",
    "StoreLockedError",
    "StoreNotEmptyError",
    "StoreReadOnlyError",
    "StreamAppend",
    "StreamInfo",
    "TamperedError",
    "VerifyReport",
    "WrongKeyError",
    "copy_journal",
    "load_keyring",
    "value_digest",
]
