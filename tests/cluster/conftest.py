"""The cluster tests' PostgreSQL: the session's server of `tests.journal.postgres` (started on
first use, stopped when the session ends), and a fresh database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.fleet import Postgres
from tests.journal.postgres import server, stop_server


@pytest.fixture(scope="session", autouse=True)
def _stop_postgres_at_the_end() -> Iterator[None]:
    yield
    stop_server()


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """The session's server and a fresh, empty database on it (dropped afterwards)."""
    running = server()
    dsn = running.database()
    yield Postgres(running, dsn)
    running.drop(dsn)
