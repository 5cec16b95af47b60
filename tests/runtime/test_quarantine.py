"""A damaged record takes down its actor, not the runtime: the actor is quarantined (status
``corrupt``, with the stream and position of the damage) and refuses all work, while every
other actor recovers and goes on. An operator exports what can be read and resets it.

The damage is real: one byte of a stored record (or snapshot) flipped in the journal file,
through a plain SQLite connection, so that it no longer matches its checksum.
"""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
from collections.abc import Iterator

import anyio
import pytest

from actorflow import (
    Actor,
    ActorCorruptError,
    ActorStuckError,
    Damage,
    QuarantinedStatus,
    Runtime,
    handler,
)
from actorflow.runtime import _quarantine
from journal import SqliteStore
from tests.runtime.faults import DamagingStore
from tests.runtime.support import eventually, reaches, running

pytestmark = pytest.mark.anyio


class Worker(Actor):
    @handler
    async def work(self, n: int) -> str:
        first = await self.ctx.run(lambda: f"first {n}", name="first")
        await self.ctx.wait_for("go")
        second = await self.ctx.run(lambda: f"second {n}", name="second")
        return f"{first}, {second}"

    @handler
    async def ping(self) -> str:
        return "pong"


@contextlib.contextmanager
def file_rows(path: pathlib.Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def flip_record(path: pathlib.Path, stream: str, position: int | None = None) -> int:
    """Flip one byte of a record of ``stream`` (its last, unless ``position``) in the
    journal file; return the record's position."""
    with file_rows(path) as conn:
        global_position, found, data = conn.execute(
            "SELECT r.global_position, r.position, r.data FROM records r "
            "JOIN streams s ON s.id = r.stream_id WHERE s.name = ? AND r.position <= ? "
            "ORDER BY r.position DESC LIMIT 1",
            (stream, position or 2**62),
        ).fetchone()
        damaged = bytearray(data)
        damaged[len(damaged) // 2] ^= 0xFF
        conn.execute(
            "UPDATE records SET data = ? WHERE global_position = ?",
            (bytes(damaged), global_position),
        )
    return int(found)


def flip_snapshot(path: pathlib.Path, stream: str) -> int:
    """Flip one byte of ``stream``'s snapshot in the journal file; return its position."""
    with file_rows(path) as conn:
        sid, position, data = conn.execute(
            "SELECT p.stream_id, p.position, p.data FROM snapshots p "
            "JOIN streams s ON s.id = p.stream_id WHERE s.name = ?",
            (stream,),
        ).fetchone()
        damaged = bytearray(data)
        damaged[len(damaged) // 2] ^= 0xFF
        conn.execute("UPDATE snapshots SET data = ? WHERE stream_id = ?", (bytes(damaged), sid))
    return int(position)


def is_quarantined(
    status: object, stream: str, position: int, detail: str = "checksum mismatch"
) -> bool:
    return (
        isinstance(status, QuarantinedStatus)
        and status.state == "corrupt"
        and status.damage == Damage(stream, position, detail)
    )


async def test_a_damaged_actor_is_quarantined_while_the_others_recover(db: pathlib.Path) -> None:
    keys = [f"w{n}" for n in range(5)]
    invocations: dict[str, str] = {}
    async with running(db, [Worker]) as rt:
        for n, key in enumerate(keys):
            invocations[key] = await rt.ref(Worker, key).send(Worker.work, n)
        for key in keys:
            await reaches(rt.ref(Worker, key), "waiting-event")
    position = flip_record(db, "actor/Worker/w2")

    async with running(db, [Worker]) as rt:  # recovery does not stop at the damage
        damaged = rt.ref(Worker, "w2")
        assert rt.metrics.recovered == 4
        status = await damaged.status()
        assert is_quarantined(status, "actor/Worker/w2", position), status
        assert status.error is not None
        assert f"stream 'actor/Worker/w2' position {position}" in status.error
        assert "actorflow export Worker/w2 --out FILE" in status.error
        assert "actorflow reset Worker/w2 --yes" in status.error
        assert [s.actor for s in await rt.list_actors(state="corrupt")] == ["Worker/w2"]
        assert rt.hosted()["Worker/w2"] == "corrupt"

        inbox_before = await rt.store.last_position("inbox/Worker/w2")
        refusals = {
            "send": lambda: damaged.send(Worker.ping),
            "deliver": lambda: rt.deliver(damaged.ref, "go"),
            "cancel": lambda: rt.cancel(invocations["w2"]),
            "retry": lambda: rt.retry(invocations["w2"]),
            "result": lambda: rt.result(invocations["w2"]),
            "invocation": lambda: rt.invocation(invocations["w2"]),
        }
        for what, call in refusals.items():
            with pytest.raises(ActorCorruptError) as refused:
                await call()
            assert isinstance(refused.value, ActorStuckError), what
            assert (refused.value.stream, refused.value.position) == ("actor/Worker/w2", position)
        assert await rt.store.last_position("inbox/Worker/w2") == inbox_before  # took nothing

        for key in keys:
            if key != "w2":
                await rt.deliver(rt.ref(Worker, key).ref, "go")
        for n, key in enumerate(keys):
            if key != "w2":
                assert await rt.result(invocations[key]) == f"first {n}, second {n}"

    async with running(db, [Worker]) as rt:  # the journal is the truth: found again
        assert is_quarantined(await rt.ref(Worker, "w2").status(), "actor/Worker/w2", position)


async def test_damage_found_when_an_actor_is_activated_quarantines_it(db: pathlib.Path) -> None:
    """An actor passivated while healthy, whose checkpoint is damaged afterwards: the next
    message is accepted (it was durable before anyone knew), activation finds the damage,
    and whoever waits for that message's result is refused, as is every later message."""
    async with running(db, [Worker], idle_timeout=0.01) as rt:
        actor = rt.ref(Worker, "p")
        assert await rt.result(await actor.send(Worker.ping)) == "pong"

        async def passivated() -> bool:
            return "Worker/p" not in rt.hosted()

        await eventually(passivated, "the actor to be passivated")
        position = flip_snapshot(db, "actor/Worker/p")
        accepted = await actor.send(Worker.ping)
        with anyio.fail_after(5), pytest.raises(ActorCorruptError):
            await rt.result(accepted)

        status = await actor.status()
        assert is_quarantined(status, "actor/Worker/p", position, "snapshot checksum mismatch")
        with pytest.raises(ActorCorruptError, match="snapshot checksum mismatch"):
            await actor.send(Worker.ping)


async def test_an_operator_exports_a_damaged_actor_and_resets_it(db: pathlib.Path) -> None:
    async with running(db, [Worker]) as rt:
        actor = rt.ref(Worker, "e")
        ping = await actor.options(idempotency_key="key-1").send(Worker.ping)
        assert await rt.result(ping) == "pong"
        await actor.send(Worker.work, 7)
        await reaches(actor, "waiting-event")
        await rt.ref(Worker, "bystander").send(Worker.ping)
    position = flip_record(db, "actor/Worker/e")

    async with await SqliteStore.open(db, read_only=True) as store:
        lines = [line async for line in _quarantine.export(store, "Worker/e")]
    streams = {(line.stream, line.kind) for line in lines}
    assert streams == {
        ("actor/Worker/e", "snapshot"),
        ("actor/Worker/e", "record"),
        ("inbox/Worker/e", "record"),
        ("outcomes/Worker/e", "record"),
        ("idempotency/Worker/e/key-1", "record"),
    }
    [bad] = [line for line in lines if line.damage is not None]
    assert (bad.stream, bad.position) == ("actor/Worker/e", position)
    assert bad.damage == "checksum mismatch"
    assert bad.entry is None
    assert bad.data  # the bytes as stored, for whoever repairs it by hand
    good = [line for line in lines if line.damage is None]
    assert all(line.entry is not None and line.decode_error is None for line in good)
    [message] = [line for line in good if line.stream == "inbox/Worker/e" and line.position == 2]
    assert message.entry["handler"] == "work"
    assert message.entry["args"] == {"n": 7}

    async with await SqliteStore.open(db) as store:
        commits = store.stats.commits
        deleted = await _quarantine.reset(store, "Worker/e")
        assert store.stats.commits == commits + 1  # all or nothing
        assert deleted == [  # the damaged stream last
            "inbox/Worker/e",
            "outcomes/Worker/e",
            "idempotency/Worker/e/key-1",
            "actor/Worker/e",
        ]
        assert await _quarantine.reset(store, "Worker/e") == []
        assert await store.list_streams("inbox/") == ["inbox/Worker/bystander"]

    async with running(db, [Worker]) as rt:  # afresh: no state, no history, no damage
        actor = rt.ref(Worker, "e")
        status = await actor.status()
        assert (status.state, status.turns, type(status)) == ("idle", 0, type(status))
        assert not isinstance(status, QuarantinedStatus)
        again = await actor.options(idempotency_key="key-1").send(Worker.ping)
        assert again != ping  # the key was forgotten with the rest
        assert await rt.result(again) == "pong"
        assert (await rt.store.verify()).ok


class Swallower(Actor):
    """Handler code that catches every exception while it waits: damage found under its
    turn must stop the turn, never reach this `except`."""

    @handler
    async def wait(self) -> str:
        try:
            await self.ctx.wait_for("go")
        except Exception as exc:
            return f"swallowed {type(exc).__name__}"
        return "went"


async def test_damage_found_during_a_turn_stops_the_turn_and_quarantines_the_actor(
    db: pathlib.Path,
) -> None:
    """The event a waiting turn reads is damaged on disk: the turn is stopped (its handler
    never sees the error, so it cannot journal a result built on it) and the actor is
    quarantined, with the inbox position of the damage."""
    store = DamagingStore(await SqliteStore.open(db), db, "inbox/Swallower/s")
    try:
        async with Runtime(store, [Swallower]) as rt:  # type: ignore[arg-type]
            actor = rt.ref(Swallower, "s")
            waiting = await actor.send(Swallower.wait)
            await reaches(actor, "waiting-event")
            store.armed = True
            await rt.deliver(actor.ref, "go")
            with anyio.fail_after(5), pytest.raises(ActorCorruptError):
                await rt.result(waiting)
            status = await actor.status()
            assert is_quarantined(status, "inbox/Swallower/s", 2), status
            outcomes = [r async for r in store.salvage("outcomes/Swallower/s")]
            assert outcomes == []  # no result was journaled for the turn
    finally:
        await store.close()
