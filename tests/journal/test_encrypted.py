"""What an encrypted journal adds to the store contract (docs/encryption.md): nothing of a
payload in clear in the file, values stored once under a keyed digest, integrity checked
without the key, and a clear error (never wrong bytes) for a missing or wrong key, a plain
journal or a tampered payload."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sqlite3

import msgspec
import pytest

from journal import (
    Codec,
    CorruptionError,
    DecodeError,
    EncryptedStore,
    EncryptionError,
    KeyMissingError,
    Keyring,
    MissingValueError,
    NewRecord,
    NotSealedError,
    SqliteStore,
    StreamAppend,
    TamperedError,
    WrongKeyError,
    load_keyring,
    value_digest,
)
from journal._crypt import keyring_to_json
from journal._records import checksum

pytestmark = pytest.mark.anyio
CANARY = b"canary-7f3a9c0e41d2"
DOCUMENT = CANARY + b" document " * 20_000


def _file_bytes(path: pathlib.Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))


async def _fill(path: pathlib.Path, keyring: Keyring) -> None:
    digest = value_digest(DOCUMENT)
    async with EncryptedStore(await SqliteStore.open(path), keyring) as store:
        await store.append_many(
            [
                StreamAppend(
                    "actor/a",
                    (NewRecord("t", CANARY + b" record", refs=(digest,)),),
                    expected_position=0,
                    snapshot=CANARY + b" snapshot",
                    values={digest: DOCUMENT},
                    snapshot_refs=(digest,),
                ),
                StreamAppend("actor/b", (NewRecord("t", b"b", refs=(digest,)),)),
            ]
        )
        await store.append("actor/b", [NewRecord("t", CANARY + b" unfenced")])
        assert await store.has_values([digest]) == {digest}


async def test_nothing_is_in_clear_and_everything_reads_back(tmp_path: pathlib.Path) -> None:
    path, keyring = tmp_path / "j.db", Keyring.generate("k1")
    digest = value_digest(DOCUMENT)
    await _fill(path, keyring)

    stored = _file_bytes(path)
    assert CANARY not in stored
    assert digest.encode() not in stored  # the plain SHA-256 would tell a known document
    assert hashlib.sha256(DOCUMENT).digest() not in stored
    with sqlite3.connect(path) as conn:  # stored once, under the keyed digest
        keys = [row[0] for row in conn.execute("SELECT digest FROM stored_values")]
    assert keys == [keyring.value_key(digest)]

    async with EncryptedStore(await SqliteStore.open(path), keyring) as store:
        [record] = [r async for r in store.read("actor/a")]
        assert (record.data, record.refs) == (CANARY + b" record", (digest,))
        snapshot = await store.load_snapshot("actor/a")
        assert snapshot is not None
        assert snapshot.data == CANARY + b" snapshot"
        assert snapshot.refs == (digest,)
        assert await store.read_value(digest) == DOCUMENT
        assert [r.data async for r in store.read("actor/b")] == [b"b", CANARY + b" unfenced"]

    async with await SqliteStore.open(path, read_only=True) as plain:  # no key: integrity
        report = await plain.verify()
        assert report.ok, report.problems
        assert (report.records, report.values) == (3, 1)


async def test_a_missing_or_wrong_key_is_named_and_returns_nothing(
    tmp_path: pathlib.Path,
) -> None:
    path, keyring = tmp_path / "j.db", Keyring.generate("k1")
    await _fill(path, keyring)
    async with await SqliteStore.open(path) as inner:
        missing = EncryptedStore(inner, Keyring.generate("k2"))
        with pytest.raises(
            KeyMissingError, match=r"position 1 is sealed with key 'k1'.*holds only k2"
        ):
            [r async for r in missing.read("actor/a")]
        other = Keyring({"k1": os.urandom(32)}, "k1", keyring.digest_key)
        wrong = EncryptedStore(inner, other)
        with pytest.raises(WrongKeyError, match=r"sealed with key 'k1'.* another key"):
            await wrong.load_snapshot("actor/a")
        with pytest.raises(WrongKeyError, match=f"value {value_digest(DOCUMENT)}"):
            await wrong.read_value(value_digest(DOCUMENT))
        with pytest.raises(MissingValueError, match="another digest key"):
            await missing.read_value(value_digest(DOCUMENT))

        class Note(msgspec.Struct, tag="t"):
            pass

        [sealed] = [r async for r in inner.read("actor/a")]  # read without the wrapper
        with pytest.raises(DecodeError, match="encrypted \\(sealed with key 'k1'\\)"):
            Codec(Note).decode(sealed)


async def test_a_plain_journal_is_not_read_as_sealed(tmp_path: pathlib.Path) -> None:
    async with await SqliteStore.open(tmp_path / "j.db") as inner:
        await inner.append("s", [NewRecord("t", b"plain")])
        with pytest.raises(NotSealedError, match="position 1 is not sealed"):
            [r async for r in EncryptedStore(inner, Keyring.generate()).read("s")]


async def test_a_payload_moved_or_changed_fails_authentication(tmp_path: pathlib.Path) -> None:
    path, keyring = tmp_path / "j.db", Keyring.generate("k1")
    async with EncryptedStore(await SqliteStore.open(path), keyring) as store:
        await store.append("s", [NewRecord("t", b"one"), NewRecord("t", b"two")])
    # Record 2's sealed bytes put at position 1, with a checksum that matches them: the
    # store's own check passes, the seal's does not.
    with sqlite3.connect(path) as conn:
        [(second,)] = conn.execute("SELECT data FROM records WHERE position = 2")
        conn.execute(
            "UPDATE records SET data = ?, checksum = ? WHERE position = 1",
            (second, checksum("s", 1, "t", second)),
        )
    async with EncryptedStore(await SqliteStore.open(path), keyring) as store:
        with pytest.raises(TamperedError, match=r"stream 's' position 1.*failed authentication"):
            [r async for r in store.read("s")]
        with pytest.raises(CorruptionError):  # the runtime quarantines it as damage
            [r async for r in store.read("s")]
        assert [r.data async for r in store.read("s", 2)] == [b"two"]
        [bad, good] = [s async for s in store.salvage("s")]
        assert bad.damage is not None
        assert "failed authentication" in bad.damage
        assert (good.data, good.damage) == (b"two", None)


def test_the_key_file_is_checked(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(keyring_to_json({"a": b"\x01" * 32, "b": b"\x02" * 32}, "b", b"\x03" * 32))
    os.chmod(path, 0o640)
    keyring = load_keyring(path)
    assert (keyring.write, keyring.key_ids) == ("b", ["a", "b"])
    os.chmod(path, 0o604)
    with pytest.raises(EncryptionError, match="readable or writable by every user"):
        load_keyring(path)
    os.chmod(path, 0o600)
    for broken, said in [
        ({"write": "c", "keys": {"a": "AQ=="}, "digest_key": "AQ=="}, "is 1 bytes"),
        ({"write": "z", "keys": {}, "digest_key": "AQ=="}, "at least one key"),
        ({"keys": {}}, '"write"'),
        ([], "expected a JSON object"),
    ]:
        path.write_text(json.dumps(broken))
        with pytest.raises(EncryptionError, match=said):
            load_keyring(path)
