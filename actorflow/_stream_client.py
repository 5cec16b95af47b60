"""Subscribing to an invocation's stream over HTTP (`Client.stream`, `SyncClient.stream`).

Reads the server-sent events of ``GET .../invocations/{id}/stream`` and, when the
connection drops or the server restarts (or answers 503 while starting or stopping),
reconnects with ``Last-Event-ID`` set to the last event received: the events come from
the journal, so nothing is missed or repeated. Gives up after ``reconnect_for`` seconds
without a connection.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import anyio
import httpx
import msgspec

from actorflow._stream import StreamEvent

#: Seconds a subscriber keeps trying to reconnect before giving up.
DEFAULT_RECONNECT_FOR = 60.0
#: Seconds of silence after which a connection counts as lost: the server sends a
#: keep-alive comment every 15 s.
READ_TIMEOUT = 45.0
_FIRST_PAUSE, _LONGEST_PAUSE = 0.05, 1.0
_decode = msgspec.json.Decoder().decode


class StreamInterrupted(ConnectionError):
    """The stream's server could not be reached again within ``reconnect_for`` seconds."""


class EventParser:
    """The text/event-stream format, a line at a time."""

    def __init__(self) -> None:
        self._id = ""
        self._kind = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> StreamEvent | None:
        """Take one line (without its end); return the event a blank line completes."""
        if not line:
            if not self._data:
                return None
            event = StreamEvent(self._kind, self._id, _decode("\n".join(self._data)))
            self._kind, self._data = "message", []
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            self._id = value
        elif field == "event":
            self._kind = value
        elif field == "data":
            self._data.append(value)
        return None


def stream_path(invocation_path: str) -> str:
    """The stream's URL path, from its invocation's."""
    return f"{invocation_path}/stream"


def _headers(last: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if last is not None:
        headers["Last-Event-ID"] = last
    return headers


class _Attempts:
    """When to reconnect, and when to give up."""

    def __init__(self, url: str, reconnect_for: float) -> None:
        self.url = url
        self.reconnect_for = reconnect_for
        self.pause = _FIRST_PAUSE
        self.since = time.monotonic()

    def connected(self) -> None:
        self.pause = _FIRST_PAUSE
        self.since = time.monotonic()

    def next_pause(self, cause: BaseException | str) -> float:
        if time.monotonic() - self.since > self.reconnect_for:
            raise StreamInterrupted(
                f"the stream at {self.url} could not be read again for "
                f"{self.reconnect_for:g} s: {cause}"
            )
        pause, self.pause = self.pause, min(_LONGEST_PAUSE, self.pause * 2)
        return pause


def _gone(response: httpx.Response) -> bool:
    """A 503: the server is starting or stopping; another (or it, soon) will answer."""
    return response.status_code == 503


def _events(lines: Iterable[str], parser: EventParser) -> Iterator[StreamEvent]:
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event


async def follow_async(
    http: httpx.AsyncClient,
    path: str,
    after: str | None,
    reconnect_for: float,
    refuse: Any,
) -> AsyncIterator[StreamEvent]:
    """Events of the stream at ``path`` (after event ``after``), until its ``end``.
    ``refuse(response)`` raises the error of a refusal (4xx, 5xx other than 503)."""
    last = after
    attempts = _Attempts(f"{http.base_url}{path}", reconnect_for)
    timeout = httpx.Timeout(http.timeout.connect, read=READ_TIMEOUT)
    while True:
        cause: BaseException | str
        try:
            async with http.stream("GET", path, headers=_headers(last), timeout=timeout) as got:
                if _gone(got):
                    cause = "503"
                else:
                    if got.status_code != 200:
                        await got.aread()
                        refuse(got)
                    attempts.connected()
                    parser = EventParser()
                    async for line in got.aiter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        last = event.id
                        yield event
                        if event.kind == "end":
                            return
                    cause = "the server closed the stream"
        except (httpx.TransportError, httpx.StreamError) as exc:
            cause = exc
        await anyio.sleep(attempts.next_pause(cause))


def follow_sync(
    http: httpx.Client, path: str, after: str | None, reconnect_for: float, refuse: Any
) -> Iterator[StreamEvent]:
    """`follow_async`, blocking."""
    last = after
    attempts = _Attempts(f"{http.base_url}{path}", reconnect_for)
    timeout = httpx.Timeout(http.timeout.connect, read=READ_TIMEOUT)
    while True:
        cause: BaseException | str
        try:
            with http.stream("GET", path, headers=_headers(last), timeout=timeout) as got:
                if _gone(got):
                    cause = "503"
                else:
                    if got.status_code != 200:
                        got.read()
                        refuse(got)
                    attempts.connected()
                    for event in _events(got.iter_lines(), EventParser()):
                        last = event.id
                        yield event
                        if event.kind == "end":
                            return
                    cause = "the server closed the stream"
        except (httpx.TransportError, httpx.StreamError) as exc:
            cause = exc
        time.sleep(attempts.next_pause(cause))
