"""A large state is checkpointed in parts, stored by reference: what a turn writes is
proportional to what changed, the state restored is always the state checkpointed, and
garbage collection keeps the parts stream bounded without deleting a live part."""

from __future__ import annotations

import pathlib
import tempfile
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from actorflow import Actor, Runtime, handler
from actorflow._events import ActorSnapshot
from actorflow._values import encode
from actorflow.runtime import _quarantine, _state_parts
from actorflow.runtime._state_parts import (
    NIL,
    PART_MAX,
    StateParts,
    split,
    state_bytes,
)
from journal import MemoryStore, NewRecord, SqliteStore, Store, StreamAppend
from tests.runtime.support import running

ACTOR = "Chat/k"
STREAM = f"actor/{ACTOR}"
PARTS = f"state/{ACTOR}"


class Message(msgspec.Struct):
    role: str
    text: str


class Chat(msgspec.Struct):
    title: str = ""
    messages: list[Message] = []
    notes: dict[str, str] = {}
    count: int = 0


class PackedChat(msgspec.Struct, array_like=True):
    """The same fields encoded as an array (an ``array_like`` state)."""

    title: str = ""
    messages: list[Message] = []
    notes: dict[str, str] = {}
    count: int = 0


# -- operations on the state -------------------------------------------------------------

SIZES = st.integers(0, 3000)
PLACES = st.floats(0, 1)
OPS = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 12), SIZES),
    st.tuples(st.just("edit"), PLACES, SIZES),
    st.tuples(st.just("insert"), PLACES, SIZES),
    st.tuples(st.just("delete"), PLACES, st.integers(1, 8)),
    st.tuples(st.just("title"), st.integers(0, 20_000), st.just(0)),
    st.tuples(st.just("note"), st.integers(0, 5), SIZES),
    st.tuples(st.just("drop_note"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("clear"), st.just(0), st.just(0)),
    st.tuples(st.just("revert"), st.integers(1, 10), st.just(0)),
    st.tuples(st.just("collect"), st.just(0), st.just(0)),
    st.tuples(st.just("restart"), st.just(0), st.just(0)),
    st.tuples(st.just("lost"), st.just(0), st.just(0)),
)


def text(serial: int, size: int) -> str:
    """``size`` characters that differ from every other serial's."""
    seed = f"<{serial}:{size}>"
    return (seed * (size // len(seed) + 1))[:size]


def change(state: Any, op: tuple[str, Any, int], serial: int) -> None:
    kind, arg, size = op
    messages = state.messages
    at = int(arg * len(messages)) if isinstance(arg, float) else 0
    if kind == "append":
        messages.extend(Message("user", text(serial + n, size)) for n in range(arg))
    elif kind == "edit" and messages:
        messages[min(at, len(messages) - 1)] = Message("tool", text(serial, size))
    elif kind == "insert":
        messages.insert(at, Message("assistant", text(serial, size)))
    elif kind == "delete":
        del messages[at : at + size]
    elif kind == "title":
        state.title = text(serial, arg)
    elif kind == "note":
        state.notes[f"n{arg}"] = text(serial, size)
    elif kind == "drop_note":
        state.notes.pop(f"n{arg}", None)
    elif kind == "clear":
        messages.clear()
    state.count += 1


# -- a checkpointing writer, as the actor host does it ------------------------------------


async def checkpoint(store: Store, parts: StateParts, state: Any, turn: int) -> int:
    """Journal a turn's end with the checkpoint of ``state``; return the parts' bytes written."""
    data = encode(state)
    refs, append = await parts.prepare(data)
    state = msgspec.Raw(NIL if refs else data)
    end = 0 if refs else parts.holding
    snapshot = ActorSnapshot(turn, state, 0, [], parts=refs, parts_end=end)
    end = StreamAppend(STREAM, (NewRecord("turn_done", b"-"),), snapshot=encode(snapshot))
    await store.append_many([end] if append is None else [end, append])
    parts.committed()
    return 0 if append is None else sum(len(record.data) for record in append.records)


async def restored(store: Store, kind: type[Any]) -> tuple[Any, StateParts]:
    """Activate: read the checkpoint, load its parts; the state and the bookkeeping."""
    found = await store.load_snapshot(STREAM)
    assert found is not None
    snapshot = msgspec.msgpack.decode(found.data, type=ActorSnapshot)
    parts = StateParts(store, ACTOR)
    data = await parts.restore(snapshot)
    assert data == await state_bytes(store, ACTOR, snapshot)  # what the journal view reads
    return msgspec.msgpack.decode(data, type=kind), parts


async def stored_records(store: Store) -> dict[int, int]:
    """The size of each record on the parts stream, by position, as the store holds it."""
    return {record.position: len(record.data) async for record in store.read(PARTS)}


async def play(path: pathlib.Path | None, kind: type[Any], start: int, ops: list[Any]) -> None:
    store: Store = MemoryStore() if path is None else await SqliteStore.open(path)
    in_parts = fresh = 0
    try:
        state = kind(messages=[Message("user", text(-n, 1500)) for n in range(start)])
        history = [encode(state)]  # every state checkpointed (for reverting to one)
        parts = StateParts(store, ACTOR)
        turn = 0
        #: What the parts stream may hold after the latest checkpoint: twice the bytes the
        #: one before it referred to, the slack, and what it wrote (see `StateParts`).
        bound = 0
        for serial, op in enumerate(ops):
            if op[0] == "restart":
                if path is not None:
                    await store.close()
                    store = await SqliteStore.open(path)
                parts = StateParts(store, ACTOR)
                if turn:
                    state_back, parts = await restored(store, kind)
                    assert state_back == state
                continue
            if op[0] == "collect" or parts.due:
                fresh += parts.due
                await parts.collect()
                on_disk = await stored_records(store)
                assert sum(on_disk.values()) == parts.stored
                assert not parts.refs or min(on_disk, default=0) >= min(parts.refs)
                assert parts.stored <= bound
                if op[0] == "collect":
                    continue
            if op[0] == "lost":  # prepared, but its transaction never committed
                await parts.prepare(encode(kind(title=text(serial, _state_parts.INLINE_BYTES * 2))))
                continue
            if op[0] == "revert":  # back to an earlier state: its parts may be stored still
                state = msgspec.msgpack.decode(history[-min(op[1], len(history))], type=kind)
            else:
                change(state, op, serial)
            history.append(encode(state))
            live_before = parts.live
            turn += 1
            written = await checkpoint(store, parts, state, turn)
            if parts.refs:  # a state kept whole writes nothing there, and frees nothing yet
                bound = 2 * live_before + _state_parts.FRESH_SLACK + written
            if not parts.due:  # else written afresh, and collected before anything else
                assert parts.stored <= bound
            in_parts += bool(parts.refs)
            state_back, _ = await restored(store, kind)
            assert state_back == state
        if turn:
            state_back, _ = await restored(store, kind)
            assert state_back == state
    finally:
        await store.close()
    event("checkpoints in parts", min(in_parts, 5))
    event("written afresh", min(fresh, 2))


#: The sizes `_state_parts` works with, scaled down 16 times: a state of a few KB is cut
#: into many parts and written afresh often, exercising every path at little cost.
SMALL = {
    "INLINE_BYTES": 1024,
    "SPLIT_BYTES": 512,
    "PART_MIN": 256,
    "PART_MAX": 4096,
    "FRESH_SLACK": 1024,
}


def played(
    path: pathlib.Path | None, kind: type[Any], start: int, ops: list[Any], small: bool
) -> None:
    """`play`, with `_state_parts`'s sizes as they are, or `SMALL`."""
    kept = {name: getattr(_state_parts, name) for name in SMALL}
    for name, value in SMALL.items() if small else ():
        setattr(_state_parts, name, value)
    try:
        anyio.run(play, path, kind, start, ops)
    finally:
        for name, value in kept.items():
            setattr(_state_parts, name, value)


KINDS = st.sampled_from([Chat, PackedChat])
#: Messages of 1,500 bytes the state starts with (0 to 200 KB: whole, then in parts).
STARTS = st.integers(0, 140)
PROPERTY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY
@given(kind=KINDS, start=STARTS, ops=st.lists(OPS, min_size=1, max_size=40), small=st.booleans())
def test_the_state_restored_from_parts_in_memory_is_the_state_checkpointed(
    kind: type[Any], start: int, ops: list[Any], small: bool
) -> None:
    played(None, kind, start, ops, small)


@settings(PROPERTY, max_examples=25)
@given(kind=KINDS, start=STARTS, ops=st.lists(OPS, min_size=1, max_size=30), small=st.booleans())
def test_the_state_restored_from_parts_in_sqlite_is_the_state_checkpointed(
    kind: type[Any], start: int, ops: list[Any], small: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        played(pathlib.Path(tmp) / "journal.db", kind, start, ops, small)


@given(value=st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=3000)
    | st.binary(max_size=3000),
    lambda inner: st.lists(inner, max_size=40) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=200,
))  # fmt: skip
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parts_concatenate_to_the_encoded_state(value: Any) -> None:
    data = encode(value)
    parts = split(data)
    assert b"".join(parts) == data
    assert all(parts)


def test_an_append_changes_only_the_last_part_and_the_header() -> None:
    state = Chat("t", [Message("user", text(n, 2000)) for n in range(300)])
    before = split(encode(state))
    state.messages.append(Message("user", text(300, 2000)))
    after = split(encode(state))
    assert len(set(after) - set(before)) <= 2
    assert sum(map(len, set(after) - set(before))) <= PART_MAX + 2100


# -- through the runtime: bytes journaled per turn -----------------------------------------


class Agent(Actor, state=Chat):
    state: Chat

    @handler
    async def say(self, words: str) -> int:
        self.state.messages.append(Message("user", words))
        return len(self.state.messages)

    @handler
    async def forget(self) -> None:
        self.state.messages.clear()


async def journaled_bytes(store: Store, after: int) -> tuple[int, int]:
    """Bytes of the records committed after global position ``after`` plus the actor's
    checkpoint; the last global position."""
    total, last = 0, after
    async for record in store.read_all(after + 1):
        total += len(record.data)
        last = record.global_position
    snapshot = await store.load_snapshot("actor/Agent/k")
    assert snapshot is not None
    return total + len(snapshot.data), last


@pytest.mark.anyio
async def test_a_turn_of_a_500_message_conversation_writes_the_new_message_not_the_history(
    db: pathlib.Path,
) -> None:
    per_turn: list[int] = []
    async with running(db, [Agent]) as rt:
        agent = rt.ref(Agent, "k")
        last = 0
        for n in range(500):
            assert await agent.call(Agent.say, text(n, 2000)) == n + 1
            written, last = await journaled_bytes(rt.store, last)
            per_turn.append(written)
        whole = len(encode(await _state(rt)))
    assert whole > 1_000_000
    # The turn's own records (message, turn, outcome) and the new message are a few KB;
    # the checkpoint's list of positions grows by a few bytes per part. A part written
    # whole again (after CHAIN_MAX appends, or afresh for garbage collection) is rare.
    late = sorted(per_turn[400:])
    assert late[len(late) // 2] < 4 * 2000  # the median turn: the message, not the history
    assert sum(per_turn[400:]) / 100 < 10 * 2000
    assert max(per_turn) < whole / 4


async def _state(rt: Runtime) -> Chat:
    found = await rt.store.load_snapshot("actor/Agent/k")
    assert found is not None
    snapshot = msgspec.msgpack.decode(found.data, type=ActorSnapshot)
    return msgspec.msgpack.decode(await state_bytes(rt.store, "Agent/k", snapshot), type=Chat)


@pytest.mark.anyio
async def test_a_large_state_survives_a_restart_and_parts_no_longer_used_are_deleted(
    db: pathlib.Path,
) -> None:
    async with running(db, [Agent], snapshot_every=10) as rt:
        for n in range(60):
            await rt.ref(Agent, "k").call(Agent.say, text(n, 1000))
    async with running(db, [Agent], snapshot_every=10) as rt:
        assert await rt.ref(Agent, "k").call(Agent.say, "one more") == 61
        state = await _state(rt)
        assert [m.text for m in state.messages] == [text(n, 1000) for n in range(60)] + ["one more"]
        assert await stored_parts(rt.store)
        for _ in range(9):  # to turn 70, a multiple of snapshot_every: the state is small
            await rt.ref(Agent, "k").call(Agent.forget)
        assert await stored_parts(rt.store) == []


async def stored_parts(store: Store) -> list[int]:
    return [record.position async for record in store.read("state/Agent/k")]


@pytest.mark.anyio
async def test_export_includes_the_state_parts_and_reset_deletes_them(db: pathlib.Path) -> None:
    async with running(db, [Agent]) as rt:
        for n in range(20):
            await rt.ref(Agent, "k").call(Agent.say, text(n, 2000))
        exported = [record async for record in _quarantine.export(rt.store, "Agent/k")]
    parts = [record for record in exported if record.stream == "state/Agent/k"]
    assert parts
    assert all(record.entry is not None for record in parts)
    async with running(db, []) as rt:
        assert "state/Agent/k" in await _quarantine.reset(rt.store, "Agent/k")
        assert await stored_parts(rt.store) == []
