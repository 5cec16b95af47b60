"""Keys and sealing for encrypted journals (see docs/encryption.md): the key file, the
sealed envelope of records, snapshots and values, and the errors of opening one.

A sealed payload is ``magic | key id length (1 byte) | key id | key check (4 bytes) |
nonce (12 bytes) | AES-256-GCM ciphertext and tag``. The key check is the first 4 bytes of
HMAC-SHA256(key, "actorflow key check"): it tells a wrong key (same id, other bytes) from a
tampered payload. What the payload is bound to (stream, position, type; or a value's key)
is the cipher's associated data, never stored: a payload moved elsewhere fails to open.
A sealed value also ends with the SHA-256 of the bytes before it (`is_sealed_value`), so
that a store checks its integrity without the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from typing import Any

from journal._errors import CorruptionError, JournalError
from journal._records import SEALED_VALUE_MAGIC

#: How a sealed record or snapshot payload begins.
SEALED_MAGIC = b"\x00AFE1"
_NONCE = 12
_CHECK = 4
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_KEY_CHECK_LABEL = b"actorflow key check"


class EncryptionError(JournalError):
    """A sealed payload could not be opened (no key, a wrong key, not sealed, or tampered),
    or a key file is unusable. Never a wrong value: nothing is returned."""


class KeyMissingError(EncryptionError):
    """A payload is sealed with a key id that the key file does not hold (or no key file
    was given for a sealed journal)."""

    def __init__(self, key_id: str, where: str, held: list[str] | None) -> None:
        self.key_id = key_id
        if held is None:
            detail = "no key file was given (--codec-key-file, or journal.EncryptedStore)"
        else:
            detail = f"the key file holds only {', '.join(held) or 'no key'}"
        super().__init__(
            f"{where} is sealed with key {key_id!r}, and {detail}. Nothing was returned. "
            f"Open the journal with a key file that holds key {key_id!r}."
        )


class WrongKeyError(EncryptionError):
    """The key file holds the key id a payload names, but not the key it was sealed with."""

    def __init__(self, key_id: str, where: str) -> None:
        self.key_id = key_id
        super().__init__(
            f"{where} is sealed with key {key_id!r}, and the key file's key {key_id!r} is "
            f"another key (its key check differs). Nothing was returned. Use the key file "
            f"the journal was written with."
        )


class TamperedError(EncryptionError, CorruptionError):
    """A sealed payload failed authentication under the right key: it was changed, or
    moved from another stream, position or value."""

    def __init__(self, stream: str, position: int, key_id: str, what: str) -> None:
        self.key_id = key_id
        CorruptionError.__init__(
            self,
            stream,
            position,
            f"{what} sealed with key {key_id!r} failed authentication: it was changed or "
            f"moved since it was written",
        )


class NotSealedError(EncryptionError):
    """A payload read through an encrypted store is not sealed (a journal written without
    encryption, or bytes written around the encrypted store)."""


def sealed_key_id(data: bytes) -> str | None:
    """The key id a sealed payload (record, snapshot or value) names, or None if ``data``
    is not sealed. Reads only the header: needs no key."""
    if data.startswith((SEALED_MAGIC, SEALED_VALUE_MAGIC)):
        start = len(SEALED_MAGIC)
        if len(data) > start:
            length = data[start]
            try:
                return bytes(data[start + 1 : start + 1 + length]).decode("ascii")
            except UnicodeDecodeError:
                return None
    return None


def sealed_payload(data: bytes) -> str:
    """What to say of a sealed payload read without its key (a `DecodeError`'s detail)."""
    return (
        f"the payload is encrypted (sealed with key {sealed_key_id(data)!r}); read the "
        f"journal through journal.EncryptedStore with a key file that holds that key "
        f"(actorflow serve --codec-key-file FILE)"
    )


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - the extra is missing
        raise EncryptionError(
            "encrypted journals need the cryptography package: pip install 'actorflow[encryption]'"
        ) from None
    return AESGCM


def key_check(key: bytes) -> bytes:
    """The 4-byte check of ``key`` written in every payload it seals."""
    return hmac.new(key, _KEY_CHECK_LABEL, hashlib.sha256).digest()[:_CHECK]


class Keyring:
    """Named 256-bit keys, the one that seals new payloads, and the digest key that keys
    values (see docs/encryption.md for the file format)."""

    def __init__(self, keys: dict[str, bytes], write: str, digest_key: bytes) -> None:
        if not keys:
            raise EncryptionError("a keyring needs at least one key")
        for key_id, key in keys.items():
            if not _KEY_ID.fullmatch(key_id):
                raise EncryptionError(
                    f"key id {key_id!r} is not usable: 1 to 64 of A-Z a-z 0-9 . _ -"
                )
            if len(key) != 32:
                raise EncryptionError(f"key {key_id!r} is {len(key)} bytes; keys are 32 bytes")
        if write not in keys:
            raise EncryptionError(
                f"the write key {write!r} is not among the keys ({', '.join(keys)})"
            )
        if len(digest_key) != 32:
            raise EncryptionError(f"the digest key is {len(digest_key)} bytes; it must be 32")
        aesgcm = _aesgcm()
        self.write = write
        self.digest_key = digest_key
        self._ciphers = {key_id: aesgcm(key) for key_id, key in keys.items()}
        self._checks = {key_id: key_check(key) for key_id, key in keys.items()}
        self._headers = {
            key_id: bytes([len(key_id)]) + key_id.encode() + self._checks[key_id] for key_id in keys
        }

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys held, sorted."""
        return sorted(self._ciphers)

    @classmethod
    def generate(cls, key_id: str = "k1") -> Keyring:
        """A new keyring of one random key (and a random digest key)."""
        return cls({key_id: secrets.token_bytes(32)}, key_id, secrets.token_bytes(32))

    def value_key(self, digest: str) -> str:
        """The key a value whose SHA-256 is ``digest`` is stored under: HMAC-SHA256 of the
        digest under the digest key, so the store never sees the value's SHA-256."""
        return hmac.new(self.digest_key, bytes.fromhex(digest), hashlib.sha256).hexdigest()

    def seal(self, plaintext: bytes, bound: bytes, magic: bytes = SEALED_MAGIC) -> bytes:
        """``plaintext`` sealed under the write key, bound to ``bound`` (associated data)."""
        nonce = secrets.token_bytes(_NONCE)
        sealed = self._ciphers[self.write].encrypt(nonce, plaintext, bound)
        return b"".join((magic, self._headers[self.write], nonce, sealed))

    def open(
        self, data: bytes, bound: bytes, where: str, stream: str, position: int, magic: bytes
    ) -> bytes:
        """The plaintext of ``data`` sealed bound to ``bound``; `EncryptionError` naming
        ``where`` (and the key id) if it cannot be opened."""
        key_id = sealed_key_id(data) if data.startswith(magic) else None
        if key_id is None:
            raise NotSealedError(
                f"{where} is not sealed (not encrypted): a journal written without a key file "
                f"cannot be read through one. Encrypt it with `actorflow journal copy "
                f"SOURCE DESTINATION --destination-key-file FILE` (docs/encryption.md)."
            )
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise KeyMissingError(key_id, where, self.key_ids)
        start = len(magic) + 1 + len(key_id)
        if data[start : start + _CHECK] != self._checks[key_id]:
            raise WrongKeyError(key_id, where)
        start += _CHECK
        nonce = data[start : start + _NONCE]
        try:
            return bytes(cipher.decrypt(nonce, data[start + _NONCE :], bound))
        except Exception as exc:  # cryptography's InvalidTag (or a short payload)
            if type(exc).__name__ != "InvalidTag" and not isinstance(exc, ValueError):
                raise
            raise TamperedError(stream, position, key_id, where) from None

    def seal_value(self, plaintext: bytes, key: str) -> bytes:
        """A value sealed under the write key, bound to its stored ``key``, with the
        trailing SHA-256 that lets the store check it without the key."""
        sealed = self.seal(plaintext, b"value\x00" + key.encode(), SEALED_VALUE_MAGIC)
        return sealed + hashlib.sha256(sealed).digest()

    def open_value(self, data: bytes, key: str, digest: str) -> bytes:
        where = f"value {digest}"
        body = memoryview(data)[:-32].tobytes() if data.startswith(SEALED_VALUE_MAGIC) else data
        plain = self.open(body, b"value\x00" + key.encode(), where, "", 0, SEALED_VALUE_MAGIC)
        if hashlib.sha256(plain).hexdigest() != digest:  # cannot happen unless keys collide
            raise TamperedError("", 0, sealed_key_id(data) or "", where)
        return plain


def load_keyring(path: str | os.PathLike[str]) -> Keyring:
    """Read a key file (JSON, see docs/encryption.md), refusing one that others can read."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise EncryptionError(f"cannot read the key file {os.fspath(path)}: {exc}") from None
    if info.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise EncryptionError(
            f"the key file {os.fspath(path)} is readable or writable by every user (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): anyone on the machine could read the keys "
            f"or swap them. Refused; run `chmod o-rw {os.fspath(path)}` (0600 or 0640)."
        )
    try:
        with open(path, "rb") as file:
            doc = json.loads(file.read())
    except (OSError, ValueError) as exc:
        raise EncryptionError(f"cannot read the key file {os.fspath(path)}: {exc}") from None
    return keyring_from_json(doc, os.fspath(path))


def keyring_from_json(doc: object, where: str = "the key file") -> Keyring:
    """A keyring from a key file's parsed JSON."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), dict):
        raise EncryptionError(
            f'{where}: expected a JSON object {{"write": ID, "keys": {{ID: BASE64, ...}}, '
            f'"digest_key": BASE64}}'
        )
    write, digest_key = doc.get("write"), doc.get("digest_key")
    if not isinstance(write, str) or not isinstance(digest_key, str):
        raise EncryptionError(f'{where}: "write" (a key id) and "digest_key" (base64) are required')
    keys = {key_id: _decode(where, key_id, text) for key_id, text in doc["keys"].items()}
    return Keyring(keys, write, _decode(where, "digest_key", digest_key))


def keyring_to_json(keys: dict[str, bytes], write: str, digest_key: bytes) -> str:
    """A key file's text for ``keys``."""
    doc = {
        "write": write,
        "keys": {key_id: base64.b64encode(key).decode() for key_id, key in keys.items()},
        "digest_key": base64.b64encode(digest_key).decode(),
    }
    return json.dumps(doc, indent=2) + "\n"


def _decode(where: str, name: str, text: object) -> bytes:
    if not isinstance(text, str):
        raise EncryptionError(f"{where}: {name} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionError(f"{where}: {name} is not valid base64") from None
