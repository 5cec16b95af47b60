"""A new server waits for the journal while the previous process still holds it."""

from __future__ import annotations

import pathlib
import re

import anyio
import pytest

from actorflow.server import ServeConfig, ServeError
from actorflow.server._serve import _open_journal
from journal import SqliteStore

pytestmark = pytest.mark.anyio


async def test_a_held_journal_is_waited_for_until_it_is_released(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "journal.db"
    config = ServeConfig("unused", journal=str(path), lock_wait=10.0)
    previous = await SqliteStore.open(path)
    opened: list[SqliteStore] = []

    async def next_server() -> None:
        opened.append(await _open_journal(config))

    async with anyio.create_task_group() as group:
        group.start_soon(next_server)
        for _ in range(20):  # it keeps waiting while the journal is held
            await anyio.sleep(0.01)
        assert opened == []
        await previous.close()
    assert len(opened) == 1
    await opened[0].close()


async def test_a_journal_held_past_the_wait_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "journal.db"
    previous = await SqliteStore.open(path)
    try:
        refused = re.escape("still held by another process after 0.2 s")
        with pytest.raises(ServeError, match=refused):
            await _open_journal(ServeConfig("unused", journal=str(path), lock_wait=0.2))
    finally:
        await previous.close()
