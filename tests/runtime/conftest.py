"""Fixtures of the runtime suite: a journal file per test, and a deadline on every test."""

from __future__ import annotations

import functools
import inspect
import pathlib
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

#: No test here needs more than a fraction of this; one that hangs fails instead, and its
#: runtime and store still close (pytest-timeout would leave the store's threads behind).
TEST_DEADLINE = 20.0


@pytest.fixture
def db(tmp_path: pathlib.Path) -> pathlib.Path:
    """Where this test's SQLite journal lives (a restart reopens the same file)."""
    return tmp_path / "journal.db"


@pytest.hookimpl(hookwrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Iterator[None]:
    """Run every async test of this folder under `TEST_DEADLINE`."""
    original = pyfuncitem.obj
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def bounded(**kwargs: Any) -> None:
            with anyio.fail_after(TEST_DEADLINE):
                await original(**kwargs)

        pyfuncitem.obj = bounded
    try:
        yield
    finally:
        pyfuncitem.obj = original
