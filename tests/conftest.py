"""Shared test set-up: async tests run through anyio's pytest plugin on asyncio and uvloop."""

from __future__ import annotations

import sys

import pytest

_BACKENDS = [pytest.param(("asyncio", {}), id="asyncio")]
if sys.platform != "win32":
    _BACKENDS.append(pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"))


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    """Every async test runs on the plain asyncio loop and on uvloop."""
    return request.param  # type: ignore[no-any-return]
