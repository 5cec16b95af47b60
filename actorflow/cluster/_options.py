"""`ClusterOptions`: how one worker takes part in a fleet sharing a PostgreSQL journal."""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
import socket

from actorflow._errors import ActorflowError


class WorkerIdInUse(ActorflowError):
    """Another live worker on the journal has this worker's id."""


#: The journal streams whose appends are announced to every worker (inboxes wake their
#: actors' owners; outcomes wake whoever waits for a result; chunk streams wake their
#: subscribers): open the shared store with
#: ``PostgresStore.open(dsn, notify_prefixes=NOTIFY_PREFIXES)``.
NOTIFY_PREFIXES = ("inbox/", "outcomes/", "streams/")


def default_worker_id() -> str:
    """This machine's name, the process id and a random suffix: unique across restarts."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    """A worker's settings (``Runtime(store, actors, cluster=ClusterOptions(...))``).

    ``worker_id`` names the worker in leases, status and ``actorflow workers`` (default:
    host-pid-random); ``capacity`` is how many actors it hosts at once, at most;
    ``lease_ttl`` is how many seconds its leases outlive its last heartbeat: a worker that
    dies, or stops answering, loses its actors to the others after that long. Heartbeats
    come every third of it.
    """

    worker_id: str = dataclasses.field(default_factory=default_worker_id)
    capacity: int = 1000
    lease_ttl: float = 10.0

    def __post_init__(self) -> None:
        name = self.worker_id
        if not isinstance(name, str) or not 1 <= len(name) <= 200 or not name.isprintable():
            raise ValueError(f"worker_id must be 1 to 200 printable characters, got {name!r}")
        if not isinstance(self.capacity, int) or isinstance(self.capacity, bool):
            raise ValueError(f"capacity must be an integer >= 1, got {self.capacity!r}")
        if self.capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {self.capacity!r}")
        ttl = self.lease_ttl
        if not isinstance(ttl, int | float) or not math.isfinite(ttl) or not 0.3 <= ttl <= 3600:
            raise ValueError(f"lease_ttl must be 0.3 to 3600 seconds, got {ttl!r}")
