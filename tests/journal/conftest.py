"""The journal tests' PostgreSQL server: started on first use, stopped when the session ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.journal.postgres import PostgresServer, server, stop_server


@pytest.fixture(scope="session", autouse=True)
def _stop_postgres_at_the_end() -> Iterator[None]:
    yield
    stop_server()


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server; dropped afterwards."""
    running: PostgresServer = server()
    dsn = running.database()
    yield dsn
    running.drop(dsn)
