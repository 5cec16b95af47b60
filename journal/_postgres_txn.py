"""One write transaction of `journal.PostgresStore`: the stream rows it read and locked,
the records it staged, and the statements that write them back (see `journal._postgres`
for the order they run in and why)."""

from __future__ import annotations

from typing import Any

from journal import _postgres_schema as sql
from journal import _postgres_values as values
from journal._records import Appended, StreamAppend, checksum, distinct, snapshot_checksum
from journal._streams import Changes, StreamState, wanted_values


class RetryTransaction(Exception):
    """The transaction must be tried again (a stream row changed under it)."""


class Transaction:
    """One batch's transaction: the stream rows it read (locked), and rows to insert."""

    def __init__(self, conn: Any, notify: tuple[str, ...] = ()) -> None:
        self.conn = conn
        self.notify = notify
        self.states: dict[str, StreamState] = {}
        #: Global positions are staged from 0 and offset by `base` once the meta row is
        #: locked, at the end (or earlier, when rows must be inserted before then).
        self.changes = Changes(self.states, _absent, 0)
        self.base: int | None = None
        self.xid: str | None = None
        #: Each stream row as read: (last, first, epoch, snapshot), by stream id.
        self.read_back: dict[int, tuple[int, int, int, int]] = {}
        #: Staged records, a column each: global position (from 0), stream id, position,
        #: type, data, checksum, refs (`values.encode_refs`).
        self.columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
        #: Staged refs rows of those records: stream ids, positions, digests.
        self.ref_rows: tuple[list[int], list[int], list[str]] = ([], [], [])
        #: Streams that grew whose names start with one of ``notify``, as "<last position>
        #: <name>" (the `_postgres_cluster` notices of the transaction).
        self.grown: list[str] = []
        #: Snapshots staged by `replace_snapshot`: (position, data, checksum, refs) by
        #: stream id.
        self.snapshots: dict[int, tuple[int, bytes, int, tuple[str, ...]]] = {}
        #: Rows made by `load` for streams that had none, not yet taken by `stream_id`.
        self.reserved: dict[str, int] = {}

    async def load(self, names: set[str]) -> None:
        """Read (and lock) the rows of ``names``; make rows for those that have none in one
        statement (not one round trip per new stream): `stream_id` takes them, and
        `write_back` deletes those not taken."""
        for row in await self.conn.fetch(sql.STREAM_ROW, sorted(names)):
            name, sid, last, first, epoch, snap = row
            self.states[name] = StreamState(name, sid, last, first, epoch, snap)
            self.read_back[sid] = (last, first, epoch, snap)
        missing = sorted(names - self.states.keys())
        if missing:
            rows = await self.conn.fetch(sql.RESERVE_STREAMS, missing)
            self.reserved.update(rows)  # (name, id) records
            raced = [name for name in missing if name not in self.reserved]
            if raced:  # another writer made these rows and has committed: read them
                await self.load(set(raced))

    async def stream_id(self, state: StreamState) -> int:
        if state.id is None:
            self.changes.touch(state)
            reserved = self.reserved.pop(state.name, None)
            if reserved is None:
                reserved = await self.conn.fetchval(
                    "INSERT INTO journal_streams (name) VALUES ($1) RETURNING id", state.name
                )
            state.id = reserved
            self.read_back[state.id] = (0, 1, 0, 0)
        return state.id

    async def lock_meta(self) -> int:
        """Lock the meta row (if not yet) and return the first global position it gives."""
        if self.base is None:
            self.xid, self.base = await self.conn.fetchrow(sql.LOCK_META)
        return self.base

    async def flush_refs(self) -> None:
        """Insert the refs rows staged so far, in one statement."""
        if self.ref_rows[0]:
            await self.conn.execute(values.INSERT_RECORD_REFS, *self.ref_rows)
            for column in self.ref_rows:
                column.clear()

    async def flush_rows(self) -> None:
        """Insert the rows staged so far, now (a delete or truncate in the batch must see
        them): this takes the meta row's lock early."""
        await self.flush_refs()
        if self.columns[0]:
            base = await self.lock_meta()
            self.columns[0][:] = [base + g for g in self.columns[0]]
            await self.conn.execute(sql.INSERT_RECORDS, *self.columns)
            for column in self.columns:
                column.clear()

    async def finish(self) -> None:
        """Take the global positions and insert the staged rows: one statement that locks
        the meta row (held until COMMIT), or a plain advance if it was locked earlier."""
        if self.base is not None:
            await self.flush_rows()
            if self.changes.next_global:
                await self.conn.execute(sql.ADVANCE, self.base + self.changes.next_global)
        elif self.changes.next_global:
            self.xid, self.base = await self.conn.fetchrow(
                sql.TAKE_AND_INSERT, self.changes.next_global, *self.columns
            )
        else:  # nothing appended: no global position taken, no lock on the meta row
            self.xid, self.base = await self.conn.fetchval(sql.XID), 0

    def rebase(self, outcomes: list[Any]) -> list[Any]:
        """The ops' outcomes with staged global positions made real (`Landed` parts become
        `Appended`)."""
        base = self.base or 0
        return [
            [Appended(s, first, last, base + g) for s, first, last, g in outcome]
            if type(outcome) is Landed
            else outcome
            for outcome in outcomes
        ]

    async def write_back(self) -> None:
        """Write every changed stream row, each only if unchanged since it was read; drop
        the rows made for new streams that nothing wrote; write the staged snapshots and
        refs rows."""
        await self.flush_snapshots()
        await self.flush_refs()
        if self.reserved:
            await self.conn.execute(sql.DROP_RESERVED, list(self.reserved.values()))
            self.reserved.clear()
        rows: list[list[int]] = [[], [], [], [], [], [], []]
        for state in self.states.values():
            if state.id is None:
                continue
            was = self.read_back[state.id]
            now = (state.last, state.first, state.epoch, state.snapshot)
            if now == was:
                continue
            if state.last > was[0] and self.notify and state.name.startswith(self.notify):
                self.grown.append(f"{state.last} {state.name}")
            for column, value in zip(rows, (state.id, *now, was[0], was[2]), strict=True):
                column.append(value)
        if rows[0]:
            status = await self.conn.execute(sql.UPDATE_STREAMS, *rows)
            if int(status.split()[-1]) != len(rows[0]):
                raise RetryTransaction("a stream row changed under the transaction")

    async def replace_snapshot(
        self, state: StreamState, data: bytes, refs: tuple[str, ...] = ()
    ) -> None:
        """Stage ``state``'s snapshot (the stream's latest, replacing any earlier one),
        referring to ``refs``: `write_back` writes every staged snapshot in one statement,
        and their refs rows in two (the old ones deleted, the new ones inserted)."""
        sid, position = await self.stream_id(state), state.snapshot
        crc = snapshot_checksum(state.name, position, data)
        self.snapshots[sid] = (position, data, crc, refs)

    async def flush_snapshots(self) -> None:
        if self.snapshots:
            sids = list(self.snapshots)
            staged = self.snapshots.values()
            await self.conn.execute(
                sql.UPSERT_SNAPSHOTS,
                sids,
                [s[0] for s in staged],
                [s[1] for s in staged],
                [s[2] for s in staged],
                [values.encode_refs(s[3]) for s in staged],
            )
            pairs = [(sid, d) for sid, s in self.snapshots.items() for d in distinct(s[3])]
            if pairs:
                await self.conn.execute(
                    values.INSERT_SNAPSHOT_REFS, [p[0] for p in pairs], [p[1] for p in pairs]
                )
            self.snapshots.clear()


class Landed(list[tuple[str, int, int, int]]):
    """Where an append's parts landed, their global positions counted from the
    transaction's first (made real by `Transaction.rebase`)."""


def _absent(stream: str) -> StreamState | None:
    """Streams are read (locked) before the batch runs; one not read does not exist."""
    return None


async def apply_appends(parts: tuple[StreamAppend, ...], txn: Transaction) -> Landed:
    """Check and stage a (multi-stream) append within the batch's transaction.

    An append that gives or refers to values first locks the stored ones (reading only:
    a refused append writes nothing), and stores its new values once every check passed.
    """
    changes = txn.changes
    given, wanted = wanted_values(parts)
    new_values = await values.check_values(txn.conn, given, wanted) if given or wanted else []
    single = len(parts) == 1
    if not single or new_values:  # (else `changes.append` checks the single part)
        changes.check_appends(parts)
    if new_values:
        await values.store_values(txn.conn, given, new_values)
    globals_, ids, positions, kinds, payloads, sums, refs = txn.columns
    ref_sids, ref_positions, ref_digests = txn.ref_rows
    results = Landed()
    for part in parts:
        state, position, global_position = changes.append(part, check=single)
        sid = state.id if state.id is not None else await txn.stream_id(state)
        stream = part.stream
        for new in part.records:
            globals_.append(global_position)
            ids.append(sid)
            positions.append(position)
            kinds.append(new.type)
            payloads.append(new.data)
            sums.append(checksum(stream, position, new.type, new.data))
            if new.refs:
                refs.append(values.encode_refs(new.refs))
                for digest in distinct(new.refs):
                    ref_sids.append(sid)
                    ref_positions.append(position)
                    ref_digests.append(digest)
            else:
                refs.append(None)
            position += 1
            global_position += 1
        if part.snapshot is not None:
            await txn.replace_snapshot(state, part.snapshot, part.snapshot_refs)
        results.append((stream, position - len(part.records), state.last, global_position - 1))
    return results
