"""`SqliteStore.create_stream` and `SqliteStore.adopt_identity`: what copying a journal
into a SQLite file needs (see `journal.copy_journal`), kept apart from the store itself."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from journal._errors import StoreNotEmptyError
from journal._store import check_identity, check_position

if TYPE_CHECKING:
    from journal._sqlite_txn import Transaction as _Transaction

#: The streams that hold something: records, truncated positions or an owner epoch.
_HELD = (
    "FROM streams WHERE first_position > 1 OR epoch > 0 OR "
    "EXISTS (SELECT 1 FROM records WHERE stream_id = streams.id)"
)


class SqliteRestore:
    """The copy primitives of `SqliteStore`, run through its writer like any write."""

    identity: str
    _path: str

    if TYPE_CHECKING:

        async def _submit(self, apply: Callable[[_Transaction], Any]) -> Any: ...

    async def create_stream(self, stream: str, *, first_position: int = 1, epoch: int = 0) -> None:
        """Create ``stream`` with no records, its next record at ``first_position``, under
        ``epoch`` (see `Store.create_stream`)."""
        check_position(stream, "first_position", first_position, 1)
        check_position(stream, "epoch", epoch, 0)

        def apply(txn: _Transaction) -> None:
            txn.update_stream(txn.changes.create(stream, first_position, epoch))

        await self._submit(apply)

    async def adopt_identity(self, identity: str) -> None:
        """Take ``identity`` as the journal's identity: only while the file holds no
        stream (checked and changed in one transaction)."""
        check_identity(identity)
        where = self._path

        def apply(txn: _Transaction) -> None:
            refuse_unless_empty(txn.conn, where)
            txn.conn.execute("UPDATE identity SET value = ?", (identity,))

        await self._submit(apply)
        self.identity = identity


def refuse_unless_empty(conn: sqlite3.Connection, where: str) -> None:
    """Raise `StoreNotEmptyError` naming a few of the streams the file holds, if any."""
    count = int(conn.execute(f"SELECT count(*) {_HELD}").fetchone()[0])
    if count:
        names = [str(n) for (n,) in conn.execute(f"SELECT name {_HELD} ORDER BY name LIMIT 3")]
        raise StoreNotEmptyError(where, count, names)
