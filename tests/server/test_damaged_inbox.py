"""A send that was durably accepted answers 202, whatever reading the inbox afterwards
meets: the API promises that a refused request accepts nothing, so a client that retries a
5xx (or a 409) without an `Idempotency-Key` would send the message twice.

The damage is real: right after the message's record is committed, one byte of it is
flipped in the journal file (through a plain SQLite connection), so that reading the inbox
raises `CorruptionError` when the send looks at its invocation.
"""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
from collections.abc import Sequence
from typing import Any

import anyio.to_thread
import pytest

from journal import Appended, SqliteStore, StreamAppend
from tests.server.support import Api, error_of, reaches, serving

pytestmark = pytest.mark.anyio


class DamagingStore:
    """A real `SqliteStore`, except that the next record appended to ``stream`` is damaged
    in the file right after it is committed (once armed)."""

    def __init__(self, inner: SqliteStore, path: pathlib.Path, stream: str) -> None:
        self.inner = inner
        self.path = path
        self.stream = stream
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append_many(self, appends: Sequence[StreamAppend]) -> list[Appended]:
        done = await self.inner.append_many(appends)
        for appended in done:
            if self.armed and appended.stream == self.stream:
                self.armed = False
                await anyio.to_thread.run_sync(self._flip, appended.last_position)
        return done

    def _flip(self, position: int) -> None:
        with contextlib.closing(sqlite3.connect(self.path, isolation_level=None)) as conn:
            rowid, data = conn.execute(
                "SELECT r.global_position, r.data FROM records r JOIN streams s "
                "ON s.id = r.stream_id WHERE s.name = ? AND r.position = ?",
                (self.stream, position),
            ).fetchone()
            damaged = bytearray(data)
            damaged[-1] ^= 0xFF
            conn.execute(
                "UPDATE records SET data = ? WHERE global_position = ?", (bytes(damaged), rowid)
            )


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"headers": {"Idempotency-Key": "once"}}, id="idempotency-key"),
        pytest.param({"params": {"wait": "2"}}, id="wait"),
    ],
)
async def test_a_send_accepted_before_its_record_reads_as_damaged_answers_202(
    tmp_path: pathlib.Path, options: dict[str, Any]
) -> None:
    path = tmp_path / "journal.db"
    store = DamagingStore(await SqliteStore.open(path), path, "inbox/Greeter/g")
    async with serving(store) as api:  # type: ignore[arg-type]
        first = await api.send("Greeter/g", "greet", {"name": "a"}, params={"wait": "2"})
        assert first.status_code == 200, first.text
        store.armed = True

        sent = await api.send("Greeter/g", "greet", {"name": "b"}, **options)

        assert sent.status_code == 202, sent.text
        body = sent.json()
        assert (body["state"], body["actor"]) == ("queued", "Greeter/g")
        tail = body["invocation"].rpartition("#")[2]
        assert sent.headers["Location"] == f"/v1/actors/Greeter/g/invocations/{tail}"
        inbox = [r async for r in store.salvage("inbox/Greeter/g")]
        assert [(r.position, r.damage) for r in inbox] == [(1, None), (2, "checksum mismatch")]
        assert store.armed is False

        await reaches(api, "Greeter/g", "corrupt")  # the actor's own read found the damage
        await refuses_without_taking(api, store)


async def refuses_without_taking(api: Api, store: DamagingStore) -> None:
    """Every later send is refused (409 `actor_corrupt`) and accepts nothing."""
    for options in ({}, {"headers": {"Idempotency-Key": "again"}}, {"params": {"wait": "1"}}):
        refused = await api.send("Greeter/g", "greet", {"name": "c"}, **options)
        status, kind, message = error_of(refused)
        assert (status, kind) == (409, "actor_corrupt"), refused.text
        assert "stream 'inbox/Greeter/g' position 2 (checksum mismatch)" in message
    assert await store.last_position("inbox/Greeter/g") == 2
