"""A real PostgreSQL server for the tests: started once per test session, on demand.

`server()` runs ``initdb`` in a temporary directory and starts ``postgres`` on a unix socket
there (no TCP port at all), as an unprivileged user when the tests run as root (PostgreSQL
refuses to run as root). Each test then gets a fresh database from `PostgresServer.database`.
The server runs with ``fsync=off``: the tests check the store's semantics, not the disk's.

Missing binaries fail the tests with a message saying what to install, unless
``ACTORFLOW_SKIP_POSTGRES=1`` asks for the PostgreSQL tests to be skipped.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

#: Unprivileged user that runs the server when the tests run as root.
SERVER_USER = "nobody"
#: Port number naming the unix socket (``.s.PGSQL.<port>``); nothing listens on TCP.
PORT = 5432


def find_binaries() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``psql``, if PostgreSQL is installed."""
    candidates = [os.path.dirname(found) for found in [shutil.which("initdb")] if found]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        path = Path(os.path.realpath(Path(directory) / "initdb")).parent
        if all((path / name).exists() for name in ("initdb", "pg_ctl", "postgres", "psql")):
            return path
    return None


class PostgresServer:
    """One PostgreSQL server in a temporary directory, stopped by `stop`."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.root = Path(tempfile.mkdtemp(prefix="actorflow-pg-"))
        self.data = self.root / "data"
        self.socket_dir = str(self.root)
        self._names = itertools.count(1)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", SERVER_USER, "--"]

    def _run(self, *args: str, as_server: bool = True) -> str:
        command = [*(self._as_user if as_server else []), *args]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=60, check=False, cwd=self.root
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self) -> None:
        self._run(
            str(self.binaries / "initdb"),
            "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-locale", "--no-sync",
        )  # fmt: skip
        options = (
            f"-c listen_addresses='' -k {self.socket_dir} -p {PORT} -c fsync=off "
            f"-c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.binaries / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.root / "log"), "-w", "-t", "60", "start",
        )  # fmt: skip

    def restart(self, mode: str = "immediate") -> None:
        """``pg_ctl restart -m MODE``: every connection is cut. (With ``-l``, as at the
        start: else the new server would hold this process's output pipe open.)"""
        self._run(
            str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", mode,
            "-l", str(self.root / "log"), "-w", "-t", "60", "restart",
        )  # fmt: skip

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={PORT}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        return self._run(
            str(self.binaries / "psql"), "-h", self.socket_dir, "-p", str(PORT), "-U",
            "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", statement,
            as_server=False,
        )  # fmt: skip

    def database(self) -> str:
        """A new, empty database; its DSN."""
        name = f"journal_{os.getpid()}_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE template0 STRATEGY FILE_COPY")
        return self.dsn(name)

    def drop(self, dsn: str) -> None:
        name = dsn.split("/")[3].split("?")[0]
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


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
                "PostgreSQL is not installed: the journal's PostgreSQL tests need initdb, "
                "pg_ctl, postgres and psql (Debian: apt-get install postgresql). Set "
                "ACTORFLOW_SKIP_POSTGRES=1 to skip them explicitly.",
                pytrace=False,
            )
        started = PostgresServer(binaries)
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
