"""What `actorflow journal inspect TYPE/KEY` reads: one actor's journal, from the store
alone, damaged records included (shown as damaged, never a crash).

The entries are those the server's journal view shows (the actor stream: turns, steps with
their attempts, retries and errors, timers with their due time, compensations; then the
inbox: messages, events, cancellations), preceded by the actor's checkpoint (its snapshot)
and followed by its invocations' outcomes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from actorflow._events import (
    ACTOR_CODEC,
    INBOX_CODEC,
    OUTCOME_CODEC,
    ActorSnapshot,
    actor_stream,
    inbox_stream,
    outcomes_stream,
)
from actorflow.cli._entries import iso
from actorflow.runtime._quarantine import existing_streams, plain
from journal import Codec, JournalError, Salvaged, Store

#: The streams shown, in the order shown: label, stream of an actor, codec.
SHOWN: tuple[tuple[str, Callable[[str], str], Codec[Any]], ...] = (
    ("actor", actor_stream, ACTOR_CODEC),
    ("inbox", inbox_stream, INBOX_CODEC),
    ("outcome", outcomes_stream, OUTCOME_CODEC),
)


class Entry(msgspec.Struct, frozen=True):
    """One record of the actor's journal as read offline. ``data`` is what it decodes to
    (empty when it is damaged, ``damage`` says how, or cannot be decoded,
    ``decode_error`` says why); ``at`` its time in seconds since the epoch (0: none
    recorded), ``time`` the same in ISO 8601 UTC."""

    stream: str
    position: int
    global_position: int
    type: str
    at: float
    time: str
    data: dict[str, Any]
    damage: str | None = None
    decode_error: str | None = None


class UnknownActor(Exception):
    """The journal holds no stream of this actor."""


async def check_known(store: Store, actor_id: str) -> None:
    """Raise `UnknownActor` if the journal holds nothing of ``actor_id``."""
    if not await existing_streams(store, actor_id):
        raise UnknownActor(actor_id)


async def checkpoint(store: Store, actor_id: str) -> Entry | None:
    """The actor's checkpoint (its actor stream's snapshot) as an entry, if it has one."""
    snapshot = await store.salvage_snapshot(actor_stream(actor_id))
    if snapshot is None:
        return None
    data: dict[str, Any] = {"bytes": len(snapshot.data)}
    error = None
    if snapshot.damage is None:
        try:
            found = msgspec.msgpack.decode(snapshot.data, type=ActorSnapshot)
        except msgspec.DecodeError as exc:
            error = str(exc)
        else:
            data |= {
                "turn": found.turn,
                "inbox_done": found.inbox_done,
                "version": found.version,
                "state_parts": len(found.parts),
                "pending_events": len(found.pending),
                "attention": list(found.attention),
                "continuation": None
                if found.continuation is None
                else found.continuation.invocation,
            }
    return Entry(
        "checkpoint", snapshot.position, 0, "snapshot", 0.0, "-", data, snapshot.damage, error
    )


def entry_of(label: str, record: Salvaged, codec: Codec[Any]) -> Entry:
    """One stored record as an entry: decoded, unless damaged or undecodable."""
    if record.damage is not None:
        return _entry(label, record, {}, record.damage, None)
    try:
        value = codec.decode_payload(record.type, record.data, record.stream, record.position)
    except JournalError as exc:
        return _entry(label, record, {}, None, str(exc))
    try:
        data = plain(value)
    except msgspec.DecodeError as exc:  # an embedded value that is not MessagePack
        return _entry(label, record, {}, None, f"{record.type}: {exc}")
    return _entry(label, record, data, None, None)


def _entry(
    label: str, record: Salvaged, data: dict[str, Any], damage: str | None, error: str | None
) -> Entry:
    at = data.pop("at", 0.0) if isinstance(data.get("at"), int | float) else 0.0
    return Entry(
        label,
        record.position,
        record.global_position,
        record.type,
        float(at or 0.0),
        iso(at),
        data,
        damage,
        error,
    )


async def entries_after(
    store: Store, actor_id: str, after: dict[str, int]
) -> list[tuple[str, Entry]]:
    """Each shown stream's records after the position ``after`` holds for its label (0:
    all), in stream order; updates ``after`` to the last position read."""
    found: list[tuple[str, Entry]] = []
    for label, stream_of, codec in SHOWN:
        start = after.get(label, 0) + 1
        async for record in store.salvage(stream_of(actor_id), start):
            found.append((label, entry_of(label, record, codec)))
            after[label] = record.position
    return found


def outcome_line(data: dict[str, Any]) -> str:
    """An outcome (`InvocationEnded`) in a few words."""
    reply = data.get("reply") or {}
    if reply.get("ok"):
        how = "completed"
    elif reply.get("cancelled"):
        how = "cancelled"
    else:
        how = "failed"
    error = reply.get("error") or {}
    detail = f": {error.get('type')}: {error.get('message')}" if error else ""
    retry = " (retryable)" if data.get("seed") else ""
    return f"{data.get('invocation')} (turn {data.get('turn')}) {how}{detail}{retry}"


def checkpoint_line(entry: Entry) -> str:
    """The checkpoint in a few words."""
    data = entry.data
    if entry.damage is not None or entry.decode_error is not None:
        return f"checkpoint covering actor position {entry.position}"
    text = (
        f"checkpoint after turn {data['turn']}, covering actor position {entry.position} and "
        f"inbox through {data['inbox_done']}; {data['bytes']} bytes"
    )
    if data["state_parts"]:
        text += f", state in {data['state_parts']} parts"
    if data["continuation"]:
        text += f"; continues {data['continuation']}"
    return text
