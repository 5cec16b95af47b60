"""The store contract, run through `EncryptedStore` over the memory, SQLite and PostgreSQL
stores (values on the first two): an encrypted journal keeps every promise of
docs/journal.md (see docs/encryption.md), but one: its record limit is the store's less the
room a seal takes."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.journal.contract")

from journal import (  # noqa: E402
    DEFAULT_MAX_RECORD_BYTES,
    EncryptedStore,
    Keyring,
    MemoryStore,
    NewRecord,
    PostgresStore,
    RecordTooLargeError,
    SqliteStore,
    Store,
)
from journal._encrypted import SEAL_ROOM  # noqa: E402
from tests.journal.contract import StoreContract  # noqa: E402
from tests.journal.contract_values import ValueContract  # noqa: E402

KEYRING = Keyring.generate("test-key")


class _Limits:
    """The record limit of an encrypted store: the store's, less `SEAL_ROOM`."""

    async def test_default_record_limit_is_32_mib(self, store: Store) -> None:
        assert store.max_record_bytes == DEFAULT_MAX_RECORD_BYTES - SEAL_ROOM

    async def test_record_limit_is_configurable(self, store: Store) -> None:
        await store.close()
        small: Store = await self.open_store(max_record_bytes=SEAL_ROOM + 100)  # type: ignore[attr-defined]
        assert small.max_record_bytes == 100
        await small.append("s", [NewRecord("t", b"x" * 100)])  # sealed: over 100 bytes
        with pytest.raises(RecordTooLargeError, match="101 bytes exceeds the limit of 100"):
            await small.append("s", [NewRecord("t", b"x" * 101)])
        assert await small.last_position("s") == 1


class TestEncryptedMemoryStore(_Limits, StoreContract, ValueContract):
    async def create_store(self, **options: Any) -> Store:
        return EncryptedStore(MemoryStore(**options), KEYRING)

    async def reopen(self, store: Store) -> Store:
        return store


class TestEncryptedSqliteStore(_Limits, StoreContract, ValueContract):
    @pytest.fixture(autouse=True)
    def _path(self, tmp_path: pathlib.Path) -> None:
        self.path = tmp_path / "journal.db"

    async def create_store(self, **options: Any) -> Store:
        return EncryptedStore(await SqliteStore.open(self.path, **options), KEYRING)


class TestEncryptedPostgresStore(_Limits, StoreContract, ValueContract):
    """On a real PostgreSQL server (tests/journal/postgres.py), a fresh database per test;
    values included."""

    @pytest.fixture
    def anyio_backend(self) -> tuple[str, dict[str, object]]:
        return ("asyncio", {})  # once is enough (the other stores run on uvloop too)

    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    async def create_store(self, **options: Any) -> Store:
        return EncryptedStore(await PostgresStore.open(self.dsn, **options), KEYRING)
