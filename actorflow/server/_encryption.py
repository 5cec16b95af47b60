"""`actorflow serve --codec-key-file`: the journal opened through `journal.EncryptedStore`,
and a first look at the journal that says at once when its keys are missing or wrong
(see docs/encryption.md)."""

from __future__ import annotations

from journal import EncryptedStore, EncryptionError, Keyring, Store, load_keyring
from journal._crypt import sealed_key_id


class KeyFileError(Exception):
    """The key file, or the journal's seals, do not allow serving; the message says why."""


def read_key_file(path: str | None) -> Keyring | None:
    """The keyring of ``--codec-key-file``, or None without one."""
    if path is None:
        return None
    try:
        return load_keyring(path)
    except EncryptionError as exc:
        raise KeyFileError(str(exc)) from None


async def encrypted(store: Store, keyring: Keyring | None, label: str) -> Store:
    """``store`` wrapped when there is a keyring, once its first record shows the keys fit:
    an encrypted journal without a key file, a plain one with a key file, or a record
    sealed with a key the file lacks (or holds under another value) is refused here, with
    the key id, rather than on each actor's first read."""
    first = None
    async for record in store.read_all():
        first = record
        break
    if keyring is None:
        key_id = sealed_key_id(first.data) if first is not None else None
        if key_id is not None:
            raise KeyFileError(
                f"the journal {label} is encrypted (its first record is sealed with key "
                f"{key_id!r}); give --codec-key-file FILE holding that key"
            )
        return store
    wrapped = EncryptedStore(store, keyring)
    if first is not None:
        try:
            async for _ in wrapped.read(first.stream, first.position, limit=1):
                break
        except EncryptionError as exc:
            raise KeyFileError(f"the journal {label}: {exc}") from None
    return wrapped
