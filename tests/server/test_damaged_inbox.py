"""A send that was durably accepted answers 202, whatever reading the inbox afterwards
meets: the API promises that a refused request accepts nothing, so a client that retries a
5xx (or a 409) without an `Idempotency-Key` would send the message twice.

The damage is real: right after the message's record is committed, one byte of it is
flipped in the journal file (through a plain SQLite connection), so that reading the inbox
raises `CorruptionError` when the send looks at its invocation.
"""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from journal import SqliteStore
from tests.runtime.faults import DamagingStore
from tests.server.support import Api, error_of, reaches, serving

pytestmark = pytest.mark.anyio


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
