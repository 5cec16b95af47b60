"""The server gives the C heap's free pages back after a wave of passivations
(`actorflow.server._memory`): once the actors in memory have fallen far enough from their
peak, not while they are steady or growing, and never more than once per fall."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from actorflow.server import _memory

pytestmark = pytest.mark.anyio


async def trims_for(counts: list[int], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Run the trimming loop over ``counts`` (one per check); the counts it trimmed at."""
    trimmed: list[int] = []
    seen: Iterator[int] = iter(counts)
    now = [0]
    done = anyio.Event()

    def in_memory() -> int:
        try:
            now[0] = next(seen)
        except StopIteration:
            done.set()
        return now[0]

    monkeypatch.setattr(_memory, "CHECK_EVERY", 0.001)
    monkeypatch.setattr(_memory, "malloc_trim", lambda: lambda: trimmed.append(now[0]))
    async with anyio.create_task_group() as group:
        group.start_soon(_memory.trim_after_passivations, in_memory)
        await done.wait()
        group.cancel_scope.cancel()
    return trimmed


async def test_a_wave_of_passivations_trims_the_heap_once(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = [0, 400, 2000, 2000, 1900, 1400, 900, 0, 0, 0]
    # 2000 -> 1400 is a fall of 600 >= 500: trim; then 1400 -> 900 is 500 more: trim;
    # 900 -> 0 is a fall of 900: trim; steady at 0: nothing more
    assert await trims_for(counts, monkeypatch) == [1400, 900, 0]


async def test_steady_or_growing_actors_never_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = [0, 10, 500, 5000, 5000, 4990, 4995, 6000]
    assert await trims_for(counts, monkeypatch) == []


async def test_a_small_server_trims_after_a_quarter_of_its_peak_went(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = [100, 90, 80, 75, 74, 40, 40]
    # threshold: max(16, min(500, 100 // 4)) = 25: the fall to 75 trims; then from 75 the
    # threshold is max(16, 18) = 18: the fall to 40 trims
    assert await trims_for(counts, monkeypatch) == [75, 40]


def test_malloc_trim_is_found_on_glibc() -> None:
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim exists only in glibc")
    trim = _memory.malloc_trim()
    assert trim is not None
    trim()  # returns free pages; must not fail
