"""The store contract for values stored once (docs/journal.md, "Values stored once"): a
mixin of `StoreContract`'s test classes for the stores that keep values."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any, ClassVar

import pytest

from journal import (
    ConflictError,
    CorruptionError,
    FencingError,
    InvalidStreamError,
    JournalError,
    MissingValueError,
    NewRecord,
    RecordTooLargeError,
    Store,
    StoreClosedError,
    StreamAppend,
)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def referring(data: bytes, *values: bytes, kind: str = "t") -> NewRecord:
    """A record with payload ``data`` that refers to ``values``."""
    return NewRecord(kind, data, refs=tuple(digest(v) for v in values))


def given(*values: bytes) -> dict[str, bytes]:
    return {digest(v): v for v in values}


DOC = b"a document read by ten steps " * 100
PROMPT = b"the system prompt " * 50
OTHER = b"another value"


async def readable(store: Store, *values: bytes) -> list[bytes]:
    """Those of ``values`` that ``store`` still returns."""
    out = []
    for value in values:
        with contextlib.suppress(MissingValueError):
            out.append(await store.read_value(digest(value)))
    return out


async def stored_count(store: Store) -> int:
    return (await store.verify()).values


class ValueContract:
    """Values stored once, on every store that keeps them."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    async def open_store(self, **options: Any) -> Store:
        raise NotImplementedError

    async def reopen(self, store: Store) -> Store:
        raise NotImplementedError

    # -- storing and reading --------------------------------------------------------------

    async def test_an_append_stores_its_values_and_records_keep_their_refs(
        self, store: Store
    ) -> None:
        await store.append_many(
            [StreamAppend("s", (referring(b"r1", DOC, PROMPT),), values=given(DOC, PROMPT))]
        )
        store = await self.reopen(store)

        [read] = [r async for r in store.read("s")]
        assert read.refs == (digest(DOC), digest(PROMPT))
        assert [r.refs async for r in store.read_all()] == [read.refs]
        assert await store.read_value(digest(DOC)) == DOC
        assert await store.read_value(digest(PROMPT)) == PROMPT
        assert await store.has_values([digest(DOC), digest(OTHER)]) == {digest(DOC)}

    async def test_a_record_without_refs_reads_back_with_none(self, store: Store) -> None:
        await store.append("s", [NewRecord("t", b"plain")])

        assert [r.refs async for r in store.read("s")] == [()]

    async def test_an_identical_value_is_stored_once(self, store: Store) -> None:
        for n in range(3):
            await store.append_many(
                [StreamAppend(f"s{n}", (referring(b"r", DOC),), values=given(DOC))]
            )
        await store.append("s3", [referring(b"r", DOC)])  # already stored: bytes not sent

        assert await stored_count(store) == 1
        assert await store.read_value(digest(DOC)) == DOC

    async def test_one_parts_values_serve_another_parts_refs(self, store: Store) -> None:
        await store.append_many(
            [
                StreamAppend("a", (record_plain(),), values=given(DOC)),
                StreamAppend("b", (referring(b"b1", DOC),)),
            ]
        )

        assert [r.refs async for r in store.read("b")] == [(digest(DOC),)]

    # -- refusals -------------------------------------------------------------------------

    async def test_a_value_keyed_by_another_digest_is_refused_writing_nothing(
        self, store: Store
    ) -> None:
        wrong = {digest(OTHER): DOC, digest(PROMPT): PROMPT}
        with pytest.raises(InvalidStreamError, match="does not match its bytes"):
            await store.append_many([StreamAppend("s", (referring(b"r", PROMPT),), values=wrong)])

        assert await store.last_position("s") == 0
        assert await store.has_values([digest(OTHER), digest(DOC), digest(PROMPT)]) == set()

    async def test_malformed_values_and_refs_are_refused(self, store: Store) -> None:
        bad_parts = [
            StreamAppend("s", (), values={digest(DOC): "text"}),  # type: ignore[dict-item]
            StreamAppend("s", (), values={"not-a-digest": DOC}),
            StreamAppend("s", (NewRecord("t", b"r", refs=("nope",)),)),
            StreamAppend("s", (NewRecord("t", b"r", refs=[digest(DOC)]),)),  # type: ignore[arg-type]
            StreamAppend("s", (NewRecord("t", b"r", refs=(digest(DOC).upper(),)),)),
            StreamAppend("s", (), snapshot_refs=(digest(DOC),)),  # no snapshot
        ]
        for part in bad_parts:
            with pytest.raises(InvalidStreamError):
                await store.append_many([part])
        with pytest.raises(InvalidStreamError):
            await store.read_value("nope")
        with pytest.raises(InvalidStreamError):
            await store.has_values(digest(DOC))  # one string, not a list of them

        assert await store.last_position("s") == 0

    async def test_refs_to_values_not_stored_fail_the_append_alone(self, store: Store) -> None:
        await store.append("s", [NewRecord("t", b"first")])
        missing = referring(b"r", DOC, PROMPT)
        alone = StreamAppend("s", (missing,), values=given(OTHER), expected_position=1)

        outcomes = await asyncio.gather(
            store.append_many([alone, StreamAppend("t", (record_plain(),))]),
            store.append("u", [record_plain()]),
            return_exceptions=True,
        )

        refused = outcomes[0]
        assert isinstance(refused, MissingValueError)
        assert isinstance(refused, KeyError)
        assert set(refused.digests) == {digest(DOC), digest(PROMPT)}
        assert digest(DOC) in str(refused)
        assert not isinstance(outcomes[1], BaseException)
        assert await store.last_position("s") == 1
        assert await store.last_position("t") == 0
        assert await store.has_values([digest(OTHER)]) == set()  # its values not written

        again = StreamAppend("s", (missing,), values=given(DOC, PROMPT), expected_position=1)
        await store.append_many([again])
        assert await readable(store, DOC, PROMPT) == [DOC, PROMPT]

    async def test_an_append_refused_for_its_position_or_epoch_stores_no_value(
        self, store: Store
    ) -> None:
        await store.append("s", [record_plain()])
        epoch = await store.claim("s")

        with pytest.raises(ConflictError):
            await store.append_many(
                [StreamAppend("s", (referring(b"r", DOC),), expected_position=0, values=given(DOC))]
            )
        with pytest.raises(FencingError):
            await store.append_many(
                [StreamAppend("s", (referring(b"r", DOC),), epoch=epoch - 1, values=given(DOC))]
            )
        with pytest.raises(ConflictError):
            await store.append_many(
                [
                    StreamAppend("t", (referring(b"r", PROMPT),), values=given(PROMPT)),
                    StreamAppend("s", (record_plain(),), expected_position=0),
                ]
            )

        assert await store.has_values([digest(DOC), digest(PROMPT)]) == set()
        assert await stored_count(store) == 0

    async def test_reading_a_value_not_stored_raises_missing_value(self, store: Store) -> None:
        with pytest.raises(MissingValueError) as raised:
            await store.read_value(digest(DOC))

        assert raised.value.digests == (digest(DOC),)

    @pytest.mark.usefixtures("_opened")
    async def test_the_record_limit_applies_to_records_not_to_values(self) -> None:
        store = await self.open_store(max_record_bytes=1024)
        big = bytes(range(256)) * 8 * 1024  # 2 MiB

        await store.append_many([StreamAppend("s", (referring(b"r", big),), values=given(big))])
        with pytest.raises(RecordTooLargeError):
            await store.append("s", [NewRecord("t", b"x" * 1025)])

        assert await store.read_value(digest(big)) == big

    # -- snapshots ------------------------------------------------------------------------

    async def test_a_snapshot_refers_to_values(self, store: Store) -> None:
        await store.append("s", [record_plain(), record_plain()])
        await store.save_snapshot("s", 1, b"state", refs=(digest(DOC),), values=given(DOC))
        await store.append_many(
            [
                StreamAppend(
                    "s",
                    (),
                    snapshot=b"state2",
                    snapshot_refs=(digest(PROMPT),),
                    values=given(PROMPT),
                )
            ]
        )
        store = await self.reopen(store)

        snapshot = await store.load_snapshot("s")
        assert snapshot is not None
        assert (snapshot.position, snapshot.refs) == (2, (digest(PROMPT),))

    async def test_a_snapshot_referring_to_a_value_not_stored_is_refused(
        self, store: Store
    ) -> None:
        await store.append("s", [record_plain()])

        with pytest.raises(MissingValueError):
            await store.save_snapshot("s", 1, b"state", refs=(digest(DOC),))
        with pytest.raises(MissingValueError):
            await store.append_many(
                [StreamAppend("s", (), snapshot=b"state", snapshot_refs=(digest(DOC),))]
            )

        assert await store.load_snapshot("s") is None
        assert (await store.stream_info("s")).snapshot_position == 0

    # -- garbage collection ---------------------------------------------------------------

    async def test_collect_deletes_only_values_nothing_refers_to(self, store: Store) -> None:
        await store.append_many(
            [StreamAppend("s", (referring(b"r", DOC),), values=given(DOC, OTHER))]
        )

        assert await store.collect_values() == 1  # OTHER: given, never referred to
        assert await readable(store, DOC, OTHER) == [DOC]
        assert await store.collect_values() == 0

    async def test_truncated_records_no_longer_keep_their_values(self, store: Store) -> None:
        await store.append_many(
            [
                StreamAppend(
                    "s",
                    (referring(b"r1", DOC), referring(b"r2", PROMPT), referring(b"r3", PROMPT)),
                    values=given(DOC, PROMPT),
                )
            ]
        )
        await store.save_snapshot("s", 2, b"state")
        await store.truncate("s", 2)

        assert await store.collect_values() == 1
        assert await readable(store, DOC, PROMPT) == [PROMPT]  # position 3 still refers

    async def test_a_replaced_snapshot_no_longer_keeps_its_values(self, store: Store) -> None:
        await store.append("s", [record_plain(), record_plain()])
        await store.save_snapshot("s", 1, b"state", refs=(digest(DOC),), values=given(DOC))
        assert await store.collect_values() == 0

        await store.save_snapshot("s", 2, b"state2", refs=(digest(PROMPT),), values=given(PROMPT))

        assert await store.collect_values() == 1
        assert await readable(store, DOC, PROMPT) == [PROMPT]

    async def test_a_deleted_stream_no_longer_keeps_its_values(self, store: Store) -> None:
        await store.append_many(
            [
                StreamAppend("a", (referring(b"a", DOC, PROMPT),), values=given(DOC, PROMPT)),
                StreamAppend("b", (referring(b"b", PROMPT),)),
            ]
        )
        await store.save_snapshot("a", 1, b"state", refs=(digest(OTHER),), values=given(OTHER))

        await store.delete_stream("a")

        assert await store.collect_values() == 2
        assert await readable(store, DOC, PROMPT, OTHER) == [PROMPT]  # "b" still refers
        await store.delete_stream("b")
        assert await store.collect_values() == 1
        assert await stored_count(store) == 0

    async def test_a_collected_value_is_sent_again_when_missing(self, store: Store) -> None:
        await store.append_many([StreamAppend("s", (), values=given(DOC))])
        await store.collect_values()

        with pytest.raises(MissingValueError):
            await store.append("s", [referring(b"r", DOC)])
        await store.append_many([StreamAppend("s", (referring(b"r", DOC),), values=given(DOC))])

        assert await readable(store, DOC) == [DOC]

    async def test_collecting_beside_appends_never_loses_a_referred_value(
        self, store: Store
    ) -> None:
        """Appends that refer to a stored value without sending it, racing collections:
        each append either lands (and its value stays readable) or fails with
        MissingValueError, writing nothing."""
        values = [b"value %d" % n * 100 for n in range(20)]
        landed = refused = 0
        for n, value in enumerate(values):
            await store.append_many([StreamAppend("seed", (), values=given(value))])
            calls = [store.collect_values() for _ in range(2)]
            calls.insert(n % 3, store.append("s", [referring(b"r", value)]))  # every order
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            appended = outcomes[n % 3]
            if isinstance(appended, MissingValueError):
                refused += 1
            else:
                assert not isinstance(appended, BaseException), appended
                landed += 1
                assert await readable(store, value) == [value]

        assert landed + refused == len(values)
        referred = [r.refs[0] async for r in store.read("s")]
        assert len(referred) == landed
        assert await store.has_values(referred) == set(referred)
        assert (await store.verify()).ok

    # -- verify and lifecycle -------------------------------------------------------------

    async def test_verify_counts_the_values_and_finds_them_healthy(self, store: Store) -> None:
        await store.append_many(
            [StreamAppend("s", (referring(b"r", DOC, PROMPT),), values=given(DOC, PROMPT))]
        )

        report = await store.verify()

        assert report.ok
        assert report.values == 2

    async def test_value_calls_on_a_closed_store_raise_store_closed(self, store: Store) -> None:
        await store.close()

        for call in (
            store.read_value(digest(DOC)),
            store.has_values([digest(DOC)]),
            store.collect_values(),
        ):
            with pytest.raises(StoreClosedError):
                await call


def record_plain() -> NewRecord:
    return NewRecord("t", b"plain")


async def check_refused_everywhere(store: Store) -> None:
    """What a store that keeps no values does with them: refuse, writing nothing."""
    for part in [
        StreamAppend("s", (), values=given(DOC)),
        StreamAppend("s", (referring(b"r", DOC),)),
    ]:
        with pytest.raises(JournalError, match="does not store values"):
            await store.append_many([part])
    with pytest.raises(JournalError, match="does not store values"):
        await store.read_value(digest(DOC))
    assert await store.last_position("s") == 0
    assert await store.has_values([digest(DOC)]) == set()
    assert await store.collect_values() == 0


__all__ = ["ValueContract", "CorruptionError", "check_refused_everywhere", "digest", "given"]
