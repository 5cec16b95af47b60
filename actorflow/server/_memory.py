"""Giving memory back to the system once actors are passivated.

A passivated actor leaves nothing in the runtime, but the memory its host used stays with
the process: the C allocator keeps freed pages for later, and CPython's own allocator
keeps every 1 MiB arena that still holds one live object. `actorflow serve` asks the C
allocator to return its free pages (glibc's ``malloc_trim``) after a wave of
passivations. What CPython's allocator keeps, it keeps; ``PYTHONMALLOC=malloc`` routes
every allocation through the C allocator, so that trimming reaches all of it (see
docs/api.md, "Memory", for what each returns, measured).

It also tunes CPython's cyclic garbage collector (`tune_gc`): with a thousand actors in
memory, collections triggered every 700 allocations took a fifth of a worker's CPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

import anyio

log = logging.getLogger("actorflow.serve")

#: How often the number of actors in memory is looked at, in seconds.
CHECK_EVERY = 2.0
#: Passivations since the last trim that make the next one worth its pause (about ten
#: milliseconds for a few hundred MiB of heap): this many, or a quarter of the peak if
#: fewer, but at least `TRIM_AT_LEAST`.
TRIM_AFTER = 500
TRIM_AT_LEAST = 16


#: `actorflow serve --gc-threshold`'s default: allocations (less deallocations) between two
#: collections of the youngest generation (CPython's default is 700).
GC_THRESHOLD = 10_000


def tune_gc(threshold: int) -> None:
    """Collect the youngest generation every ``threshold`` allocations (0: leave CPython's
    setting), and keep the objects alive now (the loaded code, the recovered runtime) out
    of every later collection (`gc.freeze`)."""
    if threshold:
        gc.set_threshold(threshold, *gc.get_threshold()[1:])
    gc.freeze()


def malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``, if this process runs on glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def call() -> None:
        trim(0)

    return call


async def trim_after_passivations(in_memory: Callable[[], int]) -> None:
    """Trim the C heap whenever the number of actors in memory (``in_memory()``) has
    fallen by `TRIM_AFTER`, or by a quarter of its peak, since the last trim. Runs until
    cancelled; does nothing where ``malloc_trim`` does not exist."""
    trim = malloc_trim()
    if trim is None:
        return
    peak = 0
    while True:
        await anyio.sleep(CHECK_EVERY)
        now = in_memory()
        peak = max(peak, now)
        if peak - now >= max(TRIM_AT_LEAST, min(TRIM_AFTER, peak // 4)):
            began = time.perf_counter()
            trim()
            log.debug(
                "event=heap-trimmed actors_in_memory=%d was=%d ms=%.1f",
                now,
                peak,
                (time.perf_counter() - began) * 1e3,
            )
            peak = now
