"""`Worker`: the runtime's part in a fleet of workers sharing a PostgreSQL journal.

Each actor is hosted by one worker at a time, under a lease named by its actor stream
(``journal.Leases``: owner, epoch, expiry on the database's clock). The lease says who
*should* host an actor; the actor stream's epoch (`Store.claim`, at every activation)
makes sure nobody else *can* write for it: a worker that lost a lease while paused finds
every append it tries refused by the database, and gives the actor up.

How work finds a worker:

* Every append to an inbox is announced (NOTIFY) to every worker. A worker that does not
  host the actor *offers* to: it skips actors whose lease another live worker holds,
  reads the actor's journal, and claims it if it has work, this worker is eligible
  (`actorflow.cluster.placement`) and has room. Eligible workers other than the actor's
  first choice wait a little before claiming, so the first choice usually wins and
  actors spread evenly. A worker with no room keeps the offer in a backlog, passivates
  its idle actors at once, and takes the backlog's actors as room frees.
* Released leases are announced too (a worker stopping, an actor passivated with work
  left), and so are the outcomes of invocations (waiters on every worker re-check).
* Heartbeats (every third of the lease TTL) renew the member row and every lease held,
  say which leases were taken (their actors are dropped at once, writing nothing more),
  take over expired leases of dead workers, and move idle actors to the newest code.
  A worker that cannot heartbeat for a whole TTL drops its actors by itself.
* After the notices' connection was lost, a worker looks again at every actor with work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from actorflow.cluster import (
    ClusterOptions,
    WorkerIdInUse,
    WorkerInfo,
    eligible,
    newest_version,
    ranked,
)
from actorflow.runtime import _quarantine
from actorflow.runtime._lookups import Lookups

if TYPE_CHECKING:
    from actorflow.runtime._host import ActorHost
    from actorflow.runtime._runtime import Runtime

log = logging.getLogger("actorflow")

#: How long a worker that is not an actor's first choice waits per rank before claiming.
RANK_DELAY = 0.15
#: The lease that lets one worker at a time sweep expired idempotency keys.
SWEEPER = "actorflow/idempotency-sweep"

_ENCODER = msgspec.msgpack.Encoder()
_INFO = msgspec.msgpack.Decoder(WorkerInfo)


def lease_name(actor_id: str) -> str:
    return f"actor/{actor_id}"


class Worker:
    """One worker of a fleet: its leases, heartbeats and notices (see the module)."""

    def __init__(self, runtime: Runtime, options: ClusterOptions) -> None:
        store: Any = runtime.store
        if not hasattr(store, "leases") or not hasattr(store, "listen"):
            raise TypeError(
                f"cluster= needs a store shared by the workers (journal.PostgresStore), got "
                f"{type(store).__name__}"
            )
        self.runtime = runtime
        self.id = options.worker_id
        self.capacity = options.capacity
        self.ttl = float(options.lease_ttl)
        self.leases = store.leases
        self._lookups = Lookups(self.leases.holders, self._start_soon)
        #: Leases taken for claims made at the same time, in one statement a round.
        self._acquires = Lookups(self._acquire_many, self._start_soon)
        self._store = store
        #: The live workers as of the last heartbeat (this one included).
        self.workers: list[WorkerInfo] = []
        #: Actors whose lease this worker holds.
        self.held: set[str] = set()
        self._elsewhere: dict[str, float] = {}  # actor -> monotonic time its holder's lease ends
        self._backlog: dict[str, None] = {}  # actors with work waiting for room, in order
        self._offering: set[str] = set()
        #: Actors between the room check and their activation (acquiring their lease):
        #: they count against the capacity, or concurrent offers would all see room.
        self._claiming: set[str] = set()
        self._again: dict[str, bool] = {}  # offers to make again once theirs is over
        self._deferred: dict[str, None] = {}  # actors with work meant for other workers
        self._released_by: dict[str, str] = {}  # who last let each actor go (not to rank)
        self._inbox_grew: set[str] = set()  # offered because their inbox grew
        self._evicting: set[str] = set()
        self._renewed = time.monotonic()
        self._closing = anyio.Event()
        self._listening = anyio.Event()
        self._listen_scope = anyio.CancelScope()
        #: Actors this worker gave up because another took them over (a lease taken after
        #: missed heartbeats, or appends refused), and expired leases it freed.
        self.lost = 0
        self.takeovers = 0

    # -- life ----------------------------------------------------------------------------

    async def join(self, group: Any) -> None:
        """Publish this worker, then listen for notices (before the runtime recovers, so
        nothing appended from then on goes unheard).

        A worker id still live on the journal is waited for (a restarted process keeps
        its pod's name, and its previous membership lapses within a lease TTL), then the
        leases its previous process left are released; if the id stays live (another
        process heartbeats under it), `WorkerIdInUse`."""
        deadline = time.monotonic() + 2 * self.ttl + 1
        while same := [m for m in await self.leases.members() if m.member == self.id]:
            if time.monotonic() > deadline:
                raise WorkerIdInUse(
                    f"worker id {self.id!r} belongs to a live worker on this journal (it "
                    f"heartbeats); give each worker its own id (--worker-id)"
                )
            await anyio.sleep(min(0.5, max(0.05, same[0].expires_in + 0.05)))
        await self.leases.leave(self.id)  # what a previous process of this id left
        await self._heartbeat_once()
        group.start_soon(self._listen, name="cluster notices")
        await self._listening.wait()
        group.start_soon(self._beat, name="cluster heartbeats")

    async def leave(self) -> None:
        """Release every lease this worker still holds and leave the fleet."""
        self._closing.set()
        self._listen_scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self.leases.leave(self.id)
            except Exception as exc:
                log.warning("worker %s: leaving failed (%s); its leases expire", self.id, exc)
        self.held.clear()

    async def owners(self, actor_ids: list[str]) -> dict[str, str]:
        """The worker hosting each of ``actor_ids`` (this one, or a live lease's holder)."""
        found = {a: self.id for a in actor_ids if a in self.runtime._hosts}
        others = [lease_name(a) for a in actor_ids if a not in found]
        if others:
            for name, lease in (await self.leases.holders(others)).items():
                if lease.expires_in > 0:
                    found[name.removeprefix("actor/")] = lease.owner
        return found

    async def may_sweep(self) -> bool:
        """Whether this worker holds (or now took) the idempotency sweeper's lease."""
        return await self.leases.acquire(SWEEPER, self.id, self.ttl) is not None

    def info(self) -> WorkerInfo:
        return WorkerInfo(self.id, self.capacity, len(self.held), dict(self.runtime.versions))

    # -- claiming ------------------------------------------------------------------------

    def offer(self, actor_id: str, *, fresh: bool = False, inbox_grew: bool = False) -> None:
        """Host ``actor_id`` if it has work and this worker should (in the background).
        ``fresh``: its lease changed hands; do not trust what was remembered of it.
        ``inbox_grew``: a message for it was just committed, so it has work.

        An offer made while one for the same actor is under way is made again after it
        (fresh, if either was): the one under way may have read the lease before it was
        released."""
        runtime = self.runtime
        if actor_id in runtime._hosts or self._closing.is_set():
            return
        if runtime._group is None or not runtime._running:
            return
        if inbox_grew:
            self._inbox_grew.add(actor_id)
        if actor_id in self._offering:
            self._again[actor_id] = self._again.get(actor_id, False) or fresh
            return
        self._offering.add(actor_id)
        runtime._group.start_soon(self._offer, actor_id, fresh, name=f"offer {actor_id}")

    async def _offer(self, actor_id: str, fresh: bool) -> None:
        try:
            await self._try_to_host(actor_id, fresh)
        except Exception as exc:  # the journal failed: a later notice or heartbeat tries again
            log.warning("worker %s: could not offer to host %s: %s", self.id, actor_id, exc)
        finally:
            self._offering.discard(actor_id)
            again = self._again.pop(actor_id, None)
            if again is not None:
                self.offer(actor_id, fresh=again)

    async def _try_to_host(self, actor_id: str, fresh: bool) -> None:
        runtime = self.runtime
        released_by = self._released_by.pop(actor_id, None)
        grew = actor_id in self._inbox_grew
        self._inbox_grew.discard(actor_id)
        if not fresh and self._elsewhere.get(actor_id, 0.0) > time.monotonic():
            return
        # An offer because the inbox grew does not look at the lease first: the actor's
        # first choice goes straight to acquiring it (which fails if another worker holds
        # it, and then remembers who does), the others look after their wait.
        if not grew and await self._held_elsewhere(actor_id):
            return
        type_name = actor_id.partition("/")[0]
        pinned = runtime.actor_types[type_name].__actorflow_versioning__ == "pinned"
        in_flight = None
        # An actor whose inbox just grew has work, and where an upgrade type's turn runs
        # does not depend on the version of its turn in flight: its journal is read here
        # only otherwise (activation reads it; should another worker have served the
        # message meanwhile, the actor is idle and let go again).
        if pinned or not grew:
            view = await _quarantine.view(runtime, actor_id)
            if not view.has_work:
                return
            in_flight = view.unfinished.version if view.unfinished is not None else None
        if actor_id in runtime._hosts:
            return
        choice = eligible(type_name, self.workers, pinned=pinned, in_flight=in_flight)
        if released_by in choice and len(choice) > 1:
            choice.remove(released_by)  # it let the actor go (stopping, or passivating it)
        if choice and self.id not in choice:
            self._deferred[actor_id] = None  # looked at again if its workers go away
            return
        self._deferred.pop(actor_id, None)
        rank = ranked(actor_id, choice).index(self.id) if self.id in choice else 0
        if rank:
            await anyio.sleep(min(1.0, RANK_DELAY * rank))
            if await self._held_elsewhere(actor_id):
                return
        if not self._room():
            self._backlog[actor_id] = None
            self._make_room()
            return
        self._claiming.add(actor_id)
        try:
            await self._claim(actor_id)
        finally:
            self._claiming.discard(actor_id)

    async def _claim(self, actor_id: str) -> None:
        runtime = self.runtime
        if actor_id in runtime._hosts or not runtime._running or self._closing.is_set():
            return
        epoch = await self._acquires.get(lease_name(actor_id))
        if epoch is None:
            await self._held_elsewhere(actor_id)
            return
        self.held.add(actor_id)
        self._backlog.pop(actor_id, None)
        if actor_id in runtime._hosts or not runtime._running:
            return
        runtime._activate(actor_id)

    async def retries(self, host: ActorHost) -> bool:
        """Whether ``host``'s actor, whose journal failed under it, may be activated here
        again: only while this worker still holds its lease (taken again now, as a claim
        takes it). A worker that lost the lease meanwhile (paused past its TTL, its
        heartbeats missed) gives the actor up instead: activated here, it would claim the
        actor's stream from the worker that took it over. Raises if the lease cannot be
        looked at."""
        runtime, actor_id = self.runtime, host.actor_id
        held = not host.fenced and actor_id in self.held
        if held and await self._acquires.get(lease_name(actor_id)) is None:
            held, host.fenced = False, True  # another worker holds the lease now
        if not held and runtime._hosts.get(actor_id) is host:
            del runtime._hosts[actor_id]
            await self.host_ended(host)
        return held

    async def _acquire_many(self, names: Sequence[str]) -> dict[str, int]:
        taken: dict[str, int] = await self.leases.acquire_many(names, self.id, self.ttl)
        return taken

    def _start_soon(self, fn: Any) -> None:
        group = self.runtime._group
        assert group is not None  # (offers are made only while the runtime runs)
        group.start_soon(fn, name="lease lookups")

    async def _held_elsewhere(self, actor_id: str) -> bool:
        """Whether another worker holds the actor's live lease (remembered till it ends).
        Looks made at the same time are answered by one query (`Lookups`)."""
        lease = await self._lookups.get(lease_name(actor_id))
        if lease is None or lease.owner == self.id or lease.expires_in <= 0:
            return False
        self._elsewhere[actor_id] = time.monotonic() + lease.expires_in
        return True

    def _room(self) -> bool:
        return len(self.runtime._hosts) + len(self._claiming) < self.capacity

    def crowded(self) -> bool:
        """Whether actors wait for room here (idle actors are then passivated at once)."""
        return bool(self._backlog) and not self._room()

    def _make_room(self) -> None:
        for host in list(self.runtime._hosts.values()):
            if host.state == "idle":
                host.wake()

    def _take_backlog(self) -> None:
        while self._backlog and self._room():
            actor_id = next(iter(self._backlog))
            del self._backlog[actor_id]
            self.offer(actor_id)
            if actor_id in self._offering:
                return  # one at a time: the offer may take the room

    # -- giving up -----------------------------------------------------------------------

    async def host_ended(self, host: ActorHost) -> None:
        """A host left memory: release its lease, then take waiting work if there is room."""
        actor_id = host.actor_id
        self._evicting.discard(actor_id)
        self.held.discard(actor_id)
        self.lost += host.fenced
        # Released even when fenced: a reset, say, fences the host without taking the
        # lease, and a lease left here would be renewed by every heartbeat. Releasing a
        # lease another worker holds changes nothing.
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self.leases.release([lease_name(actor_id)], self.id)
            except Exception as exc:
                log.warning("worker %s: releasing %s failed: %s", self.id, actor_id, exc)
        self._take_backlog()

    def hands_over(self, host: ActorHost) -> bool:
        """Whether ``host``'s next turn belongs on another worker: one running a newer
        version of its type is alive (new turns go to the newest code)."""
        newest = newest_version(host.type_name, self.workers)
        return newest is not None and newest != self.runtime.versions[host.type_name]

    def idle_after(self, host: ActorHost) -> float:
        """How long ``host`` may idle before it is passivated."""
        if host.actor_id in self._evicting or self.crowded():
            return 0.0
        return self.runtime.idle_timeout

    def _drop(self, actor_id: str, why: str) -> None:
        """This worker lost ``actor_id``'s lease: stop its host at once, writing nothing."""
        self.held.discard(actor_id)
        host = self.runtime._hosts.get(actor_id)
        if host is not None:
            log.warning("worker %s: %s; dropping actor %s", self.id, why, actor_id)
            host.fenced = True
            host.scope.cancel()

    # -- heartbeats ----------------------------------------------------------------------

    async def _beat(self) -> None:
        period = self.ttl / 3
        while not self._closing.is_set():
            with anyio.move_on_after(period):
                await self._closing.wait()
            if self._closing.is_set():
                return
            try:
                await self._heartbeat_once()
            except Exception as exc:
                if time.monotonic() - self._renewed > self.ttl:
                    for actor_id in list(self.held):
                        self._drop(actor_id, f"no heartbeat for {self.ttl} s ({exc})")
                log.warning("worker %s: heartbeat failed: %s", self.id, exc)
                continue
            await self._after_heartbeat()

    async def _heartbeat_once(self) -> None:
        before = set(self.held)
        info = _ENCODER.encode(self.info())
        still = await self.leases.renew(self.id, self.ttl, info)
        self._renewed = time.monotonic()
        for actor_id in before:
            if lease_name(actor_id) not in still and actor_id in self.held:
                self._drop(actor_id, "its lease was taken after this worker missed heartbeats")
        self.workers = await self.fleet()

    async def fleet(self) -> list[WorkerInfo]:
        """The live workers, as they published themselves at their last heartbeats."""
        workers = []
        for member in await self.leases.members():
            try:
                found = _INFO.decode(member.info)
            except msgspec.DecodeError:
                continue  # not a worker of this version of actorflow
            workers.append(
                msgspec.structs.replace(
                    found, started_at=member.started_at, expires_in=member.expires_in
                )
            )
        return workers

    async def _after_heartbeat(self) -> None:
        """Take over dead workers' actors; move idle ones to the newest code; fill room."""
        now = time.monotonic()
        self._elsewhere = {a: t for a, t in self._elsewhere.items() if t > now}
        # Free the leases of dead workers: each is announced, and every worker (this one
        # too) then offers to host the actor if it has work.
        self.takeovers += await self.leases.free_expired(await self.leases.expired())
        await self._recheck_deferred()
        for actor_id, host in list(self.runtime._hosts.items()):
            if host.state == "idle" and self.hands_over(host):
                self._evicting.add(actor_id)
                host.wake()
        self._take_backlog()

    async def _recheck_deferred(self) -> None:
        """Offer again the actors left to other workers that nobody has taken (those
        workers may have gone before they could)."""
        deferred, self._deferred = list(self._deferred), {}
        for start in range(0, len(deferred), 1000):
            names = [lease_name(a) for a in deferred[start : start + 1000]]
            held = await self.leases.holders(names)
            for name in names:
                lease = held.get(name)
                if lease is None or lease.expires_in <= 0:
                    self.offer(name.removeprefix("actor/"), fresh=True)

    # -- notices -------------------------------------------------------------------------

    async def _listen(self) -> None:
        runtime = self.runtime
        with self._listen_scope:
            async with self._store.listen() as notices:
                self._listening.set()
                async for notice in notices:
                    if self._closing.is_set():
                        return
                    if notice.kind == "appended":
                        prefix, _, actor_id = notice.name.partition("/")
                        if prefix == "inbox":
                            runtime.notify(actor_id, notice.position)
                        elif prefix == "outcomes":
                            runtime._waiters.wake_actor(actor_id)
                        elif prefix == "streams":
                            runtime.streams.wake(notice.name)
                    elif notice.kind == "released":
                        if notice.name.startswith("actor/"):
                            actor_id = notice.name.removeprefix("actor/")
                            self._elsewhere.pop(actor_id, None)
                            self._released_by[actor_id] = notice.owner
                            self.offer(actor_id, fresh=True)
                    else:  # resync: notices may have been missed
                        self._elsewhere.clear()
                        runtime._waiters.wake_all()
                        runtime.streams.wake_all()
                        await runtime.recover()
