"""`actorflow serve --codec-key-file` (docs/encryption.md): a canary sent through the HTTP API
of a real server is in neither the SQLite files nor the logs; it reads back with the key
file, across a restart and a key rotation; without the key file, or with a wrong one, the
server refuses to start and says which key it needs."""

from __future__ import annotations

import json
import os
import pathlib
import secrets

import httpx

from tests.server.processes import cli, served

APP = "tests.server.crypt_app"


def _key_file(path: pathlib.Path, *more: str) -> pathlib.Path:
    done = cli("journal", "key", str(path), *more)
    assert done.returncode == 0, done.stderr
    return path


def _note(url: str, text: str) -> dict[str, object]:
    response = httpx.post(
        f"{url}/v1/actors/Notebook/n/messages/note?wait=20", json={"text": text}, timeout=30
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _notes(url: str) -> list[str]:
    response = httpx.get(f"{url}/v1/actors/Notebook/n/query/notes", timeout=30)
    assert response.status_code == 200, response.text
    result: list[str] = response.json()["result"]
    return result


def _files_hold(directory: pathlib.Path, needle: bytes) -> list[str]:
    return [p.name for p in sorted(directory.iterdir()) if p.is_file() and needle in p.read_bytes()]


def test_a_canary_is_stored_sealed_and_reads_back_only_with_the_key(
    tmp_path: pathlib.Path,
) -> None:
    keys = _key_file(tmp_path / "keys.json")
    canary = f"canary-{secrets.token_hex(8)}"
    large = canary + "x" * 200_000  # a large message argument and state part
    with served(tmp_path, "--codec-key-file", str(keys), app=APP) as server:
        assert _note(server.url, canary)["result"] == f"noted: {canary}"
        assert _note(server.url, large)["result"] == f"noted: {large}"
        assert _notes(server.url) == [canary, large]
        wal = [p.name for p in tmp_path.iterdir() if p.name.endswith(("-wal", "-shm"))]
        assert wal, "the server's WAL files are checked while it runs"
        assert _files_hold(tmp_path, canary.encode()) == []  # db, -wal, -shm, logs
        assert server.stop() == 0
    assert _files_hold(tmp_path, canary.encode()) == []
    assert (tmp_path / "journal.db").stat().st_size > 0

    # Without the key file, or with another one: a clear refusal naming the key, not garbage.
    refused = cli("serve", APP, "--journal", str(tmp_path / "journal.db"), "--port", "0")
    assert refused.returncode != 0
    assert "is encrypted (its first record is sealed with key 'k1')" in refused.stderr
    other = _key_file(tmp_path / "other.json")
    refused = cli(
        "serve", APP, "--journal", str(tmp_path / "journal.db"), "--port", "0",
        "--codec-key-file", str(other),
    )  # fmt: skip
    assert refused.returncode != 0
    assert "sealed with key 'k1', and the key file's key 'k1' is another key" in refused.stderr
    assert canary not in refused.stderr

    # The offline tools: verify checks the sealed journal without a key; inspect and stats
    # read its payloads only through the key file, and say which key they need without it.
    db = str(tmp_path / "journal.db")
    assert cli("journal", "verify", "--journal", db).returncode == 0
    for command in (["inspect", "Notebook/n"], ["stats"]):
        keyless = cli("journal", *command, "--journal", db)
        assert keyless.returncode == 2, keyless.stderr
        assert "is encrypted (its first record is sealed with key 'k1')" in keyless.stderr
        wrong = cli("journal", *command, "--journal", db, "--codec-key-file", str(other))
        assert wrong.returncode == 2, wrong.stderr
        assert canary not in wrong.stdout + wrong.stderr
    shown = cli("journal", "inspect", "Notebook/n", "--journal", db, "--codec-key-file", str(keys))
    assert shown.returncode == 0, shown.stderr
    assert canary in shown.stdout
    counted = cli("journal", "stats", "--journal", db, "--codec-key-file", str(keys))
    assert counted.returncode == 0, counted.stderr

    # Rotation: a second key writes, the first still reads; a copy re-encrypts everything
    # under the second, which then reads alone.
    _key_file(keys, "--id", "k2")
    with served(tmp_path, "--codec-key-file", str(keys), app=APP) as server:
        assert _notes(server.url) == [canary, large]
        _note(server.url, "after rotation")
        assert server.stop() == 0
    copied = tmp_path / "rekeyed"
    copied.mkdir()
    done = cli(
        "journal", "copy", str(tmp_path / "journal.db"), str(copied / "journal.db"),
        "--codec-key-file", str(keys),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    only_k2 = tmp_path / "only-k2.json"
    doc = json.loads(keys.read_text())
    del doc["keys"]["k1"]
    only_k2.write_text(json.dumps(doc))
    os.chmod(only_k2, 0o600)
    with served(copied, "--codec-key-file", str(only_k2), app=APP) as server:
        assert _notes(server.url) == [canary, large, "after rotation"]
        assert server.stop() == 0
    assert _files_hold(copied, canary.encode()) == []
    # The journal before the copy still needs k1, which that file no longer holds.
    refused = cli(
        "serve", APP, "--journal", str(tmp_path / "journal.db"), "--port", "0",
        "--codec-key-file", str(only_k2),
    )  # fmt: skip
    assert refused.returncode != 0
    assert "sealed with key 'k1'" in refused.stderr
    assert "holds only k2" in refused.stderr


def test_a_key_file_others_can_read_is_refused(tmp_path: pathlib.Path) -> None:
    keys = _key_file(tmp_path / "keys.json")
    os.chmod(keys, 0o644)
    refused = cli(
        "serve", APP, "--journal", str(tmp_path / "journal.db"), "--port", "0",
        "--codec-key-file", str(keys),
    )  # fmt: skip
    assert refused.returncode != 0
    assert "readable or writable by every user" in refused.stderr, refused.stderr
    assert not (tmp_path / "journal.db").exists()
