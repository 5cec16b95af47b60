"""A real PostgreSQL server in a temporary directory, for the tests and the benchmarks.

`PostgresServer.start` runs ``initdb`` in a new temporary directory and starts ``postgres``
on a unix socket there (no TCP port at all), as the unprivileged user `SERVER_USER` when
this process runs as root (PostgreSQL refuses to run as root). `PostgresServer.database`
makes a fresh database and returns its DSN; `PostgresServer.stop` stops the server and
removes the directory.

The server's settings are the caller's: the tests run it with ``fsync=off`` (they check
the store's semantics, not the disk's; `TEST_SETTINGS`), the cluster benchmark with
PostgreSQL's durable defaults. Nothing here needs pytest (``tests/journal/postgres.py``
wraps it in the tests' session-wide server).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

#: Unprivileged user that runs the server when this process runs as root.
SERVER_USER = "nobody"
#: Port number naming the unix socket (``.s.PGSQL.<port>``); nothing listens on TCP.
PORT = 5432
#: The tests' settings: no syncs (the tests check semantics, not the disk), and room for
#: many connections.
TEST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}
#: What to install when the programs are missing.
INSTALL_HINT = (
    "PostgreSQL's programs initdb, pg_ctl, postgres and psql are needed (Debian: "
    "apt-get install postgresql)"
)


def find_binaries() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``psql``, if PostgreSQL is installed."""
    candidates = [os.path.dirname(found) for found in [shutil.which("initdb")] if found]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        path = Path(os.path.realpath(Path(directory) / "initdb")).parent
        if all((path / name).exists() for name in ("initdb", "pg_ctl", "postgres", "psql")):
            return path
    return None


#: Every server's directory starts so, and holds the id of the process that started it.
PREFIX = "actorflow-pg-"
OWNER_FILE = "owner.pid"


class PostgresServer:
    """One PostgreSQL server in a temporary directory, stopped by `stop`."""

    def __init__(self, binaries: Path, settings: Mapping[str, str] = TEST_SETTINGS) -> None:
        self.binaries = binaries
        self.settings = dict(settings)
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX))
        (self.root / OWNER_FILE).write_text(str(os.getpid()))
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
        """``initdb``, then ``pg_ctl start`` with this server's settings; waits until it
        accepts connections."""
        self._run(
            str(self.binaries / "initdb"),
            "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-locale", "--no-sync",
        )  # fmt: skip
        options = f"-c listen_addresses='' -k {self.socket_dir} -p {PORT}"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
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
        """Stop the server (``-m fast``) and remove its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str) -> str:
        """The DSN of ``database`` on this server (user ``postgres``, over the socket)."""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={PORT}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one SQL statement with ``psql``; its unaligned output."""
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
        """Drop the database ``dsn`` names, disconnecting whoever is still on it."""
        name = dsn.split("/")[3].split("?")[0]
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def stop_orphans(binaries: Path) -> int:
    """Stop the servers that earlier runs started and never stopped (their process was
    killed before its clean-up: a timeout's SIGKILL, say), and remove their directories;
    return how many. A server whose starting process still runs is left alone."""
    stopped = 0
    for root in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            owner = int((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being made
        try:
            os.kill(owner, 0)
            continue  # its process is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        if (root / "data" / "postmaster.pid").exists():
            subprocess.run(
                [str(binaries / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"],
                capture_output=True, timeout=60, check=False,
                **({"user": SERVER_USER} if os.geteuid() == 0 else {}),
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
        stopped += 1
    return stopped


def started(settings: Mapping[str, str] = TEST_SETTINGS) -> PostgresServer:
    """A new server with ``settings``, running; a `RuntimeError` saying what to install
    when PostgreSQL's programs are missing. The caller stops it. Servers that earlier runs
    left behind are stopped first (`stop_orphans`)."""
    binaries = find_binaries()
    if binaries is None:
        raise RuntimeError(f"PostgreSQL is not installed: {INSTALL_HINT}")
    stop_orphans(binaries)
    server = PostgresServer(binaries, settings)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
