"""Shared test set-up: async tests run through anyio's pytest plugin on asyncio and uvloop."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

_BACKENDS = [pytest.param(("asyncio", {}), id="asyncio")]
if sys.platform != "win32":
    _BACKENDS.append(pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"))


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    """Every async test runs on the plain asyncio loop and on uvloop."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="session", autouse=True)
def _stop_postgres_at_the_end() -> Iterator[None]:
    """The PostgreSQL server some tests start (tests/journal/postgres.py) stops with the
    session."""
    yield
    from tests.journal.postgres import stop_server

    stop_server()


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server; dropped afterwards."""
    from tests.journal.postgres import server

    running = server()
    dsn = running.database()
    yield dsn
    running.drop(dsn)
