"""What only the memory store does (the rest is the contract): its identity."""

from __future__ import annotations

import pytest

from journal import MemoryStore


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
