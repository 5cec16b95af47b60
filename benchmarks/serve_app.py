"""What ``python -m benchmarks serve`` serves: two actors, and a bare ASGI app as a ceiling.

- ``actorflow serve benchmarks.serve_app`` hosts `Ping` (the ``http-send`` scenario: a
  handler that does nothing, so that the figure is what accepting a message costs) and
  `Napper` (the ``sigterm-exit`` scenario: a few steps, then a durable one-hour timer, so
  that each actor is mid-run, checkpointable, when SIGTERM comes).
- ``python -m uvicorn benchmarks.serve_app:ceiling_app`` serves `ceiling_app`: it reads
  each request's body and answers 202 with a JSON body the size and shape of the real
  answer, touching no journal and no actor: bare HTTP on the same server stack.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import actorflow

#: Steps `Napper.nap` takes before its timer.
NAP_STEPS = 3
#: How long `Napper.nap` sleeps: far longer than any benchmark.
NAP_SECONDS = 3600.0


class Ping(actorflow.Actor):
    """The ``http-send`` target."""

    @actorflow.handler
    async def ping(self, n: int = 0) -> int:
        """Take no step: the turn is the only work after the message is accepted."""
        return n


def tick(i: int) -> int:
    """`Napper`'s trivial step."""
    return i + 1


class Napper(actorflow.Actor, shutdown="checkpoint"):
    """The ``sigterm-exit`` agent: mid-run on a durable timer, checkpointed at SIGTERM."""

    @actorflow.handler
    async def nap(self, steps: int = NAP_STEPS) -> int:
        """Take ``steps`` trivial steps, then wait on a durable timer for an hour."""
        total = 0
        for i in range(steps):
            total += await self.ctx.run(tick, i, name="tick")
        await self.ctx.sleep(NAP_SECONDS, name="nap")
        return total


class Echo(actorflow.Actor):
    """The ``reads`` scenario's actor with a long history: each turn journals its text twice
    (the message, the result)."""

    @actorflow.handler
    async def echo(self, text: str) -> str:
        """Take no step; return ``text``."""
        return text


ACTORS = [Ping, Napper, Echo]


# -- the ceiling ----------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: A body shaped like the server's answer to a send (an `InvocationStatus`).
ACCEPTED = (
    b'{"invocation":"Ping/k-0000#0123456789abcdef01234567","actor":"Ping/k-0000",'
    b'"state":"queued","result":null,"error":null,"error_type":null,"compensated":[]}'
)
ALIVE = b'{"status":"alive"}'


async def ceiling_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer every POST 202 (after reading its body) and every GET 200; nothing stored."""
    if scope["type"] == "lifespan":  # pragma: no cover - served with --lifespan off
        while (await receive())["type"] != "lifespan.shutdown":
            pass
        return
    more = True
    while more:  # read the body, as the real server must before accepting
        message = await receive()
        more = message.get("more_body", False)
    post = scope["method"] == "POST"
    body = ACCEPTED if post else ALIVE
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if post:
        headers.append((b"location", b"/v1/actors/Ping/k-0000/invocations/0123456789abcdef"))
    await send({"type": "http.response.start", "status": 202 if post else 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
