"""A real PostgreSQL server for the tests: started once per test session, on demand.

The server itself (``initdb`` in a temporary directory, a unix socket, an unprivileged user
when the tests run as root) is `benchmarks._postgres.PostgresServer`, shared with the
cluster benchmark; it runs here with ``fsync=off`` (`TEST_SETTINGS`): the tests check the
store's semantics, not the disk's. Each test gets a fresh database from
`PostgresServer.database`.

Missing binaries fail the tests with a message saying what to install, unless
``ACTORFLOW_SKIP_POSTGRES=1`` asks for the PostgreSQL tests to be skipped.
"""

from __future__ import annotations

import os

import pytest

from benchmarks._postgres import (
    INSTALL_HINT,
    PORT,
    SERVER_USER,
    TEST_SETTINGS,
    PostgresServer,
    find_binaries,
    stop_orphans,
)

__all__ = ["PORT", "SERVER_USER", "PostgresServer", "find_binaries", "server", "stop_server"]

_server: PostgresServer | None = None


def server() -> PostgresServer:
    """The session's server, started on first use (see `stop_server`)."""
    global _server
    if _server is None:
        if os.environ.get("ACTORFLOW_SKIP_POSTGRES") == "1":
            pytest.skip("ACTORFLOW_SKIP_POSTGRES=1: the PostgreSQL tests are skipped")
        binaries = find_binaries()
        if binaries is None:
            pytest.fail(
                f"PostgreSQL is not installed: for the journal's PostgreSQL tests, "
                f"{INSTALL_HINT}. Set ACTORFLOW_SKIP_POSTGRES=1 to skip them explicitly.",
                pytrace=False,
            )
        stop_orphans(binaries)  # servers of earlier runs killed before their clean-up
        started = PostgresServer(binaries, TEST_SETTINGS)
        try:
            started.start()
        except BaseException:
            started.stop()
            raise
        _server = started
    return _server


def stop_server() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None
