"""What processes sharing a PostgreSQL journal need to share work: notices and leases.

Generic, like the rest of `journal`: names are opaque strings.

**Notices.** A store opened with ``notify_prefixes`` sends a PostgreSQL NOTIFY, in the
same transaction, for every append to a stream whose name starts with one of them:
listeners hear of it once it is committed, and never of an append that was not. Releasing
a lease sends one too. `Listener` hears them on a connection of its own; when that
connection is lost, notices may have been missed, so after reconnecting it says
``resync`` (look again at whatever you watch).

**Leases.** A lease is a named row with an owner, a fencing epoch and an expiry, on the
database's clock (never a process's): `Leases.acquire` takes a lease that is free,
expired, or already the caller's; its epoch grows whenever it changes hands. Members
(the processes) heartbeat with `Leases.renew`, which extends every lease they hold and
says which those are, so a member learns at once of a lease taken from it after it
expired. `Leases.acquire_many` takes many leases in one statement. Every statement that
locks several lease rows locks them in name order, so that two of them running at once
wait for each other instead of deadlocking. A lease does not stop a former holder from
writing: fence its writes with stream epochs (`Store.claim`), which the database checks
in every transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, NamedTuple

#: Channels of the NOTIFYs (PostgreSQL identifiers).
APPENDED_CHANNEL = "journal_appended"
RELEASED_CHANNEL = "journal_released"

#: Schema version 2 adds these tables (see `journal._postgres_schema`).
CREATE_TABLES = [
    """
    CREATE TABLE journal_leases (
        name text COLLATE "C" PRIMARY KEY,
        owner text NOT NULL,
        epoch bigint NOT NULL CHECK (epoch >= 1),
        expires_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX journal_leases_owner ON journal_leases (owner)",
    """
    CREATE TABLE journal_members (
        member text COLLATE "C" PRIMARY KEY,
        info bytea NOT NULL,
        started_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL
    )
    """,
]

#: Notify every appended stream that matched a prefix: payload "<last position> <name>".
NOTIFY_APPENDED = f"SELECT pg_notify('{APPENDED_CHANNEL}', n) FROM unnest($1::text[]) AS n"

#: Released leases have no owner and an expiry in the infinite past; their rows stay, so
#: that epochs keep growing across releases.
_FREE = "''"
_SECONDS = "make_interval(secs => $3)"

#: Take each of the leases named ``$1`` that is free, expired or already ``$2``'s; return
#: the names and epochs of those taken. The rows are inserted (or locked, where they
#: exist: even those left as they are) in name order.
_ACQUIRE = (
    "INSERT INTO journal_leases AS l (name, owner, epoch, expires_at) "
    f"SELECT n, $2, 1, now() + {_SECONDS} FROM unnest($1::text[]) AS n ORDER BY n "
    "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at, "
    "epoch = l.epoch + (l.owner <> excluded.owner)::int "
    "WHERE l.owner = excluded.owner OR l.expires_at <= now() "
    "RETURNING name, epoch"
)

_RENEW_MEMBER = (
    "INSERT INTO journal_members (member, info, started_at, expires_at) "
    f"VALUES ($1, $2, now(), now() + {_SECONDS}) "
    "ON CONFLICT (member) DO UPDATE SET info = excluded.info, expires_at = excluded.expires_at"
)
#: The rows of statements that change several leases are locked first, in name order
#: (``ORDER BY name FOR UPDATE`` in a materialised CTE; the UPDATE joins on them).
_RENEW_LEASES = (
    "WITH mine AS MATERIALIZED (SELECT name FROM journal_leases WHERE owner = $1 "
    "ORDER BY name FOR UPDATE) "
    "UPDATE journal_leases AS l SET expires_at = now() + make_interval(secs => $2) "
    "FROM mine WHERE l.name = mine.name AND l.owner = $1 RETURNING l.name"
)
_RELEASE = (
    "WITH mine AS MATERIALIZED (SELECT name FROM journal_leases "
    "WHERE name = ANY($1::text[]) AND owner = $2 ORDER BY name FOR UPDATE), "
    f"freed AS (UPDATE journal_leases AS l SET owner = {_FREE}, expires_at = '-infinity' "
    "FROM mine WHERE l.name = mine.name AND l.owner = $2 RETURNING l.name) "
    f"SELECT count(pg_notify('{RELEASED_CHANNEL}', $2 || E'\\n' || name)) FROM freed"
)
_RELEASE_ALL = (
    "WITH mine AS MATERIALIZED (SELECT name FROM journal_leases WHERE owner = $1 "
    "ORDER BY name FOR UPDATE), "
    f"freed AS (UPDATE journal_leases AS l SET owner = {_FREE}, expires_at = '-infinity' "
    "FROM mine WHERE l.name = mine.name AND l.owner = $1 RETURNING l.name) "
    f"SELECT count(pg_notify('{RELEASED_CHANNEL}', $1 || E'\\n' || name)) FROM freed"
)
_FREE_EXPIRED = (
    "WITH old AS MATERIALIZED (SELECT name, owner FROM journal_leases "
    f"WHERE name = ANY($1::text[]) AND owner <> {_FREE} AND expires_at <= now() "
    "ORDER BY name FOR UPDATE), "
    f"freed AS (UPDATE journal_leases AS l SET owner = {_FREE}, expires_at = '-infinity' "
    "FROM old WHERE l.name = old.name RETURNING old.owner, l.name) "
    f"SELECT count(pg_notify('{RELEASED_CHANNEL}', owner || E'\\n' || name)) FROM freed"
)
_EXPIRED = (
    f"SELECT name FROM journal_leases WHERE owner <> {_FREE} AND expires_at <= now() "
    "ORDER BY expires_at, name LIMIT $1"
)
_HOLDERS = (
    "SELECT name, owner, epoch, extract(epoch FROM expires_at - now())::float8 "
    f"FROM journal_leases WHERE name = ANY($1::text[]) AND owner <> {_FREE}"
)
_HELD_BY = (
    "SELECT name, owner, epoch, extract(epoch FROM expires_at - now())::float8 "
    "FROM journal_leases WHERE owner = $1 ORDER BY name"
)
_MEMBERS = (
    "SELECT member, info, extract(epoch FROM started_at)::float8, "
    "extract(epoch FROM expires_at - now())::float8 FROM journal_members "
    "WHERE expires_at > now() ORDER BY started_at, member"
)
#: Members gone for an hour are forgotten.
_FORGET = "DELETE FROM journal_members WHERE expires_at < now() - interval '1 hour'"


class Notice(NamedTuple):
    """What a `Listener` heard: an append committed to ``name`` (through ``position``), a
    lease called ``name`` released (by ``owner``), or ``resync``: notices may have been
    missed."""

    kind: Literal["appended", "released", "resync"]
    name: str = ""
    position: int = 0
    owner: str = ""


class LeaseInfo(NamedTuple):
    """A held (or expired, not yet taken) lease: who holds it, its epoch, and the seconds
    until it expires (negative: expired)."""

    name: str
    owner: str
    epoch: int
    expires_in: float


class Member(NamedTuple):
    """A live member: its name, the bytes it published with its last heartbeat, when it
    first joined (Unix seconds, the database's clock), and seconds until it expires."""

    member: str
    info: bytes
    started_at: float
    expires_in: float


class Leases:
    """Leases and members in the journal's database (``store.leases``)."""

    def __init__(self, run: Callable[[Callable[[Any], Awaitable[Any]], str], Awaitable[Any]]):
        self._run = run  # runs a function on a pooled connection, retrying reconnects

    async def acquire(self, name: str, owner: str, ttl: float) -> int | None:
        """Take lease ``name`` for ``owner`` for ``ttl`` seconds if it is free, expired or
        already ``owner``'s; return its epoch, or None if another holds it."""
        return (await self.acquire_many([name], owner, ttl)).get(name)

    async def acquire_many(self, names: Sequence[str], owner: str, ttl: float) -> dict[str, int]:
        """`acquire` of each of ``names`` (duplicates count once), in one statement:
        ``{name: epoch}`` of those taken (or already ``owner``'s); the others are absent."""
        _check_owner(owner)
        wanted = sorted(set(names))
        if not wanted:
            return {}
        rows = await self._run(
            lambda conn: conn.fetch(_ACQUIRE, wanted, owner, float(ttl)),
            f"acquiring {wanted[0]!r}" if len(wanted) == 1 else f"acquiring {len(wanted)} leases",
        )
        return {row[0]: row[1] for row in rows}

    async def renew(self, owner: str, ttl: float, info: bytes = b"") -> set[str]:
        """Heartbeat: ``owner`` is alive for ``ttl`` more seconds (publishing ``info``), as
        is every lease it still holds; return their names."""
        _check_owner(owner)

        async def renew(conn: Any) -> set[str]:
            async with conn.transaction():
                await conn.execute(_RENEW_MEMBER, owner, bytes(info), float(ttl))
                rows = await conn.fetch(_RENEW_LEASES, owner, float(ttl))
            return {row[0] for row in rows}

        held: set[str] = await self._run(renew, f"renewing the leases of {owner!r}")
        return held

    async def release(self, names: Sequence[str], owner: str) -> int:
        """Give up those of ``names`` that ``owner`` holds; return how many."""
        _check_owner(owner)
        if not names:
            return 0
        count: int = await self._run(
            lambda conn: conn.fetchval(_RELEASE, list(names), owner), "releasing leases"
        )
        return count

    async def leave(self, owner: str) -> int:
        """``owner`` leaves: release all its leases and forget it as a member."""
        _check_owner(owner)

        async def leave(conn: Any) -> int:
            async with conn.transaction():
                count: int = await conn.fetchval(_RELEASE_ALL, owner)
                await conn.execute("DELETE FROM journal_members WHERE member = $1", owner)
                await conn.execute(_FORGET)
            return count

        count: int = await self._run(leave, f"leaving as {owner!r}")
        return count

    async def expired(self, limit: int = 1000) -> list[str]:
        """Leases whose holder let them expire and nobody has taken since, oldest first."""
        rows = await self._run(lambda conn: conn.fetch(_EXPIRED, limit), "reading leases")
        return [row[0] for row in rows]

    async def free_expired(self, names: Sequence[str]) -> int:
        """Free those of ``names`` whose lease expired (its holder stopped renewing it) and
        announce each as released by that holder; return how many."""
        if not names:
            return 0
        count: int = await self._run(
            lambda conn: conn.fetchval(_FREE_EXPIRED, list(names)), "freeing expired leases"
        )
        return count

    async def holders(self, names: Sequence[str]) -> dict[str, LeaseInfo]:
        """The held or expired-but-not-taken leases among ``names``."""
        rows = await self._run(lambda conn: conn.fetch(_HOLDERS, list(names)), "reading leases")
        return {row[0]: LeaseInfo(*row) for row in rows}

    async def held_by(self, owner: str) -> list[LeaseInfo]:
        """The leases ``owner`` holds (expired ones too, until taken)."""
        rows = await self._run(lambda conn: conn.fetch(_HELD_BY, owner), "reading leases")
        return [LeaseInfo(*row) for row in rows]

    async def members(self) -> list[Member]:
        """The live members, the earliest joined first."""
        rows = await self._run(lambda conn: conn.fetch(_MEMBERS), "reading members")
        return [Member(row[0], bytes(row[1]), row[2], row[3]) for row in rows]


def _check_owner(owner: str) -> None:
    if not isinstance(owner, str) or not 1 <= len(owner) <= 200 or not owner.isprintable():
        raise ValueError(f"a lease owner is a name of 1 to 200 printable characters, got {owner!r}")


class Listener:
    """Hears the journal's notices on a connection of its own (``store.listen()``).

    Use as an async context manager and iterate. The connection is checked every
    ``keepalive`` seconds; when it is lost, the listener reconnects (backing off up to a
    second) and then yields ``Notice("resync")``. At most ``max_queued`` notices wait to be
    read; past that they are dropped for a ``resync``.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        *,
        keepalive: float = 2.0,
        max_queued: int = 100_000,
    ) -> None:
        self._connect = connect
        self.keepalive = keepalive
        self._queue: asyncio.Queue[Notice] = asyncio.Queue()
        self._max_queued = max_queued
        self._overflowed = False
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        #: How many times the connection was re-established.
        self.reconnects = 0

    async def __aenter__(self) -> Listener:
        await self._open()
        self._task = asyncio.get_running_loop().create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self._close()

    def __aiter__(self) -> Listener:
        return self

    async def __anext__(self) -> Notice:
        notice = await self._queue.get()
        if notice.kind == "resync":
            self._overflowed = False
        return notice

    async def _open(self) -> None:
        conn = await self._connect()
        await conn.add_listener(APPENDED_CHANNEL, self._appended)
        await conn.add_listener(RELEASED_CHANNEL, self._released)
        conn.add_termination_listener(lambda _conn: self._lost.set())
        self._conn = conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()  # (a listening connection has nothing to finish)

    def _put(self, notice: Notice) -> None:
        if self._overflowed:
            return
        if self._queue.qsize() >= self._max_queued:
            self._overflowed = True
            self._queue.put_nowait(Notice("resync"))
            return
        self._queue.put_nowait(notice)

    def _appended(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        position, _, name = payload.partition(" ")
        self._put(Notice("appended", name, int(position)))

    def _released(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        owner, _, name = payload.partition("\n")
        self._put(Notice("released", name, owner=owner))

    async def _watch(self) -> None:
        """Check the connection every `keepalive` seconds; reconnect when it is lost."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self.keepalive)
            if not self._lost.is_set():
                try:
                    await asyncio.wait_for(self._conn.fetchval("SELECT 1"), self.keepalive)
                    continue
                except Exception:  # lost, or too slow to trust: listen on a new connection
                    pass
            await self._close()
            self._lost = asyncio.Event()
            backoff = 0.05
            while True:
                try:
                    await self._open()
                    break
                except Exception:
                    await asyncio.sleep(backoff)
                    backoff = min(1.0, backoff * 2)
            self.reconnects += 1
            self._put(Notice("resync"))
