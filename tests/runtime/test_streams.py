"""ctx.stream: chunks reach subscribers while the step runs, the journaled result is the
complete value, retried and re-executed attempts are superseded, resume, retention."""

from __future__ import annotations

import dataclasses
import pathlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest

from actorflow import Actor, ManualClock, Retry, handler
from actorflow._stream import StreamEvent
from actorflow.runtime._streams import STREAM_PREFIX, UnknownEventId, follow
from journal import Appended, StreamAppend
from tests.runtime.support import crashing, eventually, running

pytestmark = pytest.mark.anyio

#: Calls of the streaming functions, by name: what a replay must not add to.
calls: Counter[str] = Counter()
#: Set by a test to let a waiting generator go on.
gates: dict[str, anyio.Event] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    gates.clear()


async def tokens(words: list[str], gate: str = "") -> AsyncIterator[str]:
    calls["tokens"] += 1
    for i, word in enumerate(words):
        if gate and i == 1:
            await gates[gate].wait()  # the test opens it once it saw the first chunk
        yield word


async def flaky(words: list[str]) -> AsyncIterator[str]:
    """Fails after two chunks on its first call."""
    calls["flaky"] += 1
    for i, word in enumerate(words):
        if calls["flaky"] == 1 and i == 2:
            raise ConnectionError("the model's connection dropped")
        yield word


async def stalls(words: list[str]) -> AsyncIterator[str]:
    """On its first call, stops for good after two chunks (as at a crash)."""
    calls["stalls"] += 1
    for i, word in enumerate(words):
        if calls["stalls"] == 1 and i == 2:
            await anyio.sleep_forever()
        yield word


@dataclasses.dataclass
class Delta:
    content: str


class ModelChunk:
    """Shaped like an SDK's pydantic chunk: converted through ``model_dump``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        return {"delta": self.text, "mode": mode}


async def objects() -> AsyncIterator[Any]:
    yield Delta("a")
    yield ModelChunk("b")


def joined(chunks: list[Any]) -> str:
    return "".join(c.content if isinstance(c, Delta) else c.text for c in chunks)


class Writer(Actor):
    @handler
    async def write(self, words: list[str], gate: str = "") -> str:
        text: str = await self.ctx.stream(tokens, words, gate)
        return text.upper()

    @handler
    async def retried(self, words: list[str]) -> str:
        result: str = await self.ctx.stream(flaky, words, retry=Retry(initial=0, jitter=0))
        return result

    @handler
    async def stalled(self, words: list[str]) -> str:
        result: str = await self.ctx.stream(stalls, words)
        return result

    @handler
    async def listed(self) -> str:
        result: str = await self.ctx.stream(lambda: ["not", "async"], name="sync")
        return result

    @handler
    async def both(self) -> list[str]:
        first = self.ctx.stream(tokens, ["a", "b"], name="left")
        second = self.ctx.stream(tokens, ["c", "d"], name="right")
        return await self.ctx.gather(first, second)

    @handler
    async def mixed(self) -> list[Any]:
        listed: list[Any] = await self.ctx.stream(objects, name="listed")
        text = await self.ctx.stream(objects, name="collected", collect=joined)
        return [listed, text]


async def events_of(runtime: Any, invocation: str, after: str | None = None) -> list[StreamEvent]:
    seen: list[StreamEvent] = []
    async for batch in follow(runtime, invocation, after):
        seen.extend(batch)
    return seen


def summary(events: Sequence[StreamEvent]) -> list[tuple[str, str, Any]]:
    return [(e.kind, e.id, e.data) for e in events]


async def test_chunks_reach_a_subscriber_before_the_step_ends(db: pathlib.Path) -> None:
    gates["g"] = anyio.Event()
    async with running(db, [Writer]) as runtime:
        invocation = await runtime.ref(Writer, "w").send(Writer.write, ["Hel", "lo"], "g")
        seen: list[StreamEvent] = []
        async for batch in follow(runtime, invocation):
            seen.extend(batch)
            if any(e.kind == "chunk" for e in seen) and not gates["g"].is_set():
                assert [e.data for e in seen] == ["Hel"]  # the step is still waiting
                gates["g"].set()
        assert summary(seen) == [
            ("chunk", "1:1", "Hel"),
            ("chunk", "1:2", "lo"),
            ("result", "1:3", {"step": "tokens", "attempt": 1, "value": "Hello"}),
            ("end", "end", {"state": "completed", "result": "HELLO"}),
        ]
        assert await runtime.result(invocation) == "HELLO"


async def test_a_retried_attempt_supersedes_the_failed_one(db: pathlib.Path) -> None:
    async with running(db, [Writer]) as runtime:
        invocation = await runtime.ref(Writer, "w").send(Writer.retried, ["a", "b", "c"])
        seen = await events_of(runtime, invocation)
    failed = seen[2]
    assert (failed.kind, failed.id, failed.data["error"]["type"]) == (
        "failed",
        "1:3",
        "builtins.ConnectionError",
    )
    assert summary(seen[:2] + seen[3:]) == [
        ("chunk", "1:1", "a"),
        ("chunk", "1:2", "b"),
        ("superseded", "2:0", {"attempt": 1, "by": 2, "step": "flaky"}),
        ("chunk", "2:1", "a"),
        ("chunk", "2:2", "b"),
        ("chunk", "2:3", "c"),
        ("result", "2:4", {"step": "flaky", "attempt": 2, "value": "abc"}),
        ("end", "end", {"state": "completed", "result": "abc"}),
    ]
    assert calls["flaky"] == 2


async def test_an_attempt_rerun_after_a_crash_is_numbered_above_and_supersedes(
    db: pathlib.Path,
) -> None:
    async with crashing(db, [Writer]) as runtime:
        invocation = await runtime.ref(Writer, "w").send(Writer.stalled, ["a", "b", "c"])
        seen: list[StreamEvent] = []
        async for batch in follow(runtime, invocation):
            seen.extend(batch)
            if len(seen) == 2:
                break
    assert summary(seen) == [("chunk", "1:1", "a"), ("chunk", "1:2", "b")]
    async with running(db, [Writer]) as runtime:
        seen += await events_of(runtime, invocation, after="1:2")
        assert await runtime.result(invocation) == "abc"
    assert summary(seen[2:]) == [
        ("superseded", "2:0", {"attempt": 1, "by": 2, "step": "stalls"}),
        ("chunk", "2:1", "a"),
        ("chunk", "2:2", "b"),
        ("chunk", "2:3", "c"),
        ("result", "2:4", {"step": "stalls", "attempt": 2, "value": "abc"}),
        ("end", "end", {"state": "completed", "result": "abc"}),
    ]
    assert calls["stalls"] == 2
    async with running(db, [Writer]) as runtime:  # a completed step is not streamed again
        assert await runtime.result(invocation) == "abc"
        assert summary(await events_of(runtime, invocation, after="2:4"))[0][0] == "end"
    assert calls["stalls"] == 2


async def test_a_function_that_does_not_stream_asynchronously_fails_the_step_at_once(
    db: pathlib.Path,
) -> None:
    async with running(db, [Writer]) as runtime:
        invocation = await runtime.ref(Writer, "w").send(Writer.listed)
        seen = await events_of(runtime, invocation)
    assert [(e.kind, e.id) for e in seen] == [("failed", "1:1"), ("end", "end")]
    assert seen[0].data["error"]["type"] == "actorflow._errors.ContextMisuseError"
    assert "must be an async generator" in seen[0].data["error"]["message"]
    assert seen[1].data["state"] == "failed"


async def test_concurrent_streaming_steps_take_an_attempt_number_each(db: pathlib.Path) -> None:
    async with running(db, [Writer]) as runtime:
        invocation = await runtime.ref(Writer, "w").send(Writer.both)
        seen = await events_of(runtime, invocation)
        assert await runtime.result(invocation) == ["ab", "cd"]
    # Each branch's events, in order, under its own attempt number (left began first).
    assert [(e.kind, e.id, e.data) for e in seen if e.attempt == 1] == [
        ("chunk", "1:1", "a"),
        ("chunk", "1:2", "b"),
        ("result", "1:3", {"step": "left", "attempt": 1, "value": "ab"}),
    ]
    assert [(e.kind, e.id, e.data) for e in seen if e.attempt == 2] == [
        ("chunk", "2:1", "c"),
        ("chunk", "2:2", "d"),
        ("result", "2:3", {"step": "right", "attempt": 2, "value": "cd"}),
    ]
    assert len(seen) == 7


async def test_resuming_after_an_event_gives_only_the_later_ones(db: pathlib.Path) -> None:
    async with running(db, [Writer]) as runtime:
        invocation = await runtime.ref(Writer, "w").send(Writer.write, ["x", "y", "z"])
        everything = await events_of(runtime, invocation)
        for i, event in enumerate(everything[:-1]):
            assert await events_of(runtime, invocation, after=event.id) == everything[i + 1 :]
        with pytest.raises(UnknownEventId):
            await events_of(runtime, invocation, after="7:1")
        with pytest.raises(ValueError, match="not a stream event id"):
            await events_of(runtime, invocation, after="x")


async def test_chunks_and_results_of_sdk_shaped_objects_are_json(db: pathlib.Path) -> None:
    async with running(db, [Writer]) as runtime:
        invocation = await runtime.ref(Writer, "w").send(Writer.mixed)
        seen = await events_of(runtime, invocation)
        listed = [{"content": "a"}, {"delta": "b", "mode": "json"}]
        assert [e.data for e in seen if e.kind == "chunk"] == listed * 2
        assert await runtime.result(invocation) == [listed, "ab"]


class CountingStore:
    """The real store, with the appends to chunk streams counted."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.appends = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def append_many(self, appends: Sequence[StreamAppend]) -> list[Appended]:
        if any(part.stream.startswith(STREAM_PREFIX) for part in appends):
            self.appends += 1
        result: list[Appended] = await self._store.append_many(appends)
        return result


async def test_chunks_are_appended_in_batches_not_one_commit_each(db: pathlib.Path) -> None:
    counting: list[CountingStore] = []

    def wrap(store: Any) -> CountingStore:
        counting.append(CountingStore(store))
        return counting[0]

    words = [f"w{i} " for i in range(2000)]
    async with running(db, [Writer], wrap=wrap) as runtime:
        invocation = await runtime.ref(Writer, "w").send(Writer.write, words)
        seen = await events_of(runtime, invocation)
    assert [e.data for e in seen if e.kind == "chunk"] == words
    # The attempt's start and its end are durable writes; the chunks between them (the
    # generator never waits) all go with the end.
    assert counting[0].appends == 2


async def test_an_ended_invocations_stream_is_deleted_after_the_retention(
    db: pathlib.Path,
) -> None:
    clock = ManualClock()
    async with running(db, [Writer], clock=clock, stream_retention=60) as runtime:
        invocation = await runtime.ref(Writer, "w").send(Writer.write, ["a", "b"])
        assert await runtime.result(invocation) == "AB"
        full = await events_of(runtime, invocation)
        assert await runtime.expire_streams() == 0  # marked closed at its end, now
        clock.advance(59)
        assert await runtime.expire_streams() == 0
        assert await events_of(runtime, invocation) == full
        clock.advance(1)
        assert await runtime.expire_streams() == 1
        assert await runtime.store.list_streams(STREAM_PREFIX) == []
        assert summary(await events_of(runtime, invocation)) == [
            ("end", "end", {"state": "completed", "result": "AB"})
        ]
        # A subscriber resuming from an event of the deleted stream gets the end.
        assert [e.kind for e in await events_of(runtime, invocation, after="1:2")] == ["end"]


async def test_a_subscriber_is_woken_by_each_flush(db: pathlib.Path) -> None:
    gates["g"] = anyio.Event()
    async with running(db, [Writer]) as runtime:
        invocation = await runtime.ref(Writer, "w").send(Writer.write, ["a", "b"], "g")
        stream = STREAM_PREFIX + invocation

        async def has_chunk() -> bool:
            return await runtime.store.last_position(stream) >= 2

        await eventually(has_chunk, "the first chunk to be flushed")
        gates["g"].set()
        assert [e.kind for e in await events_of(runtime, invocation)][-1] == "end"
