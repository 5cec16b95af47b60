"""The cluster tests' PostgreSQL: the session's server (`tests.journal.postgres`, stopped by
tests/conftest.py when the session ends) and this test's fresh database on it."""

from __future__ import annotations

import pytest

from tests.cluster.fleet import Postgres
from tests.journal.postgres import server


@pytest.fixture
def postgres(postgres_dsn: str) -> Postgres:
    """The session's server, with the DSN of a fresh, empty database (dropped afterwards)."""
    return Postgres(server(), postgres_dsn)
