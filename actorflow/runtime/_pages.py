"""Listings a page at a time: an actor's journal, its invocations, and the actors.

Each page is bounded: at most ``limit`` items (`MAX_PAGE` at most) and, for the journal
and the invocations, about `PAGE_BYTES` of journal payload (always at least one item), and
it costs reads for what it holds, never for everything before it. A page ends with an
opaque cursor that asks for the next one: a short base64url string this module alone
reads, refused with `CursorError` when it is anything else.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec

from actorflow._errors import InvalidMessageError
from actorflow._events import (
    ACTOR_CODEC,
    INBOX_CODEC,
    OUTCOME_CODEC,
    InvocationEnded,
    actor_stream,
    inbox_stream,
    outcomes_stream,
)
from actorflow.runtime import _inspect
from actorflow.runtime._inspect import Decode, JournalView
from actorflow.runtime._status import ActorStatus, InvocationStatus, JournalEntry, readable
from journal import Codec, Store, StreamInfo

#: Items per page unless asked otherwise.
DEFAULT_PAGE = 100
#: Most items a page holds (a larger limit is taken as this).
MAX_PAGE = 1000
#: Journal payload bytes a page of the journal or the invocations reads, about (a page
#: always holds at least one item, however large).
PAGE_BYTES = 1024 * 1024
#: Outcomes read per hop while paging back through them: few, as each may carry the
#: journaled steps of a failed invocation.
OUTCOMES_PER_READ = 16
#: Actors examined per page, at most, when a state filter skips most of them.
MAX_EXAMINED = 2 * MAX_PAGE
#: Actors listed per read while examining them.
EXAMINED_PER_READ = 100


class CursorError(InvalidMessageError):
    """A cursor that this listing did not give out."""


# -- cursors ------------------------------------------------------------------------------


def write_cursor(kind: str, *fields: str | int) -> str:
    """An opaque cursor: ``kind`` and ``fields``, as base64url (no padding)."""
    data = msgspec.msgpack.encode([kind, *fields])
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def read_cursor(cursor: str | None, kind: str, shape: tuple[type, ...]) -> list[Any] | None:
    """The fields of a cursor of ``kind`` (None for none: the first page)."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        fields = msgspec.msgpack.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        fields = None
    if (
        not isinstance(fields, list)
        or fields[:1] != [kind]
        or len(fields) != len(shape) + 1
        or not all(type(f) is t for f, t in zip(fields[1:], shape, strict=True))
    ):
        raise foreign_cursor(cursor)
    return fields[1:]


def foreign_cursor(cursor: str) -> CursorError:
    """The error for a cursor this listing did not give out."""
    return CursorError(
        f"cursor {cursor[:80]!r} is not one this listing gave out; pass the next cursor "
        f"of the previous page unchanged (over HTTP, the Link header's next URL), or none "
        f"for the first page"
    )


def check_limit(limit: object) -> int:
    """``limit`` as a page size: an integer of at least 1, taken as `MAX_PAGE` if larger."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidMessageError(
            f"a page's limit is a whole number from 1 to {MAX_PAGE}, got {limit!r}"
        )
    return min(limit, MAX_PAGE)


# -- the journal --------------------------------------------------------------------------

#: The actor's streams in the order the journal lists them: code, stream, codec, label.
_JOURNAL_STREAMS: tuple[
    tuple[str, Callable[[str], str], Codec[Any], Literal["actor", "inbox"]], ...
] = (
    ("a", actor_stream, ACTOR_CODEC, "actor"),
    ("i", inbox_stream, INBOX_CODEC, "inbox"),
)


async def journal_page(
    store: Store, actor_id: str, cursor: str | None, limit: int
) -> tuple[list[JournalEntry], str | None]:
    """A page of the actor's journal: its actor stream, then its inbox, in order."""
    code, position = read_cursor(cursor, "journal", (str, int)) or ("a", 1)
    which = next((n for n, item in enumerate(_JOURNAL_STREAMS) if item[0] == code), None)
    if which is None or position < 1:
        raise foreign_cursor(cursor or "")
    entries: list[JournalEntry] = []
    size = 0
    for code, stream_of, codec, label in _JOURNAL_STREAMS[which:]:
        stream = stream_of(actor_id)
        async for batch in store.read_batches(stream, position, limit=limit - len(entries)):
            for record in batch:
                data = readable(codec.decode(record))
                at = float(data.pop("at", 0.0) or 0.0)
                entries.append(JournalEntry(label, record.position, record.type, at, data))
                size += len(record.data)
                position = record.position + 1
                if len(entries) == limit or size >= PAGE_BYTES:
                    more = await _journal_continues(store, actor_id, code, position)
                    return entries, write_cursor("journal", code, position) if more else None
        position = 1
    return entries, None


async def _journal_continues(store: Store, actor_id: str, code: str, position: int) -> bool:
    """Whether the journal holds records from ``position`` of stream ``code`` on."""
    if code == "a" and await store.last_position(inbox_stream(actor_id)):
        return True
    stream = actor_stream(actor_id) if code == "a" else inbox_stream(actor_id)
    return await store.last_position(stream) >= position


# -- invocations --------------------------------------------------------------------------


async def invocations_page(
    store: Store, actor_id: str, cursor: str | None, limit: int, decode: Decode
) -> tuple[list[InvocationStatus], str | None]:
    """A page of the actor's invocations: the running one and the queued ones in order
    (read afresh for each page), then the ended ones, the latest first."""
    phase, position = read_cursor(cursor, "invocations", (str, int)) or ("q", 0)
    if phase not in ("q", "e") or position < 0:
        raise foreign_cursor(cursor or "")
    listed: list[InvocationStatus] = []
    found = await _inspect.view(store, actor_id)
    if phase == "q":
        listed, after = _in_progress(actor_id, found, position, limit, first=cursor is None)
        if after is not None:
            return listed, write_cursor("invocations", "q", after)
        position = await store.last_position(outcomes_stream(actor_id))
    ended = _EndedPages(store, actor_id, found, decode)
    seen = {status.invocation for status in listed}
    position = await ended.fill(listed, seen, position, limit)
    return listed, write_cursor("invocations", "e", position) if position else None


def _in_progress(
    actor_id: str, found: JournalView, after: int, limit: int, *, first: bool
) -> tuple[list[InvocationStatus], int | None]:
    """The running invocation (on the ``first`` page) and the queued ones whose inbox
    positions come after ``after``; and where the next page resumes, if it is still among
    them."""
    listed = []
    if first and found.unfinished is not None:
        started = found.unfinished
        listed.append(
            InvocationStatus(started.invocation, actor_id, "running", handler=started.handler)
        )
    for message in found.queued:
        if message.position <= after:
            continue
        if len(listed) == limit:
            return listed, after
        cancelled = message.invocation in found.cancels
        listed.append(
            _inspect.queued_status(actor_id, message.invocation, message.handler, cancelled)
        )
        after = message.position
    return listed, None


@dataclasses.dataclass
class _EndedPages:
    """Pages back through an actor's outcomes, each invocation at its latest outcome."""

    store: Store
    actor_id: str
    found: JournalView
    decode: Decode
    _unindexed: dict[str, tuple[int, InvocationEnded]] | None = None

    async def fill(
        self, listed: list[InvocationStatus], seen: set[str], position: int, limit: int
    ) -> int:
        """Add ended invocations to ``listed``, from outcome ``position`` back, until it
        holds ``limit`` or about `PAGE_BYTES` were read; return the outcome position the
        next page starts from (0: none left)."""
        size = 0
        in_progress = self.found.invocations_in_progress()
        while position and len(listed) < limit and size < PAGE_BYTES:
            count = min(OUTCOMES_PER_READ, position, limit - len(listed))
            records = []
            stream = outcomes_stream(self.actor_id)
            async for batch in self.store.read_batches(stream, position - count + 1, limit=count):
                records += batch
            position -= count
            for record in reversed(records):
                entry = OUTCOME_CODEC.decode(record)
                size += len(record.data)
                if entry.invocation not in seen and await self._latest(entry, record.position):
                    if entry.seed and entry.invocation in in_progress:
                        continue  # retried: listed as running or queued
                    seen.add(entry.invocation)
                    listed.append(_inspect.outcome_status(self.actor_id, entry, self.decode))
                    if len(listed) == limit or size >= PAGE_BYTES:
                        return record.position - 1
        return position

    async def _latest(self, entry: InvocationEnded, position: int) -> bool:
        """Whether the outcome at ``position`` is its invocation's latest: only one that
        may be retried (it has a seed) may have a later one."""
        if not entry.seed:
            return True
        index = await _inspect.latest_index(self.store, entry.invocation)
        if index is not None:
            return index.position == position
        if self._unindexed is None:
            last = await self.store.last_position(outcomes_stream(self.actor_id))
            through = await _inspect.unindexed_through(self.store, self.actor_id, last)
            self._unindexed = await _inspect.unindexed_outcomes(self.store, self.actor_id, through)
        latest = self._unindexed.get(entry.invocation)
        return latest is None or latest[0] == position


# -- actors -------------------------------------------------------------------------------

#: What an actor in memory reports, if it is (None: read its journal).
InMemory = Callable[[str], ActorStatus | None]


async def actors_page(
    store: Store,
    prefix: str,
    hosted: Callable[[str], bool],
    in_memory: InMemory,
    wanted: Callable[[ActorStatus], bool],
    cursor: str | None,
    limit: int,
) -> tuple[list[ActorStatus], str | None]:
    """A page of the actors whose ids start with ``prefix`` (``Type/`` or nothing), in id
    order, of hosted types, that ``wanted`` keeps; examining at most `MAX_EXAMINED`
    actors, so a filter that keeps few still answers with a cursor to go on from."""
    (after,) = read_cursor(cursor, "actors", (str,)) or ("",)
    listed: list[ActorStatus] = []
    examined = 0
    while examined < MAX_EXAMINED:
        count = min(max(limit, EXAMINED_PER_READ), MAX_EXAMINED - examined)
        inboxes = await store.list_stream_infos(
            f"inbox/{prefix}", after=f"inbox/{after}", limit=count
        )
        if not inboxes:
            return listed, None
        actors = await _actor_infos(store, prefix, after, len(inboxes))
        for n, inbox in enumerate(inboxes, 1):
            examined += 1
            after = inbox.stream.removeprefix("inbox/")
            if not hosted(after):
                continue
            status = in_memory(after) or await _journal_status(store, after, actors, inbox)
            if wanted(status):
                listed.append(status)
                if len(listed) == limit:
                    more = n < len(inboxes) or len(inboxes) == count
                    return listed, write_cursor("actors", after) if more else None
        if len(inboxes) < count:
            return listed, None
    return listed, write_cursor("actors", after)


async def _actor_infos(store: Store, prefix: str, after: str, count: int) -> dict[str, StreamInfo]:
    """The actor streams of the next ``count`` actors after ``after`` (those of them that
    have one: every actor with an actor stream has an inbox)."""
    page = await store.list_stream_infos(f"actor/{prefix}", after=f"actor/{after}", limit=count)
    return {info.stream.removeprefix("actor/"): info for info in page}


async def _journal_status(
    store: Store, actor_id: str, actors: dict[str, StreamInfo], inbox: StreamInfo
) -> ActorStatus:
    """The status of an actor not in memory, from its journal (as `Runtime.status` says)."""
    found = await _inspect.quick_view(store, actor_id, actors.get(actor_id), inbox)
    state = "pending" if found.has_work else "idle"
    return ActorStatus(
        actor_id, state, None, found.turns, None, found.attention, found.version or None
    )


async def every_page(
    fetch: Callable[[str | None], Awaitable[tuple[list[Any], str | None]]],
) -> list[Any]:
    """Every item of a listing, fetching page after page."""
    items: list[Any] = []
    cursor = None
    while True:
        page, cursor = await fetch(cursor)
        items += page
        if cursor is None:
            return items
