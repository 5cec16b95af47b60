"""Chunk streams: what streaming steps (`Context.stream`) produce, stored and read back.

Each invocation that streams has its own journal stream, ``streams/<invocation id>``. Its
records each hold a batch of items, in order:

* `Begin`: an attempt of a streaming step starts. Attempts are numbered per chunk stream
  (1, 2, ...: every attempt of every streaming step of the invocation takes the next
  number), above every attempt the stream holds, so an attempt re-run after a crash is
  numbered above the one it replaces. ``supersedes`` names the previous attempt of the
  same step (same idempotency key), if any: its chunks no longer count. Written durably
  before any of the attempt's chunks.
* `Chunks`: chunks ``first``, ``first + 1``, ... of an attempt, JSON-able values stored
  as msgpack. Queued without waiting and appended by one background flusher per runtime,
  every `FLUSH_INTERVAL` seconds, all streams in one transaction: a chunk costs a share of
  a group commit, never a commit of its own awaited by the step.
* `Result` / `Failed`: the attempt's complete value (what the step returns and the turn
  journals) or its error, written durably with the attempt's last chunks.
* `Closed`: the invocation has ended (noticed by the retention sweep, which deletes the
  stream `Runtime.stream_retention` seconds later).

Every chunk has an event id independent of how it was batched: ``<attempt>:<seq>`` (seq
from 1; ``<attempt>:0`` is the supersede notice of that attempt, and the result or error
takes the seq after the last chunk). `StreamReader` turns records into these events,
dropping anything of an attempt already superseded.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from actorflow._errors import ActorflowError, ActorStuckError
from actorflow._stream import StreamEvent, to_json
from journal import NewRecord, StreamAppend

if TYPE_CHECKING:
    from actorflow.runtime._host import ActorHost
    from actorflow.runtime._runtime import Runtime
    from actorflow.runtime._status import InvocationStatus

log = logging.getLogger("actorflow")

#: The journal streams of chunk streams are named with this prefix and the invocation id.
STREAM_PREFIX = "streams/"
#: Seconds between the background flushes of queued chunks (their most added latency).
FLUSH_INTERVAL = 0.02
#: Default seconds an ended invocation's chunk stream is kept (`Runtime.stream_retention`).
DEFAULT_STREAM_RETENTION = 3600.0
#: Bytes of chunks per record, at most (a flush writes several records if it must).
_RECORD_BYTES = 256 * 1024
_RECORD_TYPE = "actorflow.chunks"


def chunk_stream(invocation: str) -> str:
    """The journal stream holding ``invocation``'s chunks."""
    return STREAM_PREFIX + invocation


class Begin(msgspec.Struct, tag="b", array_like=True, frozen=True):
    attempt: int
    step: str  # the step's idempotency key
    name: str
    supersedes: int  # 0: none


class Chunks(msgspec.Struct, tag="c", array_like=True, frozen=True):
    attempt: int
    first: int
    chunks: list[msgspec.Raw]


class Result(msgspec.Struct, tag="r", array_like=True, frozen=True):
    attempt: int
    seq: int
    value: msgspec.Raw


class Failed(msgspec.Struct, tag="f", array_like=True, frozen=True):
    attempt: int
    seq: int
    error_type: str
    error: str


class Closed(msgspec.Struct, tag="x", array_like=True, frozen=True):
    at: float


Item = Begin | Chunks | Result | Failed | Closed
_encode = msgspec.msgpack.Encoder().encode
_decode_items = msgspec.msgpack.Decoder(list[Item]).decode
_decode_any = msgspec.msgpack.Decoder().decode


def _record(items: Sequence[Item]) -> NewRecord:
    return NewRecord(_RECORD_TYPE, _encode(list(items)))


def _records(items: list[Item]) -> tuple[NewRecord, ...]:
    """``items`` as records: up to 64 items each, a result (which may be large) alone."""
    records: list[NewRecord] = []
    batch: list[Item] = []
    for item in items:
        if isinstance(item, Result) or len(batch) == 64:
            if batch:
                records.append(_record(batch))
            batch = []
        batch.append(item)
        if isinstance(item, Result):
            records.append(_record(batch))
            batch = []
    if batch:
        records.append(_record(batch))
    return tuple(records)


# -- writing ---------------------------------------------------------------------------------


class _Attempt:
    """One attempt of a streaming step (the `StreamAttempt` the step function uses)."""

    def __init__(self, sink: HostSink, stream: str, attempt: int) -> None:
        self._sink = sink
        self._stream = stream
        self.attempt = attempt
        self._seq = 0
        self._batch: list[msgspec.Raw] = []
        self._first = 1
        self._bytes = 0

    def chunk(self, value: Any) -> None:
        data = msgspec.Raw(_encode(value))
        self._seq += 1
        if not self._batch:
            self._first = self._seq
        self._batch.append(data)
        self._bytes += len(data)
        if self._bytes >= _RECORD_BYTES:
            self._hand_over()
        else:
            self._sink.streams.pending(self)

    def _hand_over(self) -> None:
        """Move the chunks batched so far to the flusher's queue."""
        if self._batch:
            item = Chunks(self.attempt, self._first, self._batch)
            self._batch, self._bytes = [], 0
            self._sink.streams.queue(self._stream, item)

    def take(self) -> None:
        """The flusher is about to write: hand it the chunks batched so far."""
        self._hand_over()

    async def finish(self, value: Any) -> None:
        self._hand_over()
        data = _encode(value)
        limit = self._sink.record_limit
        item: Item = Result(self.attempt, self._seq + 1, msgspec.Raw(data))
        if len(data) > limit - 4096:  # the turn journals StepResultTooLarge: say so here
            why = f"the complete value takes {len(data):,} bytes, over the record limit"
            item = Failed(self.attempt, self._seq + 1, "actorflow.StepResultTooLarge", why)
        await self._sink.write(self._stream, item)

    async def fail(self, error: BaseException) -> None:
        self._hand_over()
        kind = f"{type(error).__module__}.{type(error).__qualname__}"
        await self._sink.write(self._stream, Failed(self.attempt, self._seq + 1, kind, str(error)))


class HostSink:
    """An actor host's `ChunkSink`: numbers attempts (reading the chunk stream once per
    invocation it hosts) and hands their items to the runtime's `ChunkStreams`."""

    def __init__(self, streams: ChunkStreams, host: ActorHost) -> None:
        self.streams = streams
        # Weakly: the host holds its sink, and a passivated host must go at once,
        # without waiting for the cycle collector.
        self._host = weakref.ref(host)
        self.record_limit = host.store.max_record_bytes  # a chunk stream holds no values
        self._invocation = ""
        self._next = 0  # the next attempt number of self._invocation's stream (0: unread)
        self._last: dict[str, int] = {}  # step key -> its latest attempt
        self._lock = anyio.Lock()

    async def begin(self, invocation: str, step_key: str, name: str) -> _Attempt:
        stream = chunk_stream(invocation)
        async with self._lock:
            if invocation != self._invocation or not self._next:
                self._invocation = invocation
                self._next, self._last = await self.streams.history(stream, self)
            attempt = self._next
            self._next += 1
            supersedes = self._last.get(step_key, 0)
            self._last[step_key] = attempt
        await self.write(stream, Begin(attempt, step_key, name, supersedes))
        return _Attempt(self, stream, attempt)

    async def write(self, stream: str, item: Item) -> None:
        """Queue ``item`` and flush everything queued, durably; a failure of the journal
        (or of an earlier background flush of this stream) stops the turn, whose next
        run numbers its attempts from the journal again."""
        self.streams.queue(stream, item)
        try:
            await self.streams.flush()
            self.streams.check(stream)
        except Exception as exc:
            self._next = 0
            raise self.failed(exc) from exc

    def failed(self, exc: BaseException) -> BaseException:
        """What the journal failing under a streaming step raises: its host's
        `JournalFailure` (which stops the turn)."""
        host = self._host()
        return exc if host is None else host._failed(exc)


class StreamLost(ActorflowError):
    """Chunks queued for a chunk stream could not be written: the attempt is re-run."""


class ChunkStreams:
    """A runtime's chunk streams: the queue, its background flusher, the wake-ups of
    readers, and the retention sweep."""

    def __init__(self, runtime: Runtime, retention: float) -> None:
        if not isinstance(retention, int | float) or not retention > 0:
            raise ValueError(f"stream_retention must be > 0 s, got {retention!r}")
        self.runtime = runtime
        self.store = runtime.store
        self.retention = float(retention)
        self._queue: dict[str, list[Item]] = {}
        self._open: dict[_Attempt, None] = {}  # attempts with chunks batched, not queued yet
        self._lost: dict[str, BaseException] = {}
        self._wake = anyio.Event()
        self._lock = anyio.Lock()
        self._watchers: dict[str, list[anyio.Event]] = {}
        self._closed = False
        self._stopped = anyio.Event()

    def sink(self, host: ActorHost) -> HostSink:
        """The chunk sink of one actor host."""
        return HostSink(self, host)

    async def history(self, stream: str, sink: HostSink) -> tuple[int, dict[str, int]]:
        """The next attempt number of ``stream`` and the latest attempt of each step."""
        highest, last = 0, dict[str, int]()
        try:
            async for record in self.store.read(stream):
                for item in _decode_items(record.data):
                    if isinstance(item, Begin):
                        highest = max(highest, item.attempt)
                        last[item.step] = max(last.get(item.step, 0), item.attempt)
        except Exception as exc:
            raise sink.failed(exc) from exc
        return highest + 1, last

    def pending(self, attempt: _Attempt) -> None:
        self._open[attempt] = None
        self._wake.set()

    def queue(self, stream: str, item: Item) -> None:
        self._queue.setdefault(stream, []).append(item)
        self._wake.set()

    def check(self, stream: str) -> None:
        lost = self._lost.pop(stream, None)
        if lost is not None:
            raise StreamLost(f"chunks of {stream} could not be written: {lost}")

    async def flush(self) -> None:
        """Append everything queued, all streams in one transaction, and wake readers."""
        async with self._lock:
            for attempt in self._open:
                attempt.take()
            self._open.clear()
            queued, self._queue = self._queue, {}
            if not queued:
                return
            parts = [StreamAppend(stream, _records(items)) for stream, items in queued.items()]
            try:
                await self.store.append_many(parts)
            except Exception as exc:
                for stream in queued:
                    self._lost[stream] = exc
                raise
            finally:
                for stream in queued:
                    self.wake(stream)

    async def run(self) -> None:
        """The background flusher: write queued chunks every `FLUSH_INTERVAL` seconds."""
        try:
            while not self._closed:
                await self._wake.wait()
                self._wake = anyio.Event()
                if not self._closed:
                    await anyio.sleep(FLUSH_INTERVAL)
                try:
                    await self.flush()
                except Exception as exc:  # the attempts' next durable write reports it
                    log.warning("chunk streams: a flush failed: %s", exc)
        finally:
            self._stopped.set()

    async def close(self) -> None:
        """Write what is queued and stop the flusher (the runtime is stopping)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        try:
            await self.flush()
        except Exception as exc:
            log.warning("chunk streams: the last flush failed: %s", exc)
        self.wake_all()

    # -- readers' wake-ups ----------------------------------------------------------------

    def watch(self, stream: str) -> anyio.Event:
        """An event set at the next append to ``stream`` (by this process, or announced
        by another worker of the fleet)."""
        event = anyio.Event()
        self._watchers.setdefault(stream, []).append(event)
        return event

    def unwatch(self, stream: str, event: anyio.Event) -> None:
        waiting = self._watchers.get(stream)
        if waiting is not None and event in waiting:
            waiting.remove(event)
            if not waiting:
                del self._watchers[stream]

    def wake(self, stream: str) -> None:
        for event in self._watchers.pop(stream, []):
            event.set()

    def wake_all(self) -> None:
        for stream in list(self._watchers):
            self.wake(stream)

    # -- retention ------------------------------------------------------------------------

    async def expire(self) -> int:
        """Mark the chunk streams of ended invocations closed, and delete those closed
        `retention` seconds ago or more; return how many were deleted."""
        now = self.runtime.clock.now()
        deleted, after = 0, ""
        while True:
            page = await self.store.list_stream_infos(STREAM_PREFIX, after=after, limit=500)
            for info in page:
                if info.last_position:
                    deleted += await self._expire_one(info.stream, info.last_position, now)
            if len(page) < 500:
                return deleted
            after = page[-1].stream

    async def _expire_one(self, stream: str, last: int, now: float) -> int:
        items: list[Item] = []
        async for record in self.store.read(stream, last, limit=1):
            items = _decode_items(record.data)
        closed = items[-1] if items and isinstance(items[-1], Closed) else None
        if closed is not None:
            if closed.at + self.retention <= now:
                await self.store.delete_stream(stream)
                self.wake(stream)
                return 1
            return 0
        invocation = stream.removeprefix(STREAM_PREFIX)
        try:
            status = await self.runtime.invocation(invocation)
        except Exception:  # an actor type this runtime does not host, say: not ours
            return 0
        if status is not None and status.state in ("completed", "failed", "cancelled"):
            await self.store.append(stream, [_record([Closed(now)])])
        return 0

    async def sweep_until(self, stopping: anyio.Event, may_sweep: Any) -> None:
        """Run `expire` every so often (a quarter of the retention, at most a minute)
        until ``stopping`` is set."""
        every = min(60.0, max(0.05, self.retention / 4))
        while not stopping.is_set():
            with anyio.move_on_after(every):
                await stopping.wait()
            if stopping.is_set():
                return
            try:
                if await may_sweep():
                    await self.expire()
            except Exception as exc:  # the journal failed: the next sweep tries again
                log.warning("chunk stream retention: a sweep failed: %s", exc)


# -- reading ---------------------------------------------------------------------------------


class UnknownEventId(ActorflowError):
    """A resume offset names no event of the invocation's stream."""


def parse_event_id(value: str) -> tuple[int, int]:
    """``"<attempt>:<seq>"`` as two ints; ValueError if it is not one."""
    attempt, sep, seq = value.partition(":")
    if not (sep and attempt.isdigit() and seq.isdigit()) or int(attempt) < 1:
        raise ValueError(f"{value!r} is not a stream event id (they look like 3:17)")
    return int(attempt), int(seq)


class StreamReader:
    """Reads an invocation's chunk stream as events, after the event ``after`` if given."""

    def __init__(self, runtime: Runtime, invocation: str, after: str | None = None) -> None:
        self.store = runtime.store
        self.stream = chunk_stream(invocation)
        self.position = 0
        self._after = parse_event_id(after) if after else None
        self._names: dict[int, str] = {}  # attempt -> step name, for the attempts begun
        self._superseded: set[int] = set()
        self._ended: set[int] = set()

    async def poll(self) -> list[StreamEvent]:
        """The events of the records appended since the last poll (on the first poll with
        ``after``: only those after that event; `UnknownEventId` if it is not stored)."""
        events: list[StreamEvent] = []
        async for record in self.store.read(self.stream, self.position + 1):
            self.position = record.position
            for item in _decode_items(record.data):
                self._events(item, events)
        if self._after is not None:
            wanted = "{}:{}".format(*self._after)
            found = next((i for i, event in enumerate(events) if event.id == wanted), None)
            if found is None and self.position:
                raise UnknownEventId(
                    f"invocation stream {self.stream!r} holds no event {wanted!r} "
                    f"(resume from an event id this stream sent)"
                )
            self._after = None
            events = events[found + 1 :] if found is not None else []
        return events

    def _events(self, item: Item, out: list[StreamEvent]) -> None:
        if isinstance(item, Begin):
            if item.attempt in self._names:
                return  # a duplicate attempt number (two owners at once): the first counts
            self._names[item.attempt] = item.name
            if item.supersedes and item.supersedes not in self._superseded:
                self._superseded.add(item.supersedes)
                data = {"attempt": item.supersedes, "by": item.attempt, "step": item.name}
                out.append(StreamEvent("superseded", f"{item.attempt}:0", data))
            return
        if isinstance(item, Closed):
            return
        attempt = item.attempt
        if attempt not in self._names or attempt in self._superseded or attempt in self._ended:
            return  # late items of a replaced attempt (a former owner's) are not shown
        name = self._names[attempt]
        if isinstance(item, Chunks):
            for seq, chunk in enumerate(item.chunks, item.first):
                out.append(StreamEvent("chunk", f"{attempt}:{seq}", _decode_any(chunk)))
        elif isinstance(item, Result):
            self._ended.add(attempt)
            data = {"step": name, "attempt": attempt, "value": _decode_any(item.value)}
            out.append(StreamEvent("result", f"{attempt}:{item.seq}", data))
        else:
            self._ended.add(attempt)
            error = {"type": item.error_type, "message": item.error}
            data = {"step": name, "attempt": attempt, "error": error}
            out.append(StreamEvent("failed", f"{attempt}:{item.seq}", data))


#: Seconds a subscriber's wait lasts before it looks again by itself (and the SSE endpoint
#: sends a keep-alive comment).
KEEPALIVE = 15.0
_ENDED = ("completed", "failed", "cancelled")


async def follow(
    runtime: Runtime,
    invocation: str,
    after: str | None = None,
    *,
    keepalive: float = KEEPALIVE,
    stop: anyio.Event | None = None,
) -> AsyncIterator[list[StreamEvent]]:
    """Yield lists of events of ``invocation``'s stream as they are appended (an empty
    list after ``keepalive`` seconds without any), then a last list ending with an
    ``end`` event once the invocation has ended and every chunk was read. Returns early,
    without an ``end``, when ``stop`` is set (the server is shutting down).

    The status is looked at before each read: once it says ended, everything the
    invocation streamed is in the journal (a streaming step's last write is durable
    before it returns), so that read is the last."""
    streams = runtime.streams
    reader = StreamReader(runtime, invocation, after)
    while stop is None or not stop.is_set():
        appended = streams.watch(reader.stream)
        try:
            status = await runtime.invocation(invocation)
            if status is None:
                raise UnknownEventId(f"no invocation {invocation!r} was accepted")
            events = await reader.poll()
            if status.state in _ENDED:
                events.append(StreamEvent("end", "end", _end(status)))
                yield events
                return
            yield events
            waits: list[Callable[[], Awaitable[Any]]]
            waits = [appended.wait, lambda: _ended(runtime, invocation)]
            await _first([*waits, stop.wait] if stop is not None else waits, keepalive)
        finally:
            streams.unwatch(reader.stream, appended)


def _end(status: InvocationStatus) -> dict[str, Any]:
    data: dict[str, Any] = {"state": status.state, "result": to_json(status.result)}
    if status.error is not None:
        data["error"] = {"type": status.error_type, "message": status.error}
    return data


async def _ended(runtime: Runtime, invocation: str) -> None:
    try:
        await runtime.result(invocation)
    except ActorStuckError:  # not ended: only new chunks, or the keep-alive, end the wait
        await anyio.sleep(math.inf)
    except Exception:
        pass  # failed or cancelled: ended


async def _first(waits: list[Callable[[], Awaitable[Any]]], within: float) -> None:
    """Return when the first of ``waits`` returns, or after ``within`` seconds."""
    with anyio.move_on_after(within):
        async with anyio.create_task_group() as group:

            async def run(wait: Callable[[], Awaitable[Any]]) -> None:
                await wait()
                group.cancel_scope.cancel()

            for wait in waits:
                group.start_soon(run, wait)
