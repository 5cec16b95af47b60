"""A deadline on every async test of a folder: its conftest says
``pytest_pyfunc_call = deadline_hook(seconds)``.

A test that hangs fails with `TimeoutError` inside its own event loop, so its runtime and
store still close (pytest-timeout would kill the thread and leave the store's threads
behind).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest


def deadline_hook(seconds: float) -> Callable[[pytest.Function], Iterator[None]]:
    """A ``pytest_pyfunc_call`` hook running each async test under ``seconds``."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Iterator[None]:
        original = pyfuncitem.obj
        if inspect.iscoroutinefunction(original):

            @functools.wraps(original)
            async def bounded(**kwargs: Any) -> None:
                with anyio.fail_after(seconds):
                    await original(**kwargs)

            pyfuncitem.obj = bounded
        try:
            yield
        finally:
            pyfuncitem.obj = original

    return pytest_pyfunc_call
