"""`PostgresStore.create_stream` and `PostgresStore.adopt_identity`: what copying a journal
into PostgreSQL needs (see `journal.copy_journal`), kept apart from the store itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from journal._errors import StoreNotEmptyError
from journal._store import check_identity, check_position

if TYPE_CHECKING:
    from journal._postgres_txn import Transaction

#: The streams that hold something: records, truncated positions or an owner epoch.
_HELD = "FROM journal_streams WHERE last_position > 0 OR epoch > 0"


class PostgresRestore:
    """The copy primitives of `PostgresStore`, run through its writer like any write."""

    identity: str

    if TYPE_CHECKING:

        def _submit(
            self, op: Callable[[Transaction], Awaitable[Any]], streams: tuple[str, ...]
        ) -> Awaitable[Any]: ...

    async def create_stream(self, stream: str, *, first_position: int = 1, epoch: int = 0) -> None:
        """Create ``stream`` with no records, its next record at ``first_position``, under
        ``epoch`` (see `Store.create_stream`)."""
        check_position(stream, "first_position", first_position, 1)
        check_position(stream, "epoch", epoch, 0)

        async def apply(txn: Transaction) -> None:
            await txn.stream_id(txn.changes.create(stream, first_position, epoch))

        await self._submit(apply, (stream,))

    async def adopt_identity(self, identity: str) -> None:
        """Take ``identity`` as the journal's identity: only while the database holds no
        stream (checked and changed in one transaction)."""
        check_identity(identity)

        async def apply(txn: Transaction) -> None:
            # no other writer may make a stream between the count and the commit
            await txn.conn.execute("LOCK TABLE journal_streams IN EXCLUSIVE MODE")
            count = await txn.conn.fetchval(f"SELECT count(*) {_HELD}")
            if count:
                rows = await txn.conn.fetch(f"SELECT name {_HELD} ORDER BY name LIMIT 3")
                raise StoreNotEmptyError("the PostgreSQL journal", count, [r[0] for r in rows])
            await txn.conn.execute("UPDATE journal_meta SET identity = $1 WHERE id = 1", identity)

        await self._submit(apply, ())
        self.identity = identity
