"""A runtime whose step returns a large document, meant to be killed and restarted.

Run as ``python -m tests.runtime.big_value_child JOURNAL MODE SIZE``. In mode ``run`` it
sends ``Doc.fetch(SIZE)``, whose step returns `document(SIZE)` and whose turn then waits
for the event ``go``; once the turn waits (the step's result is journaled) it prints
``HELD <invocation>`` and waits to be killed. In mode ``finish`` (a new process on the
same journal) the step must not run again: it raises if it does. The child delivers
``go``, the turn replays the step from the journal and returns the SHA-256 of the value
it got back and its length, which the child prints as ``DONE <sha256> <length>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys

import actorflow
from journal import SqliteStore
from tests.runtime.support import reaches

MODE = sys.argv[2] if len(sys.argv) > 2 else "run"


def document(size: int) -> bytes:
    """``size`` deterministic bytes that do not repeat in any short period."""
    block = hashlib.sha256(b"doc").digest() * 32768  # 1 MiB
    return (
        bytes(b ^ (i % 251) for i, b in enumerate(block[:251])) * (size // 251)
        + block[: size % 251]
    )


def fetch_document(size: int) -> bytes:
    if MODE != "run":
        raise RuntimeError("the step ran again after the restart: its result was not replayed")
    return document(size)


class Doc(actorflow.Actor):
    @actorflow.handler
    async def fetch(self, size: int) -> str:
        data = await self.ctx.run(fetch_document, size)
        await self.ctx.wait_for("go")
        return f"{hashlib.sha256(data).hexdigest()} {len(data)}"


async def main(path: str, size: int) -> None:
    store = await SqliteStore.open(path)
    try:
        async with actorflow.Runtime(store, [Doc]) as rt:
            doc = rt.ref(Doc, "k")
            if MODE == "run":
                invocation = await doc.send(Doc.fetch, size)
                await reaches(doc, "waiting-event")
                print("HELD", invocation, flush=True)
                await asyncio.Event().wait()  # until killed
            else:
                invocation = sys.argv[4]
                await doc.deliver("go")
                answer = await rt.result(invocation)
                print("DONE", answer, flush=True)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[3])))
