"""`FaultyStore`: a real store with journal failures injected where a test says; and
`DamagingStore`: a real store whose next record on a stream is damaged in the file.

Not a mock: every call goes to the real store underneath (a `SqliteStore` on a file), except
that the appends a test picks fail, either before anything is written (``refuse``: the
disk was full, the store busy) or after the write committed (``lose_ack``: the write
happened but the caller heard an error, as when a connection drops during COMMIT).
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Literal

import anyio.to_thread

from actorflow._events import ACTOR_CODEC
from journal import Appended, SqliteStore, StorageError, Store, StreamAppend

Mode = Literal["refuse", "lose_ack"]
#: Decides, for each append (its parts and its number from 0), whether it fails and how.
Rule = Callable[[Sequence[StreamAppend], int], Mode | None]


@dataclasses.dataclass
class Fault:
    """One injected failure: which append, how, and what it held."""

    index: int
    mode: Mode
    streams: tuple[str, ...]
    records: list[Any]


class FaultyStore:
    """Delegates everything to ``inner``; `append_many` (and `append`) fail as ``rule`` says."""

    def __init__(self, inner: Store, rule: Rule) -> None:
        self.inner = inner
        self.rule = rule
        self.appends = 0
        self.faults: list[Fault] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append_many(self, appends: Sequence[StreamAppend]) -> list[Appended]:
        index = self.appends
        self.appends += 1
        mode = self.rule(appends, index)
        if mode is None:
            return await self.inner.append_many(appends)
        fault = Fault(index, mode, tuple(p.stream for p in appends), actor_entries(appends))
        self.faults.append(fault)
        if mode == "lose_ack":
            await self.inner.append_many(appends)
        raise StorageError(f"injected failure of append {index} ({mode})")

    async def append(
        self,
        stream: str,
        records: Sequence[Any],
        *,
        expected_position: int | None = None,
        epoch: int | None = None,
    ) -> Appended:
        part = StreamAppend(stream, tuple(records), expected_position, epoch)
        return (await self.append_many([part]))[0]


def actor_entries(appends: Sequence[StreamAppend]) -> list[Any]:
    """The actor-stream entries an append carries, decoded."""
    return [
        ACTOR_CODEC.decode_payload(record.type, record.data, part.stream, 0)
        for part in appends
        if part.stream.startswith("actor/")
        for record in part.records
    ]


def carrying(kind: str, *, name: str | None = None) -> Callable[[Sequence[StreamAppend]], bool]:
    """A predicate: the append journals a step of ``kind`` (and ``name``, if given)."""

    def matches(appends: Sequence[StreamAppend]) -> bool:
        return any(
            getattr(entry, "kind", None) == kind and name in (None, getattr(entry, "name", None))
            for entry in actor_entries(appends)
        )

    return matches


def first_time(
    predicate: Callable[[Sequence[StreamAppend]], bool], mode: Mode = "refuse", times: int = 1
) -> Rule:
    """A rule failing the first ``times`` appends that match ``predicate``."""
    left = [times]

    def rule(appends: Sequence[StreamAppend], index: int) -> Mode | None:
        if left[0] and predicate(appends):
            left[0] -= 1
            return mode
        return None

    return rule


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
