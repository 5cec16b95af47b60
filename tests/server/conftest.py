"""Fixtures of the server suite: a deadline on every async test, fresh recorded effects."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from tests.server import app_under_test

#: No in-process test needs more than a fraction of this; one that hangs fails instead,
#: and its runtime and store still close.
TEST_DEADLINE = 20.0


@pytest.fixture(autouse=True)
def _reset_effects() -> None:
    app_under_test.reset()


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
