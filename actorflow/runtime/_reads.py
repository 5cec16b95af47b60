"""`RuntimeReads`: the runtime's read side, which looks and changes nothing.

An actor's status, its invocations, its journal, and the list of actors, each answered from
memory when the actor is in memory and from the journal otherwise (`_inspect` reads one
actor's journal, `_pages` cuts listings into pages); and the lookups that check a name
before anything is read or written (actor types, handlers, invocation ids). `Runtime`
inherits it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import msgspec

from actorflow._actor import Actor, HandlerInfo, check_key
from actorflow._budget import BudgetStatus, ledger_stream
from actorflow._context import ActorRef
from actorflow._errors import InvalidMessageError, UnknownActorError, UnknownHandlerError
from actorflow._events import Reply
from actorflow._values import decoder_for
from actorflow.runtime import _budgets, _inspect, _pages, _pinned, _quarantine, _query
from actorflow.runtime._host import ActorHost
from actorflow.runtime._lookups import Lookups
from actorflow.runtime._pages import DEFAULT_PAGE
from actorflow.runtime._query import QueryAnswer
from actorflow.runtime._status import (
    ACTOR_STATES,
    ActorStatus,
    InvocationStatus,
    JournalEntry,
    Page,
)
from journal import Store, StreamInfo

if TYPE_CHECKING:
    from actorflow.runtime._runtime import Runtime

#: The states `RuntimeReads.status` reports for an actor that is not in memory; the others
#: only an actor in memory can be in.
JOURNAL_STATES = ("idle", "pending")


class RuntimeReads:
    """Status, invocations, journal pages and listings of a `Runtime`'s actors."""

    store: Store
    _types: dict[str, type[Actor]]
    _hosts: dict[str, ActorHost]
    _group: Any

    async def stream_infos(self, streams: Sequence[str]) -> list[StreamInfo]:
        """`Store.stream_infos` of ``streams``: while the runtime runs, read together with
        those of every actor being taken on at the same time (one query per round,
        `Lookups`); alone in a runtime never entered (a dry run's)."""
        if self._group is None:
            return await self.store.stream_infos(streams)
        found: list[StreamInfo] = await self._stream_lookups.get_many(streams)
        return found

    @functools.cached_property
    def _stream_lookups(self) -> Lookups:
        async def infos(names: Sequence[str]) -> dict[str, StreamInfo]:
            return {info.stream: info for info in await self.store.stream_infos(names)}

        def start_soon(fn: Any) -> None:
            self._group.start_soon(fn, name="stream lookups")

        return Lookups(infos, start_soon)

    # -- names ----------------------------------------------------------------------------

    def _unknown_type(self, type_name: str) -> str:
        known = ", ".join(sorted(self._types)) or "none"
        return f"unknown actor type {type_name!r}; this runtime hosts: {known}"

    def handler_info(self, type_name: str, handler: str) -> HandlerInfo:
        """A hosted handler's checked definition (or a clear error)."""
        cls = self._types.get(type_name)
        if cls is None:
            raise UnknownActorError(self._unknown_type(type_name))
        info = cls.__actorflow_handlers__.get(handler)
        if info is None:
            known = ", ".join(sorted(cls.__actorflow_handlers__))
            raise UnknownHandlerError(
                f"actor type {type_name!r} has no handler {handler!r}; its handlers: {known}"
            )
        return info

    def _actor_of(self, invocation: str) -> str:
        actor_id, sep, _ = invocation.rpartition("#")
        type_name, slash, key = actor_id.partition("/")
        if not (sep and slash):
            raise InvalidMessageError(
                f"{invocation!r} is not an invocation id (they look like Type/key#hex)"
            )
        if type_name not in self._types:
            raise UnknownActorError(f"invocation {invocation!r}: {self._unknown_type(type_name)}")
        check_key(key)
        return actor_id

    # -- reads ----------------------------------------------------------------------------

    async def budget(self, invocation: str) -> BudgetStatus | None:
        """The budget of the tree rooted at ``invocation``: its limits, what is spent, what
        steps in flight hold and what remains; None if nothing was ever reserved from it
        (no budget, or none of its steps declared a consumption yet)."""
        return await _budgets.status(self.store, ledger_stream(invocation))

    async def invocation(self, invocation: str) -> InvocationStatus | None:
        """Where an invocation is, and its result or error once it ended; None if unknown.

        A queued invocation whose cancellation was requested is ``cancelled`` at once.
        """
        actor_id = self._actor_of(invocation)
        host = self._hosts.get(actor_id)
        if host is not None and host.state == "corrupt":  # its journal cannot be read
            raise _quarantine.refusal(host)
        if host is not None and host.activated.is_set():
            known = self._in_memory(host, invocation)
            if known is None and host.notified():  # just sent, not read by the actor yet
                await host.read_new()
                known = self._in_memory(host, invocation)
            if known is not None:
                return known
        return await self._invocation_from_journal(invocation, actor_id)

    def _in_memory(self, host: ActorHost, invocation: str) -> InvocationStatus | None:
        """What an active actor's memory says of ``invocation`` (None: ask the journal)."""
        if host.current == invocation:
            return InvocationStatus(invocation, host.actor_id, "running")
        for queued in host.queued_messages():
            if queued.invocation == invocation:
                cancelled = invocation in host.cancels
                return _inspect.queued_status(host.actor_id, invocation, queued.handler, cancelled)
        reply = host.results.get(invocation)
        return None if reply is None else self._ended(invocation, host.actor_id, reply)

    def _ended(self, invocation: str, actor_id: str, reply: Reply) -> InvocationStatus:
        return _inspect.ended_status(invocation, actor_id, reply, self._decode_result)

    def _decode_result(self, actor_id: str, reply: Reply) -> Any:
        type_name = actor_id.partition("/")[0]
        kind = self.handler_info(type_name, reply.handler).result_type if reply.handler else Any
        return decoder_for(kind).decode(reply.result)

    async def _invocation_from_journal(
        self, invocation: str, actor_id: str
    ) -> InvocationStatus | None:
        return await _inspect.invocation_status(
            self.store, invocation, actor_id, self._decode_result
        )

    async def invocations(self, target: ActorRef) -> list[InvocationStatus]:
        """An actor's invocations: the running one, the queued ones in order, then the
        ended ones, the latest first (every page of `invocations_page`)."""

        async def fetch(cursor: str | None) -> tuple[list[InvocationStatus], str | None]:
            page = await self.invocations_page(target, cursor=cursor, limit=_pages.MAX_PAGE)
            return page.items, page.next

        found: list[InvocationStatus] = await _pages.every_page(fetch)
        return found

    async def invocations_page(
        self, target: ActorRef, *, cursor: str | None = None, limit: int = DEFAULT_PAGE
    ) -> Page[InvocationStatus]:
        """A page of `invocations`: at most ``limit`` (1000 at most) and about a MiB of
        results; ``next`` asks for the next page. Running and queued invocations are read
        afresh for each page, ended ones from the latest back, so an invocation that ends
        while you page may be listed twice, its newer state last."""
        self._check_ref(target)
        limit = _pages.check_limit(limit)
        items, after = await _pages.invocations_page(
            self.store, target.id, cursor, limit, self._decode_result
        )
        return Page(items, after)

    def _check_ref(self, target: ActorRef) -> None:
        check_key(target.key)
        if target.type_name not in self._types:
            raise UnknownActorError(self._unknown_type(target.type_name))

    async def list_actors(
        self, type_name: str | None = None, state: str | None = None
    ) -> list[ActorStatus]:
        """Every actor that has an inbox (of ``type_name``, in ``state`` if given): every
        page of `actors_page`."""

        async def fetch(cursor: str | None) -> tuple[list[ActorStatus], str | None]:
            page = await self.actors_page(type_name, state, cursor=cursor, limit=_pages.MAX_PAGE)
            return page.items, page.next

        found: list[ActorStatus] = await _pages.every_page(fetch)
        return found

    async def actors_page(
        self,
        type_name: str | None = None,
        state: str | None = None,
        *,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> Page[ActorStatus]:
        """A page of the actors that have an inbox (of ``type_name``, in ``state`` if
        given), in id order: at most ``limit`` (1000 at most); ``next`` asks for the next
        page. An actor in memory answers from memory, any other with about one journal
        read. A filtered page may hold fewer (even none) and still have a next page."""
        if state is not None and state not in ACTOR_STATES:
            raise InvalidMessageError(
                f"unknown actor state {state!r}; the states are: {', '.join(ACTOR_STATES)}"
            )
        if type_name is not None and type_name not in self._types:
            raise UnknownActorError(self._unknown_type(type_name))
        limit = _pages.check_limit(limit)
        prefix = "" if type_name is None else f"{type_name}/"
        if state is not None and state not in JOURNAL_STATES:
            return self._hosted_page(prefix, state, cursor, limit)

        def hosted(actor_id: str) -> bool:
            return actor_id.partition("/")[0] in self._types

        def wanted(status: ActorStatus) -> bool:
            return state is None or status.state == state

        items, after = await _pages.actors_page(
            self.store, prefix, hosted, self._status_in_memory, wanted, cursor, limit
        )
        return Page(await self._owned(items), after)

    async def _owned(self, statuses: list[ActorStatus]) -> list[ActorStatus]:
        """``statuses`` with the workers hosting them, on a journal shared by workers."""
        worker = getattr(self, "worker", None)
        if worker is None or not statuses:
            return statuses
        owners = await worker.owners([status.actor for status in statuses])
        return [msgspec.structs.replace(s, owner=owners.get(s.actor)) for s in statuses]

    def _hosted_page(
        self, prefix: str, state: str, cursor: str | None, limit: int
    ) -> Page[ActorStatus]:
        """A page of the actors in ``state``, one only an actor in memory can be in."""
        (after,) = _pages.read_cursor(cursor, "actors", (str,)) or ("",)
        found = sorted(
            actor_id
            for actor_id, host in self._hosts.items()
            if actor_id > after
            and actor_id.startswith(prefix)
            and host.activated.is_set()
            and host.status_state() == state
        )
        items = [self._status_in_memory(actor_id) for actor_id in found[:limit]]
        more = len(found) > limit
        worker = getattr(self, "worker", None)
        owner = worker.id if worker is not None else None
        return Page(
            [msgspec.structs.replace(item, owner=owner) for item in items if item is not None],
            _pages.write_cursor("actors", found[limit - 1]) if more else None,
        )

    def _status_in_memory(self, actor_id: str) -> ActorStatus | None:
        """The status of an actor in memory (None if it is not, or still activating)."""
        host = self._hosts.get(actor_id)
        if host is not None and host.damage is not None:
            return _quarantine.status(host)
        if host is None or not host.activated.is_set():
            return None
        error = host.stuck or host.failure
        return ActorStatus(
            actor_id,
            host.status_state(),
            host.current,
            host.turns,
            str(error) if error is not None else None,
            list(host.attention),
            host.version or None,
            _pinned.diverged_at(host),
        )

    async def status(self, target: ActorRef) -> ActorStatus:
        """What the actor is doing (see `ActorStatus`); the same in memory or not."""
        known = self._status_in_memory(target.id)
        if known is not None:
            return (await self._owned([known]))[0]
        found = await _inspect.view(self.store, target.id)
        state = "pending" if found.has_work else "idle"
        status = ActorStatus(
            target.id, state, None, found.turns, None, found.attention, found.version or None
        )
        return (await self._owned([status]))[0]

    async def query(
        self,
        target: ActorRef,
        name: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> QueryAnswer:
        """Run the `@query` method ``name`` of ``target`` on a copy of its state as of its
        last step boundary: without waiting for a running turn, journaling nothing (see
        docs/actors.md, "Queries"). The answer says which state it read."""
        runtime = cast("Runtime", self)  # RuntimeReads is a part of a Runtime
        arguments = _query.encode_arguments(runtime, target, name, args, kwargs or {})
        return await _query.answer(runtime, target, name, arguments)

    async def journal(self, target: ActorRef) -> list[JournalEntry]:
        """The actor's journal and inbox as readable entries, in order (every page of
        `journal_page`)."""

        async def fetch(cursor: str | None) -> tuple[list[JournalEntry], str | None]:
            page = await self.journal_page(target, cursor=cursor, limit=_pages.MAX_PAGE)
            return page.items, page.next

        found: list[JournalEntry] = await _pages.every_page(fetch)
        return found

    async def journal_page(
        self, target: ActorRef, *, cursor: str | None = None, limit: int = DEFAULT_PAGE
    ) -> Page[JournalEntry]:
        """A page of `journal`: at most ``limit`` entries (1000 at most) and about a MiB of
        journal payload (at least one entry); ``next`` asks for the next page."""
        self._check_ref(target)
        limit = _pages.check_limit(limit)
        items, after = await _pages.journal_page(self.store, target.id, cursor, limit)
        return Page(items, after)
