"""What only the memory store does (the rest is the contract): its identity."""

from __future__ import annotations

import pytest

from journal import MemoryStore, NewRecord, Snapshot


def test_each_memory_store_is_a_journal_of_its_own() -> None:
    identities = {MemoryStore().identity for _ in range(100)}

    assert len(identities) == 100


def test_a_memory_store_can_be_given_its_identity() -> None:
    assert MemoryStore(identity="0123456789abcdef" * 2).identity == "0123456789abcdef" * 2


@pytest.mark.parametrize(
    "bad", ["", "0123456789ABCDEF" * 2, "0123456789abcdef", "g" * 32, "0" * 33, 42, b"0" * 32]
)
def test_a_malformed_identity_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="32 lowercase hex characters"):
        MemoryStore(identity=bad)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_restored_stream_keeps_its_positions_and_snapshot() -> None:
    store = MemoryStore()
    records = [NewRecord("t", b"a"), NewRecord("t", b"b")]
    store.restore_stream("s", records, first=8, snapshot=(7, b"state"))
    info = await store.stream_info("s")
    assert (info.first_position, info.last_position, info.snapshot_position) == (8, 9, 7)
    assert [(r.position, r.data) async for r in store.read("s")] == [(8, b"a"), (9, b"b")]
    assert await store.load_snapshot("s") == Snapshot("s", 7, b"state")
    await store.append("s", [NewRecord("t", b"c")], expected_position=9)  # goes on from there
    assert await store.last_position("s") == 10


def test_restoring_is_refused_over_a_stream_or_past_its_records() -> None:
    store = MemoryStore()
    store.restore_stream("s", [NewRecord("t", b"a")])
    with pytest.raises(ValueError, match="exists"):
        store.restore_stream("s", [])
    with pytest.raises(ValueError, match="snapshot at 5"):
        store.restore_stream("u", [NewRecord("t", b"a")], first=3, snapshot=(5, b""))
