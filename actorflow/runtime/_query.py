"""Answering `@query` methods: an actor's state as of its last step boundary, read
without a turn, without waiting for the running one, and journaling nothing.

Which state a query reads (docs/actors.md, "Queries"):

* An actor in memory whose turn runs live: its state in memory, copied when the query
  starts. The handler is then suspended at a ``ctx`` operation (a step executing, a
  timer, ``wait_for``, a retry's backoff, a send), since handler code awaits nothing
  else: what it changed up to that operation is seen, nothing after it.
* An actor in memory between turns, or whose turn is not live (replaying after a
  restart, stuck, held, or retrying after a journal failure): the state its last
  finished turn checkpointed.
* An actor not in memory: its checkpoint, read from the journal, when nothing was
  journaled after it (it is not activated for that). Otherwise a turn of it is
  unfinished: on one process it is activated (as a message would) and answered as
  above; in a fleet, the worker that hosts it is named (`HostedElsewhere`).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec

from actorflow._actor import Actor, HandlerInfo, check_key
from actorflow._context import ActorRef, Context
from actorflow._errors import (
    HostedElsewhere,
    NoSuchActorError,
    QueryContextError,
    QueryFailed,
    UnknownActorError,
    UnknownQueryError,
)
from actorflow._events import ActorSnapshot, actor_stream, inbox_stream
from actorflow._query import QueryContext
from actorflow._values import decoder_for, encode, qualified_name
from actorflow.runtime import _quarantine
from actorflow.runtime._state_parts import StateParts

if TYPE_CHECKING:
    from actorflow.replay._turn import Turn
    from actorflow.runtime._host import ActorHost
    from actorflow.runtime._runtime import Runtime

#: Where a query's state came from: ``step``, the running turn's state at its last step
#: boundary; ``checkpoint``, the state the last finished turn checkpointed.
AsOf = Literal["step", "checkpoint"]


class QueryAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """A query's result, and which state of the actor it was computed from."""

    actor: str
    query: str
    result: Any
    #: ``step``: the running turn's state at its last step boundary (``invocation`` names
    #: the turn's invocation); ``checkpoint``: the state its last finished turn left.
    as_of: AsOf
    invocation: str | None = None


def query_info(runtime: Runtime, type_name: str, name: str) -> HandlerInfo:
    """A hosted type's checked query (or a clear error)."""
    cls = runtime.actor_types.get(type_name)
    if cls is None:
        raise UnknownActorError(runtime._unknown_type(type_name))
    info = cls.__actorflow_queries__.get(name)
    if info is None:
        known = ", ".join(sorted(cls.__actorflow_queries__)) or "none (mark methods @query)"
        raise UnknownQueryError(
            f"actor type {type_name!r} has no query {name!r}; its queries: {known}"
        )
    return info


async def answer(runtime: Runtime, target: ActorRef, name: str, arguments: bytes) -> QueryAnswer:
    """Run query ``name`` of ``target`` with ``arguments`` (MessagePack, checked by
    `encode_arguments`) on a copy of its state; see the module docstring."""
    check_key(target.key)
    info = query_info(runtime, target.type_name, name)
    cls = runtime.actor_types[target.type_name]
    state, as_of, invocation = await _state_of(runtime, cls, target.id)
    result = await _run(cls, info, target, state, arguments)
    return QueryAnswer(
        actor=target.id, query=name, result=result, as_of=as_of, invocation=invocation
    )


def encode_arguments(
    runtime: Runtime, target: ActorRef, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bytes:
    """Positional and keyword arguments of a query, checked against its signature."""
    return query_info(runtime, target.type_name, name).encode_args(target.type_name, args, kwargs)


async def _state_of(
    runtime: Runtime, cls: type[Actor], actor_id: str
) -> tuple[Any, AsOf, str | None]:
    host = runtime._hosts.get(actor_id)
    if host is None:
        current, stored = await _checkpointed(runtime, cls, actor_id)
        if current:
            return stored, "checkpoint", None
        host = runtime._hosts.get(actor_id)
        if host is None:
            if runtime.worker is not None:  # a turn runs elsewhere, or nobody hosts it
                raise await _owner_refusal(runtime, actor_id)
            host = runtime._activate(actor_id)  # as a message would: it has work
    await host.activated.wait()
    return _in_memory(host)


def _in_memory(host: ActorHost) -> tuple[Any, AsOf, str | None]:
    """The state of an actor in memory (copied, so the query cannot change it)."""
    if host.state == "corrupt":
        raise _quarantine.refusal(host)
    turn = host.turn
    if turn is not None and _live(turn):
        # Copied now, with no await since the check: the handler stays suspended where it
        # is (at a ctx operation) until the copy is made.
        return _decode(host.cls, encode(host.instance.state)), "step", turn.invocation
    return _decode(host.cls, host._state_bytes), "checkpoint", None


def _live(turn: Turn) -> bool:
    """Whether ``turn`` has caught up with its journal and was not aborted: its state in
    memory is then the one its last step boundary left (while it replays, an earlier one)."""
    recorded = turn.recorded
    if turn.failure is not None or turn.diverged is not None or recorded.end is not None:
        return False
    return not recorded.unconsumed()


async def _checkpointed(runtime: Runtime, cls: type[Actor], actor_id: str) -> tuple[bool, Any]:
    """Whether nothing was journaled after the actor's checkpoint, and then the state in
    it ((False, None): a turn is unfinished). The checkpoint is read before the stream's
    end, so if nothing follows it then, it was the latest when it was read."""
    store = runtime.store
    stream = actor_stream(actor_id)
    snapshot = await store.load_snapshot(stream)
    last = await store.last_position(stream)
    if snapshot is None and last == 0:
        if await store.last_position(inbox_stream(actor_id)) == 0:
            raise NoSuchActorError(
                f"actor {actor_id} has never been sent a message: it has no state to query "
                f"(is the key right?)"
            )
        return True, _default_state(cls)  # messages accepted, no turn journaled yet
    if snapshot is None or snapshot.position != last:
        return False, None
    checkpoint = msgspec.msgpack.decode(snapshot.data, type=ActorSnapshot)
    data = await StateParts(store, actor_id, collecting=False).restore(checkpoint)
    return True, _decode(cls, data)


async def _owner_refusal(runtime: Runtime, actor_id: str) -> HostedElsewhere:
    """Why a worker of a fleet that does not host ``actor_id`` cannot see its turn."""
    assert runtime.worker is not None
    owner = (await runtime.worker.owners([actor_id])).get(actor_id)
    return HostedElsewhere(actor_id, owner)


def _default_state(cls: type[Actor]) -> Any:
    state_type = cls.__actorflow_state__
    return state_type() if state_type is not None else None


def _decode(cls: type[Actor], data: bytes) -> Any:
    state_type = cls.__actorflow_state__
    return decoder_for(state_type).decode(data) if state_type is not None else None


async def _run(
    cls: type[Actor], info: HandlerInfo, target: ActorRef, state: Any, arguments: bytes
) -> Any:
    """Call the query on a fresh instance holding ``state``; its result, checked and
    decoded as its annotation says."""
    instance = cls()
    instance.key = target.key
    instance.state = state
    instance.ctx = cast(Context, QueryContext(target.id, info.name))
    try:
        value = info.fn(instance, **info.decode_args(arguments))
        if inspect.isawaitable(value):
            value = await value
    except QueryContextError:
        raise
    except Exception as exc:
        raise QueryFailed(target.id, info.name, qualified_name(type(exc)), str(exc)) from exc
    data = info.encode_result(target.type_name, value)
    return decoder_for(info.result_type).decode(data)
