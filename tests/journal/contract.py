"""The behaviour every journal store keeps, as one suite to subclass per backend.

A backend's test module subclasses `StoreContract` and implements `create_store` (and, for a
store that keeps nothing across close, overrides `reopen`); every test here then runs against
it on asyncio and on uvloop. The suite checks what docs/journal.md promises, through the public
`Store` API only, so a third-party store can run it unchanged.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import anyio
import anyio.lowlevel
import msgspec
import pytest

from journal import (
    DEFAULT_MAX_RECORD_BYTES,
    Appended,
    Codec,
    ConflictError,
    DecodeError,
    FencingError,
    InvalidStreamError,
    JournalError,
    NewRecord,
    Record,
    RecordTooLargeError,
    Salvaged,
    SalvagedSnapshot,
    Snapshot,
    SnapshotError,
    Store,
    StoreClosedError,
    StoreNotEmptyError,
    StreamAppend,
    StreamInfo,
)

# -- helpers ----------------------------------------------------------------------------------


def record(data: bytes, kind: str = "t") -> NewRecord:
    """A record with payload ``data`` and type tag ``kind``."""
    return NewRecord(type=kind, data=data)


def numbered(stream: str, first: int, count: int) -> list[NewRecord]:
    """``count`` records whose payloads say which stream and position they were written for."""
    return [record(f"{stream}#{n}".encode()) for n in range(first, first + count)]


async def read_list(
    store: Store, stream: str, from_position: int = 1, limit: int | None = None
) -> list[Record]:
    """Every record ``store.read`` yields."""
    return [r async for r in store.read(stream, from_position, limit=limit)]


async def batches_list(
    store: Store, stream: str, from_position: int = 1, limit: int | None = None
) -> list[list[Record]]:
    """Every batch ``store.read_batches`` yields."""
    return [b async for b in store.read_batches(stream, from_position, limit=limit)]


async def read_all_list(store: Store, from_global_position: int = 1) -> list[Record]:
    """Every record ``store.read_all`` yields."""
    return [r async for r in store.read_all(from_global_position)]


async def salvage_list(store: Store, stream: str, from_position: int = 1) -> list[Salvaged]:
    """Every record ``store.salvage`` yields."""
    return [r async for r in store.salvage(stream, from_position)]


def positions(records: list[Record]) -> list[int]:
    return [r.position for r in records]


def payloads(records: list[Record]) -> list[bytes]:
    return [r.data for r in records]


# The store calls that take a stream name, each with otherwise valid arguments.
StreamCall = Callable[[Store, Any], Awaitable[object]]
STREAM_CALLS: dict[str, StreamCall] = {
    "append": lambda store, name: store.append(name, [record(b"x")]),
    "append_many": lambda store, name: store.append_many(
        [StreamAppend("fine", (record(b"x"),)), StreamAppend(name, (record(b"y"),))]
    ),
    "read": lambda store, name: read_list(store, name),
    "read with a limit": lambda store, name: read_list(store, name, limit=1),
    "last_position": lambda store, name: store.last_position(name),
    "stream_info": lambda store, name: store.stream_info(name),
    "claim": lambda store, name: store.claim(name),
    "save_snapshot": lambda store, name: store.save_snapshot(name, 1, b"state"),
    "load_snapshot": lambda store, name: store.load_snapshot(name),
    "salvage": lambda store, name: salvage_list(store, name),
    "salvage_snapshot": lambda store, name: store.salvage_snapshot(name),
    "truncate": lambda store, name: store.truncate(name, 0),
    "delete_stream": lambda store, name: store.delete_stream(name),
    "create_stream": lambda store, name: store.create_stream(name, first_position=3, epoch=1),
}

# Every store call, with valid arguments, on stream "s" (which holds records).
STORE_CALLS: dict[str, Callable[[Store], Awaitable[object]]] = {
    **{op: (lambda store, call=call: call(store, "s")) for op, call in STREAM_CALLS.items()},
    "read_all": lambda store: read_all_list(store),
    "list_streams": lambda store: store.list_streams(),
    "list_stream_infos": lambda store: store.list_stream_infos(),
    "verify": lambda store: store.verify(),
    "adopt_identity": lambda store: store.adopt_identity("ab" * 16),
}

BAD_NAMES: list[object] = ["", "x" * 1025, "a\x00b", 42, None, b"bytes"]


async def refusals(calls: list[tuple[str, Callable[[], Awaitable[object]]]]) -> list[str]:
    """Each labelled call that does *not* raise InvalidStreamError, and what it did instead."""
    wrong = []
    for label, call in calls:
        try:
            await call()
        except InvalidStreamError:
            continue
        except Exception as exc:
            wrong.append(f"{label}: raised {type(exc).__name__}: {exc}")
        else:
            wrong.append(f"{label}: accepted")
    return wrong


class StepDone(msgspec.Struct, tag=True, frozen=True, kw_only=True):
    step: str
    result: str


class TurnStarted(msgspec.Struct, tag="turn-started", frozen=True, kw_only=True):
    turn: int
    handler: str


class Untagged(msgspec.Struct, frozen=True):
    value: int


# -- the contract -----------------------------------------------------------------------------


class StoreContract:
    """Behaviour tests every `Store` must pass; subclass and implement `create_store`."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    async def create_store(self, **options: Any) -> Store:
        """Open a store on this test's data; ``options`` such as ``max_record_bytes``.

        Every call within one test must open the same data (a durable store reopens it).
        """
        raise NotImplementedError

    async def reopen(self, store: Store) -> Store:
        """Close ``store`` and open its data again.

        A store that keeps nothing across close overrides this to return ``store`` itself,
        still open: what must survive a reopen is then checked without one.
        """
        await store.close()
        return await self.open_store()

    @pytest.fixture
    async def _opened(self) -> AsyncIterator[list[Store]]:
        opened: list[Store] = []
        self._opened_stores = opened
        yield opened
        for store in opened:
            await store.close()

    async def open_store(self, **options: Any) -> Store:
        """`create_store`, closing the store when the test ends."""
        store = await self.create_store(**options)
        self._opened_stores.append(store)
        return store

    @pytest.fixture
    async def store(self, _opened: list[Store]) -> Store:
        return await self.open_store()

    # -- basics ---------------------------------------------------------------------------

    async def test_store_implements_the_protocol(self, store: Store) -> None:
        assert isinstance(store, Store)

    async def test_the_journal_has_an_identity_that_it_keeps(self, store: Store) -> None:
        identity = store.identity
        await store.append("s", [record(b"x")])

        store = await self.reopen(store)

        assert re.fullmatch("[0-9a-f]{32}", identity), identity
        assert store.identity == identity

    async def test_a_stream_never_written_is_empty(self, store: Store) -> None:
        assert await store.last_position("nobody") == 0
        assert await read_list(store, "nobody") == []
        assert await store.stream_info("nobody") == StreamInfo("nobody", 0, 1, 0, 0)
        assert await store.load_snapshot("nobody") is None
        assert await store.list_streams() == []
        assert await read_all_list(store) == []

    # -- ordering and positions -----------------------------------------------------------

    async def test_appends_get_gapless_positions_from_one(self, store: Store) -> None:
        first = await store.append("s", numbered("s", 1, 1))
        second = await store.append("s", numbered("s", 2, 3))
        third = await store.append("s", numbered("s", 5, 2))

        assert (first.stream, first.first_position, first.last_position) == ("s", 1, 1)
        assert (second.first_position, second.last_position) == (2, 4)
        assert (third.first_position, third.last_position) == (5, 6)
        stored = await read_list(store, "s")
        assert positions(stored) == [1, 2, 3, 4, 5, 6]
        assert payloads(stored) == [f"s#{n}".encode() for n in range(1, 7)]
        assert all(r.stream == "s" for r in stored)
        assert await store.last_position("s") == 6

    async def test_records_keep_their_type_and_payload(self, store: Store) -> None:
        written = [
            record(b"", "empty"),
            record(bytes(range(256)), "binary"),
            record(b"x", "e\u0301"),
        ]
        await store.append("s", written)

        stored = await read_list(store, "s")
        assert [NewRecord(r.type, r.data) for r in stored] == written

    async def test_read_starts_at_from_position(self, store: Store) -> None:
        await store.append("s", numbered("s", 1, 6))

        assert positions(await read_list(store, "s", 4)) == [4, 5, 6]
        assert positions(await read_list(store, "s", 6)) == [6]
        assert await read_list(store, "s", 7) == []
        assert await read_list(store, "s", 1000) == []

    async def test_global_positions_increase_across_streams_in_commit_order(
        self, store: Store
    ) -> None:
        results: list[Appended] = []
        for stream, count in [("a", 2), ("b", 1), ("a", 1), ("c", 3), ("b", 2)]:
            first = await store.last_position(stream) + 1
            results.append(await store.append(stream, numbered(stream, first, count)))

        log = await read_all_list(store)
        assert [(r.stream, r.position) for r in log] == [
            ("a", 1), ("a", 2), ("b", 1), ("a", 3),
            ("c", 1), ("c", 2), ("c", 3), ("b", 2), ("b", 3),
        ]  # fmt: skip
        globals_ = [r.global_position for r in log]
        assert globals_ == sorted(set(globals_)), "global positions must strictly increase"
        assert globals_[0] >= 1
        by_place = {(r.stream, r.position): r.global_position for r in log}
        for appended in results:
            assert by_place[(appended.stream, appended.last_position)] == (
                appended.last_global_position
            )
        for stream in ("a", "b", "c"):
            for r in await read_list(store, stream):
                assert r.global_position == by_place[(stream, r.position)]

    async def test_read_all_starts_at_a_global_position(self, store: Store) -> None:
        await store.append("a", numbered("a", 1, 3))
        await store.append("b", numbered("b", 1, 3))
        log = await read_all_list(store)

        middle = log[3].global_position
        assert await read_all_list(store, middle) == log[3:]
        assert await read_all_list(store, log[-1].global_position) == log[-1:]
        assert await read_all_list(store, log[-1].global_position + 1) == []

    # -- atomic appends -------------------------------------------------------------------

    async def test_append_many_writes_every_part_in_one_step(self, store: Store) -> None:
        await store.append("a", numbered("a", 1, 2))

        results = await store.append_many(
            [
                StreamAppend("a", tuple(numbered("a", 3, 2)), expected_position=2),
                StreamAppend("b", tuple(numbered("b", 1, 1)), expected_position=0),
            ]
        )

        assert [(r.stream, r.first_position, r.last_position) for r in results] == [
            ("a", 3, 4),
            ("b", 1, 1),
        ]
        assert payloads(await read_list(store, "a")) == [f"a#{n}".encode() for n in range(1, 5)]
        assert payloads(await read_list(store, "b")) == [b"b#1"]
        tail = await read_all_list(store, results[0].last_global_position - 1)
        assert [(r.stream, r.position) for r in tail] == [("a", 3), ("a", 4), ("b", 1)]

    async def test_a_conflict_in_one_part_writes_no_part(self, store: Store) -> None:
        await store.append("a", numbered("a", 1, 2))
        await store.append("b", numbered("b", 1, 1))
        before = await read_all_list(store)

        with pytest.raises(ConflictError) as refused:
            await store.append_many(
                [
                    StreamAppend("new", (record(b"n1"),), expected_position=0),
                    StreamAppend("b", (record(b"b2"),), expected_position=1),
                    StreamAppend("a", (record(b"a3"),), expected_position=1),
                ]
            )

        assert (refused.value.stream, refused.value.expected, refused.value.actual) == ("a", 1, 2)
        assert await read_all_list(store) == before
        assert await store.last_position("new") == 0
        assert await store.last_position("b") == 1
        assert await store.list_streams() == ["a", "b"]

    async def test_a_fencing_error_in_one_part_writes_no_part(self, store: Store) -> None:
        await store.append("a", numbered("a", 1, 1))
        stale = await store.claim("a")
        current = await store.claim("a")
        before = await read_all_list(store)

        with pytest.raises(FencingError) as refused:
            await store.append_many(
                [
                    StreamAppend("b", (record(b"b1"),)),
                    StreamAppend("a", (record(b"a2"),), epoch=stale),
                ]
            )

        assert (refused.value.stream, refused.value.epoch, refused.value.current) == (
            "a",
            stale,
            current,
        )
        assert await read_all_list(store) == before
        assert await store.last_position("b") == 0

    async def test_a_refused_append_leaves_no_gap(self, store: Store) -> None:
        first = await store.append("s", numbered("s", 1, 2))
        with pytest.raises(ConflictError):
            await store.append("s", [record(b"lost")], expected_position=0)
        with pytest.raises(ConflictError):
            await store.append_many([StreamAppend("s", (record(b"lost"),), expected_position=5)])

        later = await store.append("s", numbered("s", 3, 1), expected_position=2)

        assert later.first_position == 3
        assert later.last_global_position > first.last_global_position
        assert payloads(await read_list(store, "s")) == [b"s#1", b"s#2", b"s#3"]

    # -- optimistic concurrency -----------------------------------------------------------

    async def test_expected_position_zero_creates_a_stream_once(self, store: Store) -> None:
        await store.append("s", [record(b"first")], expected_position=0)

        with pytest.raises(ConflictError) as refused:
            await store.append("s", [record(b"second")], expected_position=0)

        assert (refused.value.expected, refused.value.actual) == (0, 1)
        assert payloads(await read_list(store, "s")) == [b"first"]

    async def test_conflict_error_states_expected_and_actual_positions(self, store: Store) -> None:
        await store.append("orders/7", numbered("orders/7", 1, 3))

        with pytest.raises(ConflictError) as behind:
            await store.append("orders/7", [record(b"x")], expected_position=1)
        with pytest.raises(ConflictError) as ahead:
            await store.append("orders/7", [record(b"x")], expected_position=9)

        assert (behind.value.stream, behind.value.expected, behind.value.actual) == (
            "orders/7",
            1,
            3,
        )
        message = str(behind.value)
        assert "'orders/7'" in message
        assert "expected the stream at position 1" in message
        assert "it is at position 3" in message
        assert (ahead.value.expected, ahead.value.actual) == (9, 3)
        assert "position 9" in str(ahead.value)
        assert "position 3" in str(ahead.value)
        assert await store.last_position("orders/7") == 3

    async def test_expected_position_none_skips_the_check(self, store: Store) -> None:
        await store.append("s", [record(b"1")])
        await store.append("s", [record(b"2")], expected_position=None)

        assert await store.last_position("s") == 2

    async def test_of_two_racing_appends_at_one_position_exactly_one_wins(
        self, store: Store
    ) -> None:
        await store.append("s", [record(b"base")])
        outcomes: dict[str, Appended | ConflictError] = {}

        async def race(name: str) -> None:
            try:
                outcomes[name] = await store.append(
                    "s", [record(name.encode())], expected_position=1
                )
            except ConflictError as exc:
                outcomes[name] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(race, "left")
            tg.start_soon(race, "right")

        won = [name for name, o in outcomes.items() if isinstance(o, Appended)]
        lost = [o for o in outcomes.values() if isinstance(o, ConflictError)]
        assert len(won) == 1
        assert len(lost) == 1
        assert (lost[0].expected, lost[0].actual) == (1, 2)
        assert payloads(await read_list(store, "s")) == [b"base", won[0].encode()]

    async def test_of_many_racers_at_one_position_exactly_one_wins(self, store: Store) -> None:
        winners: list[int] = []
        conflicts: list[ConflictError] = []

        async def race(n: int) -> None:
            try:
                await store.append("s", [record(str(n).encode())], expected_position=0)
                winners.append(n)
            except ConflictError as exc:
                conflicts.append(exc)

        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(race, n)

        assert len(winners) == 1
        assert len(conflicts) == 19
        assert all((c.expected, c.actual) == (0, 1) for c in conflicts)
        assert payloads(await read_list(store, "s")) == [str(winners[0]).encode()]

    async def test_concurrent_appends_without_expected_positions_all_land_gaplessly(
        self, store: Store
    ) -> None:
        landed: dict[int, Appended] = {}

        async def write(n: int) -> None:
            landed[n] = await store.append("s", [record(b"%d-a" % n), record(b"%d-b" % n)])

        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(write, n)

        stored = await read_list(store, "s")
        assert positions(stored) == list(range(1, 101))
        for n, appended in landed.items():
            assert appended.last_position == appended.first_position + 1
            pair = stored[appended.first_position - 1 : appended.last_position]
            assert payloads(pair) == [b"%d-a" % n, b"%d-b" % n]

    # -- fencing --------------------------------------------------------------------------

    async def test_claim_gives_increasing_epochs(self, store: Store) -> None:
        epochs = [await store.claim("s") for _ in range(4)]
        other = await store.claim("t")

        assert epochs == sorted(set(epochs))
        assert epochs[0] >= 1
        assert other >= 1
        assert (await store.stream_info("s")).epoch == epochs[-1]
        assert (await store.stream_info("t")).epoch == other

    async def test_claiming_does_not_list_a_stream_or_move_it(self, store: Store) -> None:
        await store.claim("claimed")

        assert await store.list_streams() == []
        assert await store.last_position("claimed") == 0
        appended = await store.append("claimed", [record(b"1")], expected_position=0)
        assert appended.first_position == 1

    async def test_current_epoch_writes_and_stale_epoch_is_refused(self, store: Store) -> None:
        old = await store.claim("s")
        await store.append("s", [record(b"old owner")], epoch=old)
        new = await store.claim("s")

        with pytest.raises(FencingError) as refused:
            await store.append("s", [record(b"zombie")], epoch=old)
        await store.append("s", [record(b"new owner")], epoch=new)

        assert (refused.value.stream, refused.value.epoch, refused.value.current) == ("s", old, new)
        message = str(refused.value)
        assert "'s'" in message
        assert f"epoch {old}" in message
        assert f"epoch is {new}" in message
        assert payloads(await read_list(store, "s")) == [b"old owner", b"new owner"]

    async def test_an_epoch_never_issued_is_refused(self, store: Store) -> None:
        current = await store.claim("s")

        with pytest.raises(FencingError):
            await store.append("s", [record(b"x")], epoch=current + 1)

        assert await store.last_position("s") == 0

    async def test_epoch_none_skips_fencing(self, store: Store) -> None:
        await store.claim("s")
        await store.claim("s")

        await store.append("s", [record(b"unfenced")], epoch=None)
        await store.save_snapshot("s", 1, b"state", epoch=None)
        deleted = await store.truncate("s", 1, epoch=None)

        assert deleted == 1
        assert await store.last_position("s") == 1

    async def test_stale_epoch_cannot_snapshot(self, store: Store) -> None:
        old = await store.claim("s")
        await store.append("s", numbered("s", 1, 3), epoch=old)
        await store.save_snapshot("s", 1, b"state@1", epoch=old)
        new = await store.claim("s")

        with pytest.raises(FencingError) as refused:
            await store.save_snapshot("s", 3, b"zombie state", epoch=old)

        assert (refused.value.epoch, refused.value.current) == (old, new)
        assert await store.load_snapshot("s") == Snapshot("s", 1, b"state@1")
        await store.save_snapshot("s", 3, b"state@3", epoch=new)
        assert await store.load_snapshot("s") == Snapshot("s", 3, b"state@3")

    async def test_stale_epoch_cannot_truncate(self, store: Store) -> None:
        old = await store.claim("s")
        await store.append("s", numbered("s", 1, 3), epoch=old)
        await store.save_snapshot("s", 3, b"state", epoch=old)
        new = await store.claim("s")

        with pytest.raises(FencingError) as refused:
            await store.truncate("s", 2, epoch=old)

        assert (refused.value.epoch, refused.value.current) == (old, new)
        assert positions(await read_list(store, "s")) == [1, 2, 3]
        assert await store.truncate("s", 2, epoch=new) == 2
        assert positions(await read_list(store, "s")) == [3]

    # -- snapshots ------------------------------------------------------------------------

    async def test_load_snapshot_returns_the_latest(self, store: Store) -> None:
        await store.append("s", numbered("s", 1, 5))

        await store.save_snapshot("s", 2, b"state@2")
        assert await store.load_snapshot("s") == Snapshot("s", 2, b"state@2")
        await store.save_snapshot("s", 5, b"state@5")

        assert await store.load_snapshot("s") == Snapshot("s", 5, b"state@5")
        assert (await store.stream_info("s")).snapshot_position == 5
        assert await store.load_snapshot("other") is None

    async def test_a_snapshot_must_cover_existing_records(self, store: Store) -> None:
        with pytest.raises(SnapshotError):
            await store.save_snapshot("s", 1, b"nothing to cover")
        await store.append("s", numbered("s", 1, 3))

        with pytest.raises(SnapshotError) as beyond:
            await store.save_snapshot("s", 4, b"future")

        assert "'s'" in str(beyond.value)
        assert "position 4" in str(beyond.value)
        assert await store.load_snapshot("s") is None
        assert (await store.stream_info("s")).snapshot_position == 0

    async def test_snapshots_never_move_backward(self, store: Store) -> None:
        await store.append("s", numbered("s", 1, 5))
        await store.save_snapshot("s", 4, b"state@4")

        with pytest.raises(SnapshotError) as backward:
            await store.save_snapshot("s", 3, b"state@3")

        assert "position 4" in str(backward.value)
        assert await store.load_snapshot("s") == Snapshot("s", 4, b"state@4")

    # -- snapshots written with an append -------------------------------------------------

    async def test_an_append_can_replace_the_snapshot_in_the_same_step(self, store: Store) -> None:
        await store.append("s", numbered("s", 1, 2))
        await store.save_snapshot("s", 1, b"state@1")

        [appended] = await store.append_many(
            [StreamAppend("s", tuple(numbered("s", 3, 2)), snapshot=b"state@4")]
        )

        assert (appended.first_position, appended.last_position) == (3, 4)
        assert await store.load_snapshot("s") == Snapshot("s", 4, b"state@4")
        assert (await store.stream_info("s")).snapshot_position == 4
        assert await store.truncate("s", 4) == 4  # the snapshot covers them
        store = await self.reopen(store)
        assert await store.load_snapshot("s") == Snapshot("s", 4, b"state@4")
        assert await store.stream_info("s") == StreamInfo("s", 4, 5, 0, 4)

    async def test_a_snapshot_with_no_records_covers_the_last_position(self, store: Store) -> None:
        await store.append("s", numbered("s", 1, 3))

        [appended] = await store.append_many([StreamAppend("s", (), snapshot=b"state@3")])

        assert (appended.first_position, appended.last_position) == (4, 3)
        assert await store.load_snapshot("s") == Snapshot("s", 3, b"state@3")
        await store.append_many([StreamAppend("s", (), snapshot=b"again@3")])
        assert await store.load_snapshot("s") == Snapshot("s", 3, b"again@3")
        assert await store.last_position("s") == 3

    async def test_a_snapshot_of_a_stream_with_no_records_is_refused(self, store: Store) -> None:
        await store.claim("empty")

        with pytest.raises(SnapshotError) as refused:
            await store.append_many(
                [
                    StreamAppend("other", (record(b"o1"),), snapshot=b"fine"),
                    StreamAppend("empty", (), snapshot=b"nothing to cover"),
                ]
            )

        assert "'empty'" in str(refused.value)
        assert "no records" in str(refused.value)
        assert await read_all_list(store) == []
        assert await store.load_snapshot("other") is None
        assert await store.load_snapshot("empty") is None
        assert await store.stream_info("empty") == StreamInfo("empty", 0, 1, 1, 0)

    async def test_snapshots_of_every_part_land_together_or_not_at_all(self, store: Store) -> None:
        await store.append("a", numbered("a", 1, 2))
        await store.append("b", numbered("b", 1, 1))
        await store.save_snapshot("a", 1, b"a@1")

        with pytest.raises(ConflictError):
            await store.append_many(
                [
                    StreamAppend("a", (record(b"a3"),), snapshot=b"a@3"),
                    StreamAppend("b", (record(b"b2"),), expected_position=0, snapshot=b"b@2"),
                ]
            )
        assert await store.load_snapshot("a") == Snapshot("a", 1, b"a@1")
        assert await store.load_snapshot("b") is None
        assert await store.last_position("a") == 2

        await store.append_many(
            [
                StreamAppend("a", (record(b"a3"),), snapshot=b"a@3"),
                StreamAppend("b", (), expected_position=1, snapshot=b"b@1"),
                StreamAppend("c", (record(b"c1"),), expected_position=0, snapshot=b"c@1"),
            ]
        )
        assert await store.load_snapshot("a") == Snapshot("a", 3, b"a@3")
        assert await store.load_snapshot("b") == Snapshot("b", 1, b"b@1")
        assert await store.load_snapshot("c") == Snapshot("c", 1, b"c@1")

    async def test_a_stale_owner_cannot_snapshot_with_an_append(self, store: Store) -> None:
        old = await store.claim("s")
        await store.append_many([StreamAppend("s", (record(b"1"),), epoch=old, snapshot=b"@1")])
        new = await store.claim("s")

        with pytest.raises(FencingError) as refused:
            await store.append_many([StreamAppend("s", (), epoch=old, snapshot=b"zombie")])
        with pytest.raises(FencingError):
            await store.append_many(
                [StreamAppend("s", (record(b"2"),), epoch=old, snapshot=b"zombie@2")]
            )

        assert (refused.value.epoch, refused.value.current) == (old, new)
        assert await store.load_snapshot("s") == Snapshot("s", 1, b"@1")
        await store.append_many([StreamAppend("s", (record(b"2"),), epoch=new, snapshot=b"@2")])
        assert await store.load_snapshot("s") == Snapshot("s", 2, b"@2")

    async def test_parts_of_one_stream_snapshot_where_each_part_ends(self, store: Store) -> None:
        await store.append_many(
            [
                StreamAppend("s", tuple(numbered("s", 1, 2)), snapshot=b"@2"),
                StreamAppend("s", tuple(numbered("s", 3, 1))),
            ]
        )
        assert await store.load_snapshot("s") == Snapshot("s", 2, b"@2")

        await store.append_many(
            [
                StreamAppend("s", tuple(numbered("s", 4, 1)), snapshot=b"@4"),
                StreamAppend("s", (), expected_position=4, snapshot=b"@4 again"),
            ]
        )
        assert await store.load_snapshot("s") == Snapshot("s", 4, b"@4 again")
        with pytest.raises(SnapshotError):  # snapshots still only move forward
            await store.save_snapshot("s", 3, b"@3")

    async def test_a_snapshot_that_is_not_bytes_is_refused(self, store: Store) -> None:
        wrong = await refusals(
            [
                (
                    f"snapshot={bad!r}",
                    lambda bad=bad: store.append_many(
                        [
                            StreamAppend("a", (record(b"x"),)),
                            StreamAppend("s", (record(b"x"),), snapshot=bad),
                        ]
                    ),
                )
                for bad in ["text", bytearray(b"x"), 42]
            ]
        )

        assert wrong == []
        assert await store.list_streams() == []

    # -- truncation -----------------------------------------------------------------------

    async def test_truncate_deletes_through_a_snapshot_and_keeps_positions(
        self, store: Store
    ) -> None:
        await store.append("s", numbered("s", 1, 6))
        await store.append("other", numbered("other", 1, 2))
        await store.save_snapshot("s", 4, b"state@4")

        deleted = await store.truncate("s", 3)

        assert deleted == 3
        assert positions(await read_list(store, "s")) == [4, 5, 6]
        assert positions(await read_list(store, "s", 1)) == [4, 5, 6]
        assert positions(await read_list(store, "s", 5)) == [5, 6]
        assert await store.last_position("s") == 6
        info = await store.stream_info("s")
        assert (info.first_position, info.last_position, info.snapshot_position) == (4, 6, 4)
        remaining = [(r.stream, r.position) for r in await read_all_list(store)]
        assert remaining == [("s", 4), ("s", 5), ("s", 6), ("other", 1), ("other", 2)]
        later = await store.append("s", [record(b"s#7")], expected_position=6)
        assert later.first_position == 7

    async def test_truncate_beyond_the_snapshot_is_refused(self, store: Store) -> None:
        await store.append("s", numbered("s", 1, 5))
        with pytest.raises(SnapshotError):
            await store.truncate("s", 1)  # no snapshot at all
        await store.save_snapshot("s", 2, b"state@2")

        with pytest.raises(SnapshotError) as refused:
            await store.truncate("s", 3)

        assert "'s'" in str(refused.value)
        assert "position 3" in str(refused.value)
        assert positions(await read_list(store, "s")) == [1, 2, 3, 4, 5]
        assert (await store.stream_info("s")).first_position == 1

    async def test_truncate_again_deletes_nothing_more(self, store: Store) -> None:
        await store.append("s", numbered("s", 1, 4))
        await store.save_snapshot("s", 3, b"state@3")
        assert await store.truncate("s", 3) == 3

        assert await store.truncate("s", 2) == 0
        assert await store.truncate("s", 0) == 0

        assert positions(await read_list(store, "s")) == [4]
        assert (await store.stream_info("s")).first_position == 4

    async def test_truncating_every_record_keeps_the_stream(self, store: Store) -> None:
        await store.append("s", numbered("s", 1, 3))
        await store.save_snapshot("s", 3, b"state@3")

        assert await store.truncate("s", 3) == 3

        assert await read_list(store, "s") == []
        assert await store.last_position("s") == 3
        assert await store.list_streams() == ["s"]
        info = await store.stream_info("s")
        assert (info.first_position, info.last_position) == (4, 3)
        assert await store.load_snapshot("s") == Snapshot("s", 3, b"state@3")
        with pytest.raises(ConflictError):
            await store.append("s", [record(b"x")], expected_position=0)
        assert (await store.append("s", [record(b"s#4")], expected_position=3)).first_position == 4

    async def test_global_positions_are_never_reused_after_truncating_the_newest(
        self, store: Store
    ) -> None:
        await store.append("a", numbered("a", 1, 2))
        newest = await store.append("b", numbered("b", 1, 3))
        await store.save_snapshot("b", 3, b"state@3")
        await store.truncate("b", 3)

        store = await self.reopen(store)
        later = await store.append("c", [record(b"c#1")])

        assert later.last_global_position > newest.last_global_position
        assert [r.global_position for r in await read_all_list(store)][-1] == (
            later.last_global_position
        )
        assert await store.last_position("b") == 3
        assert (await store.append("b", [record(b"b#4")])).first_position == 4

    # -- deleting streams -----------------------------------------------------------------

    async def test_a_deleted_stream_reads_as_never_written(self, store: Store) -> None:
        await store.append("keep", numbered("keep", 1, 2))
        epoch = await store.claim("gone")
        await store.append("gone", numbered("gone", 1, 3), epoch=epoch)
        await store.save_snapshot("gone", 2, b"state@2", epoch=epoch)
        await store.append("keep", numbered("keep", 3, 1))

        assert await store.delete_stream("gone") is True

        assert await store.stream_info("gone") == StreamInfo("gone", 0, 1, 0, 0)
        assert await store.last_position("gone") == 0
        assert await read_list(store, "gone") == []
        assert await store.load_snapshot("gone") is None
        assert await store.list_streams() == ["keep"]
        assert [(r.stream, r.position) for r in await read_all_list(store)] == [
            ("keep", 1),
            ("keep", 2),
            ("keep", 3),
        ]
        assert payloads(await read_list(store, "keep")) == [b"keep#1", b"keep#2", b"keep#3"]

    async def test_delete_stream_says_whether_the_stream_existed(self, store: Store) -> None:
        await store.claim("claimed")
        await store.append("emptied", numbered("emptied", 1, 2))
        await store.save_snapshot("emptied", 2, b"state")
        await store.truncate("emptied", 2)
        await store.append("written", [record(b"x")])

        assert await store.delete_stream("never") is False
        assert await store.delete_stream("claimed") is True
        assert await store.delete_stream("emptied") is True
        assert await store.delete_stream("written") is True
        assert await store.delete_stream("written") is False
        assert await store.list_streams() == []

    async def test_a_deleted_stream_starts_over(self, store: Store) -> None:
        await store.claim("s")
        newest = await store.append("s", numbered("s", 1, 3))  # the newest records in the store
        await store.delete_stream("s")

        store = await self.reopen(store)
        again = await store.append("s", [record(b"again")], expected_position=0)

        assert (again.first_position, again.last_position) == (1, 1)
        assert again.last_global_position > newest.last_global_position  # never reused
        assert [(r.position, r.data) for r in await read_list(store, "s")] == [(1, b"again")]
        assert await store.claim("s") == 1  # the epoch went with the stream
        assert await store.list_streams() == ["s"]

    async def test_a_stale_owner_cannot_delete_a_stream(self, store: Store) -> None:
        old = await store.claim("s")
        await store.append("s", numbered("s", 1, 2), epoch=old)
        new = await store.claim("s")

        with pytest.raises(FencingError) as refused:
            await store.delete_stream("s", epoch=old)
        with pytest.raises(FencingError):
            await store.delete_stream("never", epoch=1)

        assert (refused.value.stream, refused.value.epoch, refused.value.current) == ("s", old, new)
        assert positions(await read_list(store, "s")) == [1, 2]
        assert (await store.stream_info("s")).epoch == new
        assert await store.delete_stream("s", epoch=new) is True
        assert await store.delete_stream("never", epoch=0) is False
        assert await store.stream_info("s") == StreamInfo("s", 0, 1, 0, 0)

    async def test_deleting_many_small_streams_leaves_a_clean_store(self, store: Store) -> None:
        for n in range(300):
            await store.append_many(
                [
                    StreamAppend(f"claim/{n:03}", (record(b"claimed"),), expected_position=0),
                    StreamAppend(f"work/{n % 7}", (record(b"%d" % n),)),
                ]
            )
        await store.save_snapshot("claim/007", 1, b"state")
        await store.save_snapshot("claim/008", 1, b"state of a stream to delete")

        deleted = [await store.delete_stream(f"claim/{n:03}") for n in range(0, 300, 2)]
        assert await store.delete_stream("work/0") is True  # and a longer one

        assert all(deleted)
        assert await store.list_streams("claim/") == [f"claim/{n:03}" for n in range(1, 300, 2)]
        assert await store.list_streams("work/") == [f"work/{n}" for n in range(1, 7)]
        report = await store.verify()
        assert report.ok, report.problems
        assert (report.streams, report.records) == (150 + 6, 150 + 300 - 43)
        assert await store.load_snapshot("claim/007") == Snapshot("claim/007", 1, b"state")
        log = await read_all_list(store)
        assert len(log) == 150 + 300 - 43
        assert not [r for r in log if r.stream.startswith("claim/") and int(r.stream[6:]) % 2 == 0]
        assert not [r for r in log if r.stream == "work/0"]

    # -- size limits ----------------------------------------------------------------------

    async def test_default_record_limit_is_32_mib(self, store: Store) -> None:
        assert DEFAULT_MAX_RECORD_BYTES == 32 * 1024 * 1024
        limit = DEFAULT_MAX_RECORD_BYTES
        assert store.max_record_bytes == limit
        await store.append("s", [record(b"before")])

        with pytest.raises(RecordTooLargeError) as refused:
            await store.append("s", [record(b"small"), record(b"\x02" * (limit + 1))])

        assert (refused.value.stream, refused.value.size, refused.value.limit) == (
            "s",
            limit + 1,
            limit,
        )
        assert isinstance(refused.value, ValueError)
        assert f"{limit} bytes" in str(refused.value)
        assert "max_record_bytes=" in str(refused.value)
        assert await store.last_position("s") == 1

    @pytest.mark.usefixtures("_opened")
    async def test_record_limit_is_configurable(self) -> None:
        store = await self.open_store(max_record_bytes=100)

        await store.append("s", [record(b"x" * 100)])
        with pytest.raises(RecordTooLargeError) as refused:
            await store.append("s", [record(b"x" * 101)])

        message = str(refused.value)
        assert "'s'" in message
        assert "101 bytes" in message
        assert "100 bytes" in message
        assert "max_record_bytes=" in message
        assert await store.last_position("s") == 1
        assert store.max_record_bytes == 100

    @pytest.mark.usefixtures("_opened")
    async def test_an_oversized_part_writes_no_part(self) -> None:
        store = await self.open_store(max_record_bytes=100)

        with pytest.raises(RecordTooLargeError):
            await store.append_many(
                [
                    StreamAppend("a", (record(b"fits"),)),
                    StreamAppend("b", (record(b"fits"), record(b"x" * 101))),
                ]
            )

        assert await read_all_list(store) == []
        assert await store.list_streams() == []

    # -- argument checks ------------------------------------------------------------------

    async def test_invalid_stream_names_are_refused(self, store: Store) -> None:
        wrong = await refusals(
            [
                (f"{op}({name!r})", lambda call=call, name=name: call(store, name))
                for op, call in STREAM_CALLS.items()
                for name in BAD_NAMES
            ]
        )

        assert wrong == []
        assert await store.list_streams() == []

    async def test_longest_stream_name_is_accepted(self, store: Store) -> None:
        name = "n" * 1024

        await store.append(name, [record(b"x")])

        assert await store.list_streams() == [name]
        assert positions(await read_list(store, name)) == [1]

    async def test_stream_name_that_is_not_unicode_text_is_refused(self, store: Store) -> None:
        name = "lone \ud800 surrogate"

        wrong = await refusals(
            [(op, lambda call=call: call(store, name)) for op, call in STREAM_CALLS.items()]
        )

        assert wrong == []
        assert await store.list_streams() == []

    async def test_invalid_positions_are_refused(self, store: Store) -> None:
        await store.append("s", numbered("s", 1, 3))
        bad_starts: list[Any] = [0, -1, True, 1.5, "1", None]
        calls: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        for at in bad_starts:
            calls += [
                (f"read('s', {at!r})", lambda at=at: read_list(store, "s", at)),
                (f"read_all({at!r})", lambda at=at: read_all_list(store, at)),
                (f"save_snapshot('s', {at!r})", lambda at=at: store.save_snapshot("s", at, b"")),
            ]
        for at in [-1, 1.5, "1", None]:
            calls.append((f"truncate('s', {at!r})", lambda at=at: store.truncate("s", at)))

        wrong = await refusals(calls)

        assert wrong == []
        assert await store.load_snapshot("s") is None
        assert positions(await read_list(store, "s")) == [1, 2, 3]

    async def test_malformed_expected_positions_and_epochs_are_refused(self, store: Store) -> None:
        calls: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        for bad in [-1, True, "1", 1.5]:
            calls += [
                (
                    f"append(expected_position={bad!r})",
                    lambda bad=bad: store.append("s", [record(b"x")], expected_position=bad),
                ),
                (
                    f"append(epoch={bad!r})",
                    lambda bad=bad: store.append("s", [record(b"x")], epoch=bad),
                ),
                (
                    f"append_many(expected_position={bad!r})",
                    lambda bad=bad: store.append_many(
                        [StreamAppend("t", (record(b"x"),), expected_position=bad)]
                    ),
                ),
            ]

        wrong = await refusals(calls)

        assert wrong == []
        assert await store.list_streams() == []

    async def test_malformed_records_are_refused_before_anything_is_written(
        self, store: Store
    ) -> None:
        malformed: list[Any] = [
            NewRecord("t", "text, not bytes"),  # type: ignore[arg-type]
            NewRecord("", b"x"),
            NewRecord("a\x00b", b"x"),
            NewRecord("lone \ud800", b"x"),
            NewRecord(5, b"x"),  # type: ignore[arg-type]
            ("t", b"x"),
        ]
        calls: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        for bad in malformed:
            calls += [
                (f"append({bad!r})", lambda bad=bad: store.append("s", [record(b"ok"), bad])),
                (
                    f"append_many(.., {bad!r})",
                    lambda bad=bad: store.append_many(
                        [StreamAppend("t", (record(b"ok"),)), StreamAppend("s", (bad,))]
                    ),
                ),
            ]

        wrong = await refusals(calls)

        assert wrong == []
        assert await store.list_streams() == []
        assert await read_all_list(store) == []

    # -- listing --------------------------------------------------------------------------

    async def test_list_streams_by_prefix(self, store: Store) -> None:
        names = ["order/2", "order/1", "orders", "user/1", "a_b", "axb", "100%", "1000", "\u00e9/1"]
        for name in names:
            await store.append(name, [record(b"x")])
        await store.claim("order/3")  # claimed, never written: not listed

        assert await store.list_streams() == sorted(names)
        assert await store.list_streams("order/") == ["order/1", "order/2"]
        assert await store.list_streams("order") == ["order/1", "order/2", "orders"]
        assert await store.list_streams("a_") == ["a_b"]
        assert await store.list_streams("100%") == ["100%"]
        assert await store.list_streams("\u00e9") == ["\u00e9/1"]
        assert await store.list_streams("order/1") == ["order/1"]
        assert await store.list_streams("zzz") == []

    async def test_list_streams_refuses_a_prefix_that_is_not_text(self, store: Store) -> None:
        await store.append("s", [record(b"x")])

        wrong = await refusals(
            [
                (f"list_streams({bad!r})", lambda bad=bad: store.list_streams(bad))
                for bad in [42, None, b"s", "lone \ud800"]
            ]
        )

        assert wrong == []

    async def test_list_streams_matches_names_with_any_following_character(
        self, store: Store
    ) -> None:
        names = ["p/\U0010ffff", "p/\U0010ffffx", "\U0010ffff"]
        for name in names:
            await store.append(name, [record(b"x")])

        assert await store.list_streams("p/") == ["p/\U0010ffff", "p/\U0010ffffx"]
        assert await store.list_streams() == sorted(names)

    async def test_list_stream_infos_pages_through_streams_with_their_infos(
        self, store: Store
    ) -> None:
        names = ["order/3", "order/1", "order/2", "orders", "user/1", "\u00e9/1"]
        for name in names:
            await store.append(name, numbered(name, 1, 2))
        await store.claim("order/0")  # claimed, never written: not listed
        await store.save_snapshot("order/2", 2, b"state")
        await store.truncate("order/2", 2)  # no records left, but it held some: listed

        everything = await store.list_stream_infos()
        assert everything == [await store.stream_info(name) for name in sorted(names)]
        assert [info.stream for info in everything] == await store.list_streams()
        assert (everything[1].stream, everything[1].first_position) == ("order/2", 3)

        pages, after = [], ""
        while page := await store.list_stream_infos("order", after=after, limit=2):
            pages.append([info.stream for info in page])
            after = page[-1].stream
        assert pages == [["order/1", "order/2"], ["order/3", "orders"]]
        assert await store.list_stream_infos("order/", after="order/1", limit=5) == [
            await store.stream_info("order/2"),
            await store.stream_info("order/3"),
        ]
        assert await store.list_stream_infos("zzz") == []
        assert await store.list_stream_infos(after="\U0010ffff") == []

    async def test_stream_infos_reads_several_streams_in_the_order_asked(
        self, store: Store
    ) -> None:
        await store.append("b", numbered("b", 1, 3))
        await store.append("a", numbered("a", 1, 2))
        await store.claim("a")
        await store.save_snapshot("a", 2, b"state")
        await store.save_snapshot("b", 1, b"state")
        await store.truncate("b", 1)
        await store.claim("claimed")  # claimed, never written

        asked = ["b", "never", "a", "claimed", "b"]
        infos = await store.stream_infos(asked)

        assert infos == [await store.stream_info(name) for name in asked]
        assert [(i.last_position, i.first_position) for i in infos[:2]] == [(3, 2), (0, 1)]
        assert (infos[2].epoch, infos[2].snapshot_position) == (1, 2)
        assert infos[3].epoch == 1
        assert await store.stream_infos([]) == []
        with pytest.raises(InvalidStreamError):
            await store.stream_infos(["ok", ""])

    async def test_a_limit_that_is_not_a_positive_integer_is_refused(self, store: Store) -> None:
        await store.append("s", [record(b"x")])

        wrong = await refusals(
            [
                (f"{what}(limit={bad!r})", lambda call=call, bad=bad: call(bad))
                for bad in [0, -1, 1.5, "2", True]
                for what, call in [
                    ("read", lambda bad: read_list(store, "s", limit=bad)),
                    ("list_stream_infos", lambda bad: store.list_stream_infos(limit=bad)),
                ]
            ]
            + [
                (
                    f"list_stream_infos(after={bad!r})",
                    lambda bad=bad: store.list_stream_infos(after=bad),
                )
                for bad in [None, 42, "lone \ud800"]
            ]
        )

        assert wrong == []

    # -- long streams ---------------------------------------------------------------------

    async def test_a_read_with_a_limit_stops_after_that_many_records(self, store: Store) -> None:
        total = 5300
        for first in range(1, total + 1, 500):
            await store.append("long", numbered("long", first, min(500, total - first + 1)))

        for start, limit in [(1, 1), (1, 511), (1, 2048), (1, 2049), (100, 5000), (5000, 1000)]:
            batches = await batches_list(store, "long", start, limit)
            read = [r for batch in batches for r in batch]
            wanted = list(range(start, min(start + limit, total + 1)))
            assert positions(read) == wanted, (start, limit)
            assert all(batches), (start, limit)  # no empty batch
            assert positions(await read_list(store, "long", start, limit)) == wanted
        assert await read_list(store, "never", 1, 10) == []
        assert await read_list(store, "long", total + 1, 10) == []

    async def test_a_long_stream_reads_back_in_order(self, store: Store) -> None:
        total = 5300
        for first in range(1, total + 1, 500):
            count = min(500, total - first + 1)
            await store.append("long", numbered("long", first, count))
        await store.append("other", [record(b"other#1")])

        seen = 0
        async for r in store.read("long"):
            seen += 1
            assert (r.position, r.data) == (seen, f"long#{seen}".encode())
            if seen % 1000 == 0:  # the open iterator does not keep the store to itself
                assert await store.last_position("other") == 1
                assert payloads(await read_list(store, "other")) == [b"other#1"]
        assert seen == total
        for start in (511, 512, 513, 2047, 2048, 2049, 4097, total):
            tail = await read_list(store, "long", start)
            assert positions(tail) == list(range(start, total + 1)), start

    async def test_stopping_a_read_early_leaves_the_store_usable(self, store: Store) -> None:
        await store.append("s", numbered("s", 1, 3000))

        async with contextlib.aclosing(store.read("s")) as reader:  # type: ignore[type-var]
            async for r in reader:
                if r.position == 10:
                    break

        await store.append("s", [record(b"more")])
        assert len(await read_list(store, "s", 2990)) == 12

    async def test_read_all_of_a_long_log(self, store: Store) -> None:
        for n in range(1, 5201, 400):
            await store.append("a", numbered("a", n, 400))
            await store.append("b", [record(b"b")])

        log = await read_all_list(store)

        assert len(log) == 5200 + 13
        globals_ = [r.global_position for r in log]
        assert globals_ == sorted(set(globals_))
        assert [r.position for r in log if r.stream == "a"] == list(range(1, 5201))
        assert await read_all_list(store, log[3000].global_position) == log[3000:]

    # -- verify ---------------------------------------------------------------------------

    async def test_verify_finds_a_healthy_store_ok(self, store: Store) -> None:
        await store.append("a", numbered("a", 1, 4))
        await store.append_many(
            [StreamAppend("b", tuple(numbered("b", 1, 2))), StreamAppend("c", (record(b"c"),))]
        )
        await store.save_snapshot("a", 3, b"state@3")
        await store.truncate("a", 2)

        report = await store.verify()

        assert report.ok
        assert report.problems == ()
        assert report.records == 2 + 2 + 1
        assert report.streams == 3

    async def test_verify_on_an_empty_store(self, store: Store) -> None:
        report = await store.verify()

        assert report.ok
        assert report.records == 0

    # -- salvage --------------------------------------------------------------------------

    async def test_salvage_of_intact_records_gives_what_read_gives(self, store: Store) -> None:
        await store.append("s", numbered("s", 1, 5))
        await store.append("other", numbered("other", 1, 1))
        await store.save_snapshot("s", 2, b"state")
        await store.truncate("s", 2)

        read = await read_list(store, "s")
        salvaged = await salvage_list(store, "s")
        assert [
            Record(r.stream, r.position, r.global_position, r.type, r.data) for r in salvaged
        ] == read
        assert [r.damage for r in salvaged] == [None, None, None]
        assert [r.position for r in await salvage_list(store, "s", 4)] == [4, 5]
        assert await salvage_list(store, "never") == []
        assert await store.salvage_snapshot("s") == SalvagedSnapshot("s", 2, b"state")
        assert await store.salvage_snapshot("other") is None

    # -- closing --------------------------------------------------------------------------

    async def test_every_call_on_a_closed_store_raises_store_closed(self, store: Store) -> None:
        await store.append("s", numbered("s", 1, 2))
        await store.save_snapshot("s", 1, b"state")
        await store.close()

        wrong = []
        messages = []
        for op, call in STORE_CALLS.items():
            try:
                await call(store)
            except StoreClosedError as exc:
                messages.append(str(exc))
            except Exception as exc:
                wrong.append(f"{op}: raised {type(exc).__name__}: {exc}")
            else:
                wrong.append(f"{op}: did not raise")

        assert wrong == []
        assert all("closed" in message for message in messages)
        assert issubclass(StoreClosedError, JournalError)
        await store.close()  # closing again is harmless

    async def test_close_keeps_every_acknowledged_append(self, store: Store) -> None:
        acknowledged: dict[str, Appended] = {}
        refused: list[str] = []

        async def write(stream: str) -> None:
            try:
                acknowledged[stream] = await store.append(stream, numbered(stream, 1, 2))
            except StoreClosedError:
                refused.append(stream)

        streams = [f"flush/{n:03}" for n in range(200)]
        async with anyio.create_task_group() as tg:
            for stream in streams:
                tg.start_soon(write, stream)
            await anyio.lowlevel.checkpoint()  # let the appends queue up
            store = await self.reopen(store)  # closing must commit what was queued

        assert sorted([*acknowledged, *refused]) == streams
        assert acknowledged, "no append was under way when the store closed"
        assert await store.list_streams("flush/") == sorted(acknowledged)
        for stream in acknowledged:
            assert payloads(await read_list(store, stream)) == [
                f"{stream}#1".encode(),
                f"{stream}#2".encode(),
            ]

    # -- creating streams and adopting an identity (for copies) ---------------------------

    async def test_a_created_stream_starts_at_its_first_position_under_its_epoch(
        self, store: Store
    ) -> None:
        await store.create_stream("s", first_position=8, epoch=3)

        assert await store.stream_info("s") == StreamInfo("s", 7, 8, 3, 0)
        assert await store.list_streams() == ["s"]  # it held positions 1 to 7
        assert await read_list(store, "s") == []
        with pytest.raises(ConflictError):
            await store.append("s", [record(b"x")], expected_position=0)
        with pytest.raises(FencingError):
            await store.append("s", [record(b"x")], epoch=2)
        appended = await store.append("s", numbered("s", 8, 2), expected_position=7, epoch=3)
        await store.save_snapshot("s", 7, b"state")  # covering the positions before 8

        assert (appended.first_position, appended.last_position) == (8, 9)
        assert positions(await read_list(store, "s")) == [8, 9]
        assert await store.stream_info("s") == StreamInfo("s", 9, 8, 3, 7)
        assert await store.claim("s") == 4
        assert (await store.verify()).ok
        store = await self.reopen(store)
        assert await store.stream_info("s") == StreamInfo("s", 9, 8, 4, 7)

    async def test_a_created_stream_at_one_holds_only_its_epoch(self, store: Store) -> None:
        await store.create_stream("s", epoch=2)

        assert await store.stream_info("s") == StreamInfo("s", 0, 1, 2, 0)
        assert await store.list_streams() == []  # as a claimed stream never written
        assert await store.claim("s") == 3

    async def test_create_stream_refuses_a_stream_that_holds_anything(self, store: Store) -> None:
        await store.append("written", [record(b"x")])
        await store.claim("claimed")
        await store.create_stream("created", first_position=5)

        for name in ("written", "claimed", "created"):
            with pytest.raises(InvalidStreamError, match="exists"):
                await store.create_stream(name, first_position=9, epoch=7)
        assert await store.stream_info("written") == StreamInfo("written", 1, 1, 0, 0)
        assert await store.stream_info("claimed") == StreamInfo("claimed", 0, 1, 1, 0)
        assert await store.stream_info("created") == StreamInfo("created", 4, 5, 0, 0)

    async def test_create_stream_after_a_delete(self, store: Store) -> None:
        await store.append("s", numbered("s", 1, 3))
        await store.delete_stream("s")

        await store.create_stream("s", first_position=2)

        assert await store.stream_info("s") == StreamInfo("s", 1, 2, 0, 0)

    async def test_create_stream_refuses_bad_positions_and_epochs(self, store: Store) -> None:
        for first, epoch in [(0, 0), (1, -1), (True, 0), (1, 1.5)]:
            with pytest.raises(InvalidStreamError):
                await store.create_stream("s", first_position=first, epoch=epoch)  # type: ignore[arg-type]
        assert await store.stream_info("s") == StreamInfo("s", 0, 1, 0, 0)

    async def test_an_empty_store_adopts_an_identity_and_keeps_it(self, store: Store) -> None:
        await store.adopt_identity("0123456789abcdef" * 2)
        assert store.identity == "0123456789abcdef" * 2

        await store.append("s", [record(b"x")])
        store = await self.reopen(store)

        assert store.identity == "0123456789abcdef" * 2

    async def test_a_store_holding_a_stream_refuses_another_identity(self, store: Store) -> None:
        identity = store.identity
        await store.claim("claimed")  # an epoch alone is something held

        with pytest.raises(StoreNotEmptyError, match=r"1 stream.*'claimed'"):
            await store.adopt_identity("0123456789abcdef" * 2)
        await store.append("b", [record(b"x")])
        with pytest.raises(StoreNotEmptyError, match=r"2 stream.*'b', 'claimed'"):
            await store.adopt_identity("0123456789abcdef" * 2)
        assert store.identity == identity
        store = await self.reopen(store)
        assert store.identity == identity

    async def test_a_malformed_identity_is_not_adopted(self, store: Store) -> None:
        for bad in ["", "ABCDEF0123456789" * 2, "0" * 31, 42]:
            with pytest.raises(ValueError, match="32 lowercase hex"):
                await store.adopt_identity(bad)  # type: ignore[arg-type]

    # -- codec ----------------------------------------------------------------------------

    async def test_codec_round_trips_a_tagged_union_through_the_store(self, store: Store) -> None:
        codec: Codec[StepDone | TurnStarted] = Codec(StepDone | TurnStarted)
        values: list[StepDone | TurnStarted] = [
            TurnStarted(turn=1, handler="research"),
            StepDone(step="plan", result="3 steps"),
            StepDone(step="search", result="\u2713 found"),
        ]

        encoded = [codec.encode(v) for v in values]
        await store.append("actor/1", encoded)

        assert [r.type for r in encoded] == ["turn-started", "StepDone", "StepDone"]
        assert codec.tags == frozenset({"turn-started", "StepDone"})
        assert [codec.decode(r) for r in await read_list(store, "actor/1")] == values

    async def test_decoding_an_unknown_tag_names_stream_and_position(self, store: Store) -> None:
        codec: Codec[StepDone] = Codec(StepDone)
        await store.append("actor/1", [codec.encode(StepDone(step="a", result="b"))])
        await store.append("actor/1", [record(msgspec.msgpack.encode({"x": 1}), "Mystery")])
        stored = await read_list(store, "actor/1")

        with pytest.raises(DecodeError) as failed:
            codec.decode(stored[1])

        assert (failed.value.stream, failed.value.position, failed.value.record_type) == (
            "actor/1",
            2,
            "Mystery",
        )
        message = str(failed.value)
        assert "'actor/1'" in message
        assert "position 2" in message
        assert "'Mystery'" in message
        assert "StepDone" in message  # what the codec does know
        assert isinstance(failed.value, JournalError)

    @pytest.mark.parametrize(
        "garbage",
        [
            b"\xc1\xc1\xc1",  # not MessagePack at all
            b"",
            msgspec.msgpack.encode({"type": "StepDone", "step": 5}),  # wrong field type
            msgspec.msgpack.encode({"type": "turn-started", "turn": 1, "handler": "h"}),
        ],
        ids=["not-msgpack", "empty", "wrong-field-type", "other-member-under-this-tag"],
    )
    async def test_decoding_garbage_names_stream_and_position(
        self, store: Store, garbage: bytes
    ) -> None:
        codec: Codec[StepDone | TurnStarted] = Codec(StepDone | TurnStarted)
        await store.append("actor/9", [record(b"filler", "StepDone")] * 2)
        await store.append("actor/9", [record(garbage, "StepDone")])
        stored = await read_list(store, "actor/9")

        with pytest.raises(DecodeError) as failed:
            codec.decode(stored[2])

        assert (failed.value.stream, failed.value.position) == ("actor/9", 3)
        assert "'actor/9'" in str(failed.value)
        assert "position 3" in str(failed.value)

    def test_codec_refuses_members_without_a_tag(self) -> None:
        with pytest.raises(TypeError, match="Untagged"):
            Codec(StepDone | Untagged)
        with pytest.raises(TypeError, match="tag"):
            Codec(Untagged)
        with pytest.raises(TypeError):
            Codec(int)

    def test_codec_refuses_two_members_with_one_tag(self) -> None:
        class Again(msgspec.Struct, tag="StepDone"):
            other: int

        with pytest.raises(TypeError, match="StepDone"):
            Codec(StepDone | Again)

    def test_codec_refuses_to_encode_a_non_member(self) -> None:
        codec: Codec[StepDone] = Codec(StepDone)

        with pytest.raises(TypeError, match="TurnStarted"):
            codec.encode(TurnStarted(turn=1, handler="h"))  # type: ignore[arg-type]
