"""Client idempotency keys: one claim stream per key, and their retention.

A send with an ``Idempotency-Key`` claims the stream ``idempotency/<actor>/<key>`` at
position 0 in the same transaction that accepts the message, so two sends with one key
can never both be accepted. The claim remembers a fingerprint of the request: a retry
with the same request gets the first invocation, a different request with the same key
is refused. Every claim is also listed, in order, on the ``idempotency-log`` stream;
a sweep deletes the claims older than the retention period (24 hours by default, as
payment APIs keep theirs), so the keys do not accumulate forever.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import msgspec

from actorflow._errors import IdempotencyKeyReused, InvalidMessageError
from actorflow._events import (
    CLAIM_LOG,
    CLAIM_LOG_CODEC,
    IDEMPOTENCY_CODEC,
    ClaimMade,
    IdempotencyClaim,
    idempotency_stream,
)
from actorflow._values import fingerprint
from journal import Store, StreamAppend

#: How long a client idempotency key stays bound to its invocation, by default.
DEFAULT_RETENTION = 24 * 3600.0
#: Idempotency keys: 1 to 200 printable characters.
MAX_KEY = 200

log = logging.getLogger("actorflow")


def check_key(key: object) -> None:
    """Refuse a client idempotency key that is not 1 to `MAX_KEY` printable characters."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY or not key.isprintable():
        raise InvalidMessageError(
            f"idempotency key {key!r} must be 1 to {MAX_KEY} printable characters"
        )


def request_fingerprint(handler: str, args: bytes, deadline: float | None) -> int:
    """A fingerprint of what a keyed send asks for (arguments in canonical form, so the
    same JSON object with its keys in another order is the same request)."""
    return fingerprint([handler, msgspec.msgpack.decode(args), deadline])


def claim_parts(
    actor_id: str, key: str, invocation: str, request: int, at: float
) -> list[StreamAppend]:
    """The appends that claim ``key`` for ``invocation`` (with the accepting message)."""
    stream = idempotency_stream(actor_id, key)
    claim = IDEMPOTENCY_CODEC.encode(IdempotencyClaim(invocation, request, at))
    logged = CLAIM_LOG_CODEC.encode(ClaimMade(stream, at))
    return [
        StreamAppend(stream, (claim,), expected_position=0),
        StreamAppend(CLAIM_LOG, (logged,)),
    ]


async def claimed(store: Store, stream: str, key: str, request: int, actor_id: str) -> str | None:
    """The invocation ``key`` was first claimed for, if this is the same request; raise
    `IdempotencyKeyReused` if it was claimed for another. None if the claim is gone
    (it expired meanwhile)."""
    async for batch in store.read_batches(stream):
        claim = IDEMPOTENCY_CODEC.decode(batch[0])
        if claim.fingerprint and request and claim.fingerprint != request:
            raise IdempotencyKeyReused(
                f"idempotency key {key!r} was first used for a different request to "
                f"{actor_id} (another handler, other arguments or another deadline), which "
                f"is invocation {claim.invocation}; a key stands for one request. Send a new "
                f"request with a new key."
            )
        return claim.invocation
    return None


async def sweep(store: Store, retention: float, now: float) -> int:
    """Delete the claims made more than ``retention`` seconds before ``now``; return how
    many. The log is read from its start (what earlier sweeps left) and truncated behind
    the last claim deleted."""
    cutoff = now - retention
    deleted = 0
    swept_to = 0
    async for batch in store.read_batches(CLAIM_LOG):
        for record in batch:
            made = CLAIM_LOG_CODEC.decode(record)
            if made.at > cutoff:
                return await _forget(store, swept_to, deleted)
            if await _made_at(store, made.stream) == made.at:  # not a newer claim of the key
                await store.delete_stream(made.stream)
                deleted += 1
            swept_to = record.position
    return await _forget(store, swept_to, deleted)


async def _made_at(store: Store, stream: str) -> float | None:
    async for batch in store.read_batches(stream):
        return IDEMPOTENCY_CODEC.decode(batch[0]).at
    return None


async def _forget(store: Store, through: int, deleted: int) -> int:
    if through:
        await store.save_snapshot(CLAIM_LOG, through, b"")
        await store.truncate(CLAIM_LOG, through)
    return deleted


async def sweep_until(
    stopping: anyio.Event, retention: float, expire: Callable[[], Awaitable[int]]
) -> None:
    """Call ``expire`` every so often (a 24th of the retention, from 1 s to 1 h) until
    ``stopping`` is set; a failing sweep is logged and tried again next time."""
    every = min(max(retention / 24, 1.0), 3600.0)
    while True:
        with anyio.move_on_after(every):
            await stopping.wait()
        if stopping.is_set():
            return
        try:
            swept = await expire()
        except Exception as exc:  # the journal failing: try again next round
            log.warning("idempotency key retention sweep failed: %s", exc)
            continue
        if swept:
            log.info("forgot %d idempotency keys older than %g s", swept, retention)
