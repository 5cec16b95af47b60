"""The app the streaming tests serve: an actor whose answer streams word by word.

On its first run in a journal directory (no marker file yet), the stream stops for good
halfway, as a model's connection hanging when the server is killed; every later run
streams the whole answer. The marker's path comes from ``STREAM_MARKER``.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import AsyncIterator

import anyio

from actorflow import Actor, handler


def first_run() -> bool:
    """Whether no run of `words` started in this journal directory before (and mark it)."""
    marker = pathlib.Path(os.environ["STREAM_MARKER"])
    first = not marker.exists()
    marker.touch()
    return first


async def words(count: int) -> AsyncIterator[str]:
    first = first_run()
    for i in range(count):
        if first and i == count // 2:
            await anyio.sleep_forever()  # the test kills the server while it waits here
        yield f"w{i} "


class Streamer(Actor):
    @handler
    async def answer(self, count: int) -> str:
        text: str = await self.ctx.stream(words, count)
        return text.strip()


ACTORS = [Streamer]
