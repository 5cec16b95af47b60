"""`actorflow journal key FILE`: make a key file, or add a key to one and write with it
(see docs/encryption.md); and the help of the `--codec-key-file` options."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat

import click

from journal import EncryptionError, load_keyring
from journal._crypt import keyring_from_json, keyring_to_json

CODEC_KEY_HELP = (
    "Encrypt the journal at rest with the keys in FILE (JSON: key ids to base64 256-bit "
    "keys, the id that writes, a digest key; see docs/encryption.md). Refused if every "
    "user may read it. Make one with `actorflow journal key FILE`."
)


@click.command("key", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--id", "key_id", default=None, help="The new key's id (default: k1, k2, ...).")
def journal_key_command(file: str, key_id: str | None) -> None:
    """Create the key file FILE (mode 0600) with one new random key, or add a new key to
    it and make that key the one that writes: old records stay readable with the old
    keys; `actorflow journal copy` re-encrypts a journal under the new one."""
    if os.path.exists(file):
        try:
            load_keyring(file)  # refuses a world-readable or malformed file
            with open(file, "rb") as opened:
                doc = json.loads(opened.read())
        except (OSError, ValueError, EncryptionError) as exc:
            raise click.ClickException(str(exc)) from None
        keys = {name: _b64(text) for name, text in doc["keys"].items()}
        digest_key = _b64(doc["digest_key"])
    else:
        keys, digest_key = {}, secrets.token_bytes(32)
    if key_id is None:
        key_id = next(f"k{n}" for n in range(1, len(keys) + 2) if f"k{n}" not in keys)
    if key_id in keys:
        raise click.ClickException(f"{file} already holds a key {key_id!r}; choose another --id")
    keys[key_id] = secrets.token_bytes(32)
    text = keyring_to_json(keys, key_id, digest_key)
    try:
        keyring_from_json(json.loads(text))  # a usable id, before anything is written
    except EncryptionError as exc:
        raise click.ClickException(str(exc)) from None
    temporary = f"{file}.{secrets.token_hex(4)}.tmp"
    descriptor = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR
    )
    with os.fdopen(descriptor, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, file)
    click.echo(f"{file}: key {key_id!r} added and now writes ({len(keys)} key(s) in all)")


def _b64(text: str) -> bytes:
    return base64.b64decode(text)
