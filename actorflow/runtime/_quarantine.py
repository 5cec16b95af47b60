"""Quarantine: a damaged journal takes down its actor, never the runtime.

A record of an actor's journal that fails its checksum (`journal.CorruptionError`: a
flipped bit on disk, a torn copy) cannot be replayed, and guessing would be worse than
stopping. The actor is quarantined instead: its status says ``corrupt`` with the stream and
position of the damage, and it refuses messages, events, cancellations and result waits
with `ActorCorruptError` (HTTP 409 ``actor_corrupt``) until it is repaired. Every other
actor is recovered and served as usual.

The operator then exports what can be read (`export`: the records as JSON lines, the damaged
ones as their raw bytes) and either restores the journal from a backup or starts the actor
afresh (`reset`: its streams deleted). Quarantine is not stored anywhere: the journal is the
truth, and each start finds the damage again until it is repaired.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

import anyio
import msgspec

from actorflow._errors import ActorStuckError
from actorflow._events import (
    ACTOR_CODEC,
    IDEMPOTENCY_CODEC,
    INBOX_CODEC,
    OUTCOME_CODEC,
    STATE_CODEC,
    ActorSnapshot,
    actor_stream,
    idempotency_stream,
    inbox_stream,
    outcomes_stream,
    state_stream,
)
from actorflow.runtime import _inspect
from actorflow.runtime._inspect import JournalView
from actorflow.runtime._status import Damage, QuarantinedStatus
from journal import Codec, CorruptionError, JournalError, Salvaged, Store

if TYPE_CHECKING:
    from actorflow.runtime._host import ActorHost
    from actorflow.runtime._runtime import Runtime

log = logging.getLogger("actorflow")


class ActorCorruptError(ActorStuckError):
    """The actor's journal is damaged: it is quarantined and accepts nothing until an
    operator repairs it (restores the journal, or resets the actor)."""

    def __init__(self, actor: str, stream: str, position: int, detail: str) -> None:
        self.actor = actor
        self.stream = stream
        self.position = position
        self.detail = detail
        super().__init__(
            f"actor {actor} is quarantined: its journal is damaged at stream {stream!r} "
            f"position {position} ({detail}), so it cannot be replayed. It accepts no "
            f"messages, events, cancellations or result waits until it is repaired; other "
            f"actors are not affected. Export what can be read with `actorflow export "
            f"{actor} --out FILE`, then restore the journal from a backup, or start the "
            f"actor afresh with `actorflow reset {actor} --yes` (which deletes its state, "
            f"queued messages and results) while no server has the journal open."
        )

    @classmethod
    def of(cls, actor: str, damage: Damage) -> ActorCorruptError:
        """The error that refuses work for ``actor``, damaged as ``damage`` says."""
        return cls(actor, damage.stream, damage.position, damage.detail)


def damage_of(exc: CorruptionError) -> Damage:
    """Where the journal is damaged, as an actor's status reports it."""
    return Damage(exc.stream, exc.position, exc.detail)


def quarantine(host: ActorHost, damage: Damage) -> None:
    """Set ``host``'s actor apart: its journal is damaged where ``damage`` says. It refuses
    all work from now on, and whoever waits for its results is woken (to be refused)."""
    host.damage = damage
    host.stuck = ActorCorruptError.of(host.actor_id, damage)
    host.state = "corrupt"
    host.activated.set()
    log.error("%s", host.stuck)
    host.runtime.actor_stuck(host.actor_id)


def refusal(host: ActorHost) -> ActorStuckError:
    """Why a stuck or quarantined actor refuses work."""
    if host.damage is not None:
        return ActorCorruptError.of(host.actor_id, host.damage)
    return ActorStuckError(
        f"actor {host.actor_id} is stuck and accepts nothing until it is fixed: {host.stuck}"
    )


def status(host: ActorHost) -> QuarantinedStatus:
    """What a quarantined actor's status says: ``corrupt``, why, and where."""
    error = str(host.stuck)
    attention = list(host.attention)
    return QuarantinedStatus(
        host.actor_id,
        "corrupt",
        host.current,
        host.turns,
        error,
        attention,
        host.version or None,
        damage=host.damage,
    )


def quarantine_if_damaged(host: ActorHost, exc: BaseException) -> bool:
    """Quarantine ``host``'s actor if ``exc`` says its journal is damaged; whether it did."""
    if not isinstance(exc, CorruptionError):
        return False
    quarantine(host, damage_of(exc))
    return True


async def view(runtime: Runtime, actor_id: str) -> JournalView:
    """What the journal says of the actor, for recovery (see `_inspect.view`). If its
    journal is damaged, the actor is quarantined: hosted, ``corrupt``, never activated
    (so it has no work to recover)."""
    try:
        return await _inspect.view(runtime.store, actor_id)
    except CorruptionError as exc:
        from actorflow.runtime._host import ActorHost  # (_host imports this module)

        type_name, _, key = actor_id.partition("/")
        host = ActorHost(runtime, runtime.actor_types[type_name], key)
        runtime._hosts[actor_id] = host
        quarantine(host, damage_of(exc))
        return JournalView()


# -- export ---------------------------------------------------------------------------------


class ExportedRecord(msgspec.Struct, frozen=True):
    """One line of an export: a record (or the snapshot) of one of the actor's streams.

    ``data`` is the payload as stored (base64 in JSON), so nothing is lost even where it
    cannot be decoded; ``entry`` is what it decodes to, for reading, unless it is damaged
    (``damage`` says how) or cannot be decoded (``decode_error`` says why).
    """

    stream: str
    position: int
    kind: Literal["record", "snapshot"]
    type: str
    global_position: int
    damage: str | None
    data: bytes
    entry: Any = None
    decode_error: str | None = None


def actor_streams(actor_id: str) -> tuple[tuple[str, Codec[Any]], ...]:
    """The streams that are the actor, with the codec of each."""
    return (
        (actor_stream(actor_id), ACTOR_CODEC),
        (inbox_stream(actor_id), INBOX_CODEC),
        (outcomes_stream(actor_id), OUTCOME_CODEC),
        (state_stream(actor_id), STATE_CODEC),
    )


async def claim_streams(store: Store, actor_id: str) -> list[str]:
    """The actor's client idempotency key claims."""
    return await store.list_streams(idempotency_stream(actor_id, ""))


async def export(store: Store, actor_id: str) -> AsyncIterator[ExportedRecord]:
    """Every record of the actor's streams (its journal, inbox, outcomes and idempotency
    claims) and its checkpoint, as stored: damaged ones too, saying so."""
    snapshot = await store.salvage_snapshot(actor_stream(actor_id))
    if snapshot is not None:
        entry, error = None, None
        if snapshot.damage is None:
            entry, error = _decoded(_CHECKPOINT, snapshot.data)
        yield ExportedRecord(
            snapshot.stream, snapshot.position, "snapshot", "", 0, snapshot.damage,
            snapshot.data, entry, error,
        )  # fmt: skip
    streams = [*actor_streams(actor_id)]
    streams += [(stream, IDEMPOTENCY_CODEC) for stream in await claim_streams(store, actor_id)]
    for stream, codec in streams:
        async for record in store.salvage(stream):
            yield exported(record, codec)


def exported(record: Salvaged, codec: Codec[Any]) -> ExportedRecord:
    """One stored record as a line of an export (decoded unless it is damaged)."""
    entry, error = None, None
    if record.damage is None:
        entry, error = _decoded(codec, record)
    return ExportedRecord(
        record.stream, record.position, "record", record.type, record.global_position,
        record.damage, record.data, entry, error,
    )  # fmt: skip


_CHECKPOINT = msgspec.msgpack.Decoder(ActorSnapshot)


def _decoded(
    decoder: Codec[Any] | msgspec.msgpack.Decoder[Any], stored: Salvaged | bytes
) -> tuple[Any, str | None]:
    """What a record (or a checkpoint's bytes) decodes to, as plain data; else why not."""
    try:
        if isinstance(stored, bytes):
            assert isinstance(decoder, msgspec.msgpack.Decoder)
            return plain(decoder.decode(stored)), None
        assert isinstance(decoder, Codec)
        value = decoder.decode_payload(stored.type, stored.data, stored.stream, stored.position)
        return plain(value), None
    except (JournalError, msgspec.DecodeError) as exc:
        return None, str(exc)


def plain(value: Any) -> Any:
    """A decoded entry as plain data, its embedded MessagePack values decoded too."""
    if isinstance(value, msgspec.Raw):
        return plain(msgspec.msgpack.decode(value))
    if isinstance(value, msgspec.Struct):
        fields = ((field, getattr(value, field)) for field in value.__struct_fields__)
        return {field: plain(item) for field, item in fields if item is not msgspec.UNSET}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


# -- reset ----------------------------------------------------------------------------------


async def existing_streams(store: Store, actor_id: str) -> list[str]:
    """The actor's streams that exist (what `reset` would delete)."""
    named = [stream for stream, _ in actor_streams(actor_id)]
    return [s for s in named if await _exists(store, s)] + await claim_streams(store, actor_id)


async def reset(store: Store, actor_id: str) -> list[str]:
    """Delete the actor's streams (journal and checkpoint, inbox, outcomes, idempotency key
    claims), so that its next message starts it afresh; return the streams deleted.

    The deletions are queued together, so a SQLite journal commits them in one transaction:
    all or nothing. (Were they committed one by one and interrupted, a half-reset actor
    could replay old messages, or skip new ones; the damaged streams go last, so that it
    would still be quarantined, and resetting again finishes the job.)
    """
    found = await existing_streams(store, actor_id)
    damaged = [stream for stream in found if await _damaged(store, stream)]
    streams = [stream for stream in found if stream not in damaged] + damaged
    deleted: dict[str, bool] = {}

    async def delete(stream: str) -> None:
        deleted[stream] = await store.delete_stream(stream)

    async with anyio.create_task_group() as group:
        for stream in streams:
            group.start_soon(delete, stream)
    return [stream for stream in streams if deleted[stream]]


async def _exists(store: Store, stream: str) -> bool:
    info = await store.stream_info(stream)
    return bool(info.last_position or info.epoch)


async def _damaged(store: Store, stream: str) -> bool:
    snapshot = await store.salvage_snapshot(stream)
    if snapshot is not None and snapshot.damage is not None:
        return True
    async for record in store.salvage(stream):
        if record.damage is not None:
            return True
    return False
