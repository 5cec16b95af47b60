"""What `actorflow serve` does about slow, idle and surplus connections.

uvicorn closes a keep-alive connection that stays silent after a response
(``timeout_keep_alive``), but it has no deadline for a request's head: a connection that
sends a partial request line, or trickles a header byte at a time, is held forever, and
each one holds a file descriptor. Its ``limit_concurrency`` answers 503 to every request
once the limit is reached, health checks included, while it goes on accepting (and
holding) connections. So `actorflow serve` runs uvicorn's own HTTP protocol with a
`ConnectionGuard` in front:

- **head deadline**: from the moment a connection opens, or its previous response ends,
  the next request's line and headers must arrive within ``header_timeout`` seconds,
  however the bytes trickle in; past it the connection is closed (with a 408 if part of a
  request had arrived, silently if nothing had).
- **connection limit**: at most ``max_connections`` are held open. When one more arrives,
  the connection that has waited longest for a request head (an idle keep-alive, a stalled
  head) is closed to make room, as nginx reuses idle keep-alive connections when it runs
  out; a connection whose request is being served is never closed for it. Only when every
  held connection is serving a request is the new one refused (503 with Retry-After). So a
  client holding slow connections cannot keep `/livez` out, and the process never runs
  out of file descriptors for its journal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
import time
from typing import Any, ClassVar

import msgspec

from actorflow.server._responses import ambiguous_framing

log = logging.getLogger("actorflow.serve")

#: Seconds a request's line and headers may take to arrive.
DEFAULT_HEADER_TIMEOUT = 10.0
#: Seconds a keep-alive connection may stay silent after a response (uvicorn's default).
DEFAULT_KEEP_ALIVE = 5
#: Connections held open at most, unless the open-file limit allows fewer (see
#: `default_max_connections`).
DEFAULT_MAX_CONNECTIONS = 1000
#: File descriptors kept back from connections for the journal, logs and step functions.
RESERVED_FILES = 128
#: Largest request head (request line and headers), in bytes: h11's own default, stated,
#: and enforced by `GuardedConnection` under httptools (whose parser has no such limit).
MAX_HEAD_BYTES = 16 * 1024
#: Shortest pause between two log lines about connections closed by the guard.
LOG_EVERY = 10.0


def open_file_limit() -> int:
    """The process's soft limit on open files (``ulimit -n``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def default_max_connections() -> int:
    """`DEFAULT_MAX_CONNECTIONS`, or half the open-file limit if that is lower: the other
    half stays for the journal, the logs and what step functions open."""
    return max(1, min(DEFAULT_MAX_CONNECTIONS, open_file_limit() // 2))


def check_max_connections(wanted: int) -> str | None:
    """Why ``wanted`` connections cannot be held under this process's open-file limit, or
    None if they can."""
    limit = open_file_limit()
    if wanted + RESERVED_FILES <= limit:
        return None
    return (
        f"--max-connections {wanted} does not fit the open-file limit of {limit} (ulimit -n): "
        f"each connection takes a file descriptor, and {RESERVED_FILES} stay for the journal "
        f"and step functions. Raise the limit (ulimit -n {wanted + RESERVED_FILES}) or lower "
        f"--max-connections to {max(1, limit - RESERVED_FILES)} or less"
    )


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """How long a request head may take, how long an idle keep-alive connection is kept,
    and how many connections are held open at most."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    keep_alive: int = DEFAULT_KEEP_ALIVE
    max_connections: int = DEFAULT_MAX_CONNECTIONS


@dataclasses.dataclass
class GuardCounts:
    """What the guard closed, since the server started."""

    timed_out: int = 0
    evicted: int = 0
    refused: int = 0


_json = msgspec.json.Encoder()


def _error_response(status: str, kind: str, message: str, retry_after: int | None) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection, in the API's JSON
    error shape."""
    body = _json.encode({"error": {"type": kind, "message": message}})
    head = [
        f"HTTP/1.1 {status}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class ConnectionGuard:
    """The head deadline and the connection limit, for every connection of one server.

    Connections waiting for a request head sit in ``_waiting`` in the order they began to
    wait (so with one timeout, in deadline order too): a single timer closes those past
    their deadline, and the first one is the one to close when a new connection needs room.
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.counts = GuardCounts()
        self._open: set[GuardedConnection] = set()
        self._waiting: dict[GuardedConnection, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._logged = GuardCounts()
        self._last_log = 0.0

    @property
    def open(self) -> int:
        """How many connections are held open."""
        return len(self._open)

    def opened(self, conn: GuardedConnection) -> None:
        """A connection was accepted: make room for it, or refuse it."""
        if len(self._open) >= self.limits.max_connections and not self._evict_one():
            self.counts.refused += 1
            message = (
                f"this server holds {self.limits.max_connections} connections, all serving "
                f"requests (actorflow serve --max-connections); retry shortly"
            )
            response = _error_response("503 Service Unavailable", "busy", message, 1)
            conn.close_with(response, always=True)
            self._note()
            return
        self._open.add(conn)
        self.waiting(conn)

    def waiting(self, conn: GuardedConnection) -> None:
        """``conn`` waits for the head of its next request, from now on."""
        if conn not in self._open:
            return
        self._waiting.pop(conn, None)
        deadline = time.monotonic() + self.limits.header_timeout
        self._waiting[conn] = deadline
        if self._timer is None:
            self._arm(deadline)

    def serving(self, conn: GuardedConnection) -> None:
        """``conn`` sent a request head: no deadline (the app answers it)."""
        self._waiting.pop(conn, None)

    def closed(self, conn: GuardedConnection) -> None:
        """``conn`` is gone."""
        self._open.discard(conn)
        self._waiting.pop(conn, None)

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for a request head, if any."""
        if not self._waiting:
            return False
        oldest = next(iter(self._waiting))
        self.counts.evicted += 1
        message = (
            f"this server holds its limit of {self.limits.max_connections} connections "
            f"(actorflow serve --max-connections) and closed this one, which had not sent "
            f"its request headers in full; send them at once when you reconnect"
        )
        oldest.close_with(_error_response("503 Service Unavailable", "busy", message, 1))
        self.closed(oldest)
        self._note()
        return True

    def _arm(self, deadline: float) -> None:
        delay = max(0.0, deadline - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        """Close every connection past its head deadline; wake again for the next one."""
        self._timer = None
        now = time.monotonic()
        message = (
            f"the request line and headers did not arrive within "
            f"{self.limits.header_timeout:g} s of the connection being ready for them "
            f"(actorflow serve --header-timeout); send a request's head at once"
        )
        response = _error_response("408 Request Timeout", "request_timeout", message, None)
        while self._waiting:
            conn, deadline = next(iter(self._waiting.items()))
            if deadline > now:
                self._arm(deadline)
                break
            self.counts.timed_out += 1
            conn.close_with(response)
            self.closed(conn)
        self._note()

    def _note(self) -> None:
        """Log what the guard closed, at most every `LOG_EVERY` seconds."""
        now = time.monotonic()
        if now - self._last_log < LOG_EVERY:
            return
        counts, before = self.counts, self._logged
        if counts == before:
            return
        self._last_log = now
        log.warning(
            "event=connections-closed timed_out=%d evicted=%d refused=%d open=%d "
            "max_connections=%d header_timeout_s=%g",
            counts.timed_out - before.timed_out,
            counts.evicted - before.evicted,
            counts.refused - before.refused,
            len(self._open),
            self.limits.max_connections,
            self.limits.header_timeout,
        )
        self._logged = dataclasses.replace(counts)


class GuardedConnection:
    """Mixed in before uvicorn's HTTP/1.1 protocol class (httptools' when it is installed,
    as it is with actorflow, else h11's): tells the guard when the connection waits for a
    request head and when it is serving one, and makes both parsers refuse the same heads.

    It relies on what both of uvicorn's protocols share: ``transport``, ``cycle`` (the
    latest request, whose ``response_complete`` says it was answered), and the
    ``connection_made``, ``data_received``, ``on_response_complete``,
    ``send_400_response`` and ``connection_lost`` hooks.
    """

    guard: ClassVar[ConnectionGuard]
    transport: asyncio.Transport
    cycle: Any
    #: Whether part of the next request has arrived (then a timeout is answered 408).
    _partial = False
    #: What arrived since the connection last began to wait for a request head (at most
    #: `MAX_HEAD_BYTES` and one read), and the read being parsed.
    _head = b""
    _reading = b""

    def _idle(self) -> bool:
        """Whether no request is being served (the next one's head is awaited)."""
        return self.cycle is None or bool(self.cycle.response_complete)

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self.guard.opened(self)

    def data_received(self, data: bytes) -> None:
        idle = self._idle()
        self._reading = data
        super().data_received(data)  # type: ignore[misc]
        self._reading = b""
        if self._idle():
            self._partial = self._partial or (idle and bool(data))
            self._head += data
            if len(self._head) > MAX_HEAD_BYTES and not self.transport.is_closing():
                # (h11 refuses such a head itself; httptools' parser would read on)
                self.send_400_response("Invalid HTTP request received.")
        else:
            self._partial = False
            self._head = b""
            self.guard.serving(self)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request its parser refused. A request framed by both
        Content-Length and Transfer-Encoding, which httptools refuses before the ASGI
        guard sees it, gets the guard's answer (``ambiguous_framing``) all the same."""
        lines = (self._head + self._reading).partition(b"\r\n\r\n")[0].split(b"\r\n")
        names = {line.partition(b":")[0].strip().lower() for line in lines[1:]}
        if b"content-length" in names and b"transfer-encoding" in names:
            refusal = ambiguous_framing()
            self.close_with(
                _error_response("400 Bad Request", refusal.kind, refusal.message, None),
                always=True,
            )
            return
        super().send_400_response(msg)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._head = b""
        if self._idle() and not self.transport.is_closing():
            self.guard.waiting(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.closed(self)
        super().connection_lost(exc)  # type: ignore[misc]

    def close_with(self, response: bytes, *, always: bool = False) -> None:
        """Close the connection, first writing ``response`` if part of a request came (or
        ``always``): a connection that sent nothing is closed silently, as an idle
        keep-alive connection is."""
        if self.transport.is_closing():
            return
        if self._partial or always:
            self.transport.write(response)
        self.transport.close()


def guarded_protocol(base: type[asyncio.Protocol], guard: ConnectionGuard) -> type[Any]:
    """uvicorn's HTTP protocol class ``base``, run under ``guard``."""
    return type(f"Guarded{base.__name__}", (GuardedConnection, base), {"guard": guard})
