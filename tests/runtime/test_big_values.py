"""Large payloads are stored once per store, as journal values that records refer to by
digest: a step's result, a message's arguments, an event's payload, a state part. Every
reader sees the payloads as they were; identical ones are stored once; garbage goes."""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import pytest
from click.testing import CliRunner

import actorflow.cli
from actorflow import NO_RETRY, Actor, HandlerFailed, Runtime, handler, query
from actorflow._events import ACTOR_CODEC, StepCompleted
from actorflow.cli._repair import export_actor
from actorflow.runtime._big_values import DEFAULT_VALUE_THRESHOLD, REF_CODE, ValueStore
from actorflow.versioning import check
from journal import MemoryStore, Record, SqliteStore, Store, copy_journal, value_digest
from tests.runtime.big_value_child import document
from tests.runtime.support import RELEASE, entries, hold, run_to_hold

pytestmark = pytest.mark.anyio

DOC = "d" * 100_000  # over the default threshold
SYSTEM = "s" * 20_000


class Message(msgspec.Struct):
    role: str
    text: str


class Chat(msgspec.Struct):
    messages: list[Message] = []


def read_doc(name: str) -> str:
    return DOC if name == "doc" else f"{name}:" + "x" * 50_000


def tool(name: str) -> Message:
    """A tool's answer, as a conversation keeps it."""
    return Message("tool", read_doc(name))


class Reader(Actor, state=Chat):
    @handler
    async def read(self, name: str, note: str = "") -> int:
        message = await self.ctx.run(tool, name)
        self.state.messages.append(message)
        return len(message.text) + len(note)

    @handler
    async def held(self, name: str) -> int:
        text = await self.ctx.run(read_doc, name)
        await hold(self.ctx)
        return len(text)

    @handler
    async def say(self, text: str) -> None:
        self.state.messages.append(Message("user", text))

    @query
    def texts(self) -> list[str]:
        return [message.text for message in self.state.messages]

    @handler
    async def event(self) -> int:
        payload = await self.ctx.wait_for("big")
        return len(payload)


async def raw(store: Store, stream: str) -> list[Record]:
    """The records of ``stream`` as the journal holds them (not through the runtime)."""
    inner = getattr(store, "inner", store)
    return [record async for record in inner.read(stream)]


async def values_stored(store: MemoryStore) -> int:
    return (await store.verify()).values


async def test_a_large_step_result_is_stored_once_as_a_value_and_read_back_whole() -> None:
    store = MemoryStore()
    async with Runtime(store, [Reader]) as rt:
        a, b = rt.ref(Reader, "a"), rt.ref(Reader, "b")
        assert await a.call(Reader.read, "doc") == len(DOC)
        await b.call(Reader.say, "hello")
        assert await b.call(Reader.read, "doc") == len(DOC)
        steps = [r for r in await raw(store, "actor/Reader/a") if r.type == "step"]
        [step] = steps
        digest = value_digest(msgspec.msgpack.encode(tool("doc")))
        assert step.refs == (digest,)
        assert len(step.data) < 500  # the record holds the reference, not the document
        held = msgspec.msgpack.decode(step.data)["value"]
        assert held == msgspec.msgpack.Ext(REF_CODE, bytes.fromhex(digest))
        # Every reader of the runtime sees the value itself.
        [journaled] = await entries(rt, a, "step")
        assert journaled.data["value"] == {"role": "tool", "text": DOC}
        assert await a.query(Reader.texts) == [DOC]
    # The message (both step results, and the state part of both conversations) is one
    # value in the store: the state's list is cut so that a large element is a part of
    # its own, whatever comes before it.
    assert await values_stored(store) == 1
    report = await store.verify()
    assert report.ok, report.problems


async def test_the_state_and_results_come_back_equal_after_a_restart(db: pathlib.Path) -> None:
    store = await SqliteStore.open(db)
    try:
        async with Runtime(store, [Reader]) as rt:
            a = rt.ref(Reader, "a")
            await a.call(Reader.read, "doc")
            await a.call(Reader.read, "other")
            invocation = await run_to_hold(a, Reader.held, "third")
    finally:
        await store.close()
    store = await SqliteStore.open(db)
    try:
        async with Runtime(store, [Reader]) as rt:
            a = rt.ref(Reader, "a")
            assert await a.query(Reader.texts) == [DOC, read_doc("other")]
            await rt.deliver(a.ref, RELEASE)
            assert await rt.result(invocation) == len(read_doc("third"))
        assert (await store.verify()).ok
    finally:
        await store.close()


async def test_large_message_arguments_and_event_payloads_are_values() -> None:
    store = MemoryStore()
    async with Runtime(store, [Reader]) as rt:
        a = rt.ref(Reader, "a")
        assert await a.call(Reader.read, "small", SYSTEM) == len(read_doc("small")) + len(SYSTEM)
        invocation = await run_to_hold(a, Reader.event)
        await a.deliver("big", SYSTEM)
        assert await rt.result(invocation) == len(SYSTEM)
        event = value_digest(msgspec.msgpack.encode(SYSTEM))
        inbox = await raw(store, "inbox/Reader/a")
        args = inbox[0].refs[0]
        assert [(r.type, r.refs) for r in inbox if r.refs] == [
            ("message", (args,)),
            ("event", (event,)),
        ]
        assert all(len(r.data) < 2000 for r in inbox)
        # The turn's record of its arguments refers to the same value as the message.
        turns = [r for r in await raw(store, "actor/Reader/a") if r.type == "turn"]
        assert turns[0].refs == (args,)
        journal = await rt.journal(a.ref)
        assert any(e.type == "turn" and e.data["args"]["note"] == SYSTEM for e in journal)


async def test_with_the_threshold_off_nothing_is_a_value() -> None:
    store = MemoryStore()
    async with Runtime(store, [Reader], value_threshold=0) as rt:
        assert rt.store is store
        await rt.ref(Reader, "a").call(Reader.read, "doc")
    assert await values_stored(store) == 0
    assert DEFAULT_VALUE_THRESHOLD == 8192


async def test_values_of_a_reset_actor_are_collected_and_shared_ones_kept() -> None:
    store = MemoryStore()
    async with Runtime(store, [Reader], snapshot_every=1) as rt:
        a, b = rt.ref(Reader, "a"), rt.ref(Reader, "b")
        await a.call(Reader.read, "doc")
        await a.call(Reader.read, "only-a")
        await b.call(Reader.read, "doc")
        assert await values_stored(store) == 2
    # a's journal deleted (as an operator's reset does): its own value is garbage, the
    # shared document is still referred to by b's records.
    for stream in await store.list_streams():
        if stream.endswith("Reader/a") or stream.startswith("invocation/Reader/a"):
            await store.delete_stream(stream)
    async with Runtime(store, [Reader]) as rt:
        await rt._sweep()  # the periodic retention sweep collects garbage values
        assert await values_stored(store) == 1
        assert await rt.ref(Reader, "b").query(Reader.texts) == [DOC]
    assert (await store.verify()).ok


def test_a_64_mib_step_result_survives_a_kill_and_restart_on_sqlite(
    db: pathlib.Path,
) -> None:
    size = 64 * 1024 * 1024
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = [sys.executable, "-m", "tests.runtime.big_value_child", str(db)]
    run = [*child, "run", str(size)]
    with subprocess.Popen(run, stdout=subprocess.PIPE, env=env, text=True) as first:
        try:
            assert first.stdout is not None
            line = first.stdout.readline().split()  # once the step's result is journaled
            assert line[:1] == ["HELD"], line
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
    done = subprocess.run(
        [*child, "finish", str(size), line[1]],
        capture_output=True,
        env=env,
        text=True,
        timeout=15,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = hashlib.sha256(document(size)).hexdigest()
    assert done.stdout.split() == ["DONE", expected, str(size)]


async def test_an_export_holds_its_values_and_the_replay_check_reads_them(
    db: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    store = await SqliteStore.open(db)
    try:
        async with Runtime(store, [Reader]) as rt:
            await run_to_hold(rt.ref(Reader, "a"), Reader.held, "doc")
    finally:
        await store.close()
    out = tmp_path / "a.jsonl"
    await anyio.to_thread.run_sync(export_actor, "Reader/a", out, str(db))
    lines = [msgspec.json.decode(line) for line in out.read_bytes().splitlines()]
    [step] = [line for line in lines if line.get("type") == "step"]
    assert step["entry"]["value"] == DOC  # self-contained: the value, not its reference
    # The export replays (as a golden journal does), and so does the journal file.
    exported = await check([Reader], exports=[out])
    from_file = await check([Reader], journals=[db])
    assert (exported.checked, exported.ok) == (1, True), exported
    assert (from_file.checked, from_file.ok) == (1, True), from_file


async def test_resetting_an_actor_offline_deletes_the_values_only_it_referred_to(
    db: pathlib.Path,
) -> None:
    store = await SqliteStore.open(db)
    try:
        async with Runtime(store, [Reader]) as rt:
            await rt.ref(Reader, "a").call(Reader.read, "only-a")
            await rt.ref(Reader, "a").call(Reader.read, "doc")
            await rt.ref(Reader, "b").call(Reader.read, "doc")
        assert (await store.verify()).values == 2
    finally:
        await store.close()
    result = await anyio.to_thread.run_sync(
        lambda: CliRunner().invoke(
            actorflow.cli.main, ["reset", "Reader/a", "--journal", str(db), "--yes"]
        )
    )
    assert result.exit_code == 0, result.output
    store = await SqliteStore.open(db)
    try:
        report = await store.verify()
        assert (report.ok, report.values) == (True, 1)
        async with Runtime(store, [Reader]) as rt:
            assert await rt.ref(Reader, "b").query(Reader.texts) == [DOC]
    finally:
        await store.close()


class CollectingStore(MemoryStore):
    """A memory store on which a collection runs right after every `has_values`: the
    race where a value reported stored is garbage collected before the append."""

    async def has_values(self, digests: Iterable[str]) -> set[str]:
        found = await super().has_values(digests)
        await self.collect_values()
        return found


async def test_a_value_collected_after_has_values_is_sent_again() -> None:
    store = CollectingStore()
    values = ValueStore(store, 1024)
    big = msgspec.msgpack.encode(tool("doc"))
    step = StepCompleted(1, "s", "tool", "run", msgspec.Raw(big))
    await values.append("actor/Reader/gone", [ACTOR_CODEC.encode(step)])
    await store.delete_stream("actor/Reader/gone")  # its value is garbage, still stored
    assert await MemoryStore.has_values(store, [value_digest(big)])  # without collecting
    await values.append("actor/Reader/a", [ACTOR_CODEC.encode(step)])
    [record] = [r async for r in values.read("actor/Reader/a")]
    assert ACTOR_CODEC.decode(record) == step
    assert (await store.verify()).ok


failures = {"left": 0}


def flaky(name: str) -> str:
    if failures["left"]:
        failures["left"] -= 1
        raise ValueError("the service is down")
    return name


class Retried(Actor):
    @handler
    async def run(self, name: str) -> int:
        message = await self.ctx.run(tool, "doc")
        await self.ctx.run(flaky, name, retry=NO_RETRY)
        return len(message.text)


async def test_a_retried_invocation_gets_its_large_step_result_back_from_the_seed() -> None:
    store = MemoryStore()
    failures["left"] = 1
    async with Runtime(store, [Retried]) as rt:
        handle = rt.ref(Retried, "r")
        invocation = await handle.send(Retried.run, "x")
        with pytest.raises(HandlerFailed):
            await rt.result(invocation)
        outcome = [r for r in await raw(store, "outcomes/Retried/r") if r.type == "ended"]
        digest = value_digest(msgspec.msgpack.encode(tool("doc")))
        assert [r.refs for r in outcome] == [(digest,)]  # the seed refers to the value
        assert len(outcome[0].data) < 2000
        await rt.retry(invocation)
        assert await rt.result(invocation) == len(DOC)
    assert (await store.verify()).ok


async def test_a_copied_journal_keeps_its_values_and_reads_back_equal(
    db: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    source = await SqliteStore.open(db)
    target = await SqliteStore.open(tmp_path / "copy.db")
    try:
        async with Runtime(source, [Reader]) as rt:
            await rt.ref(Reader, "a").call(Reader.read, "doc")
        report = await copy_journal(source, target)
        assert report.values == 1
        async with Runtime(target, [Reader]) as rt:
            assert await rt.ref(Reader, "a").query(Reader.texts) == [DOC]
    finally:
        await source.close()
        await target.close()


@pytest.mark.parametrize("threshold", [-1, 1.5, "8k"])
def test_a_threshold_that_is_not_a_byte_count_is_refused(threshold: Any) -> None:
    with pytest.raises(ValueError, match="value_threshold must be a byte count"):
        Runtime(MemoryStore(), [Reader], value_threshold=threshold)
