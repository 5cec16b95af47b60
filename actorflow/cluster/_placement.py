"""Where an actor with work should run, as pure functions of the live workers.

* A ``pinned`` actor type's turn in flight continues on a worker running the code version
  that started it, while one is alive.
* Everything else (new turns, ``upgrade`` types, pinned turns whose version is gone) goes
  to the workers running the **newest** version of the type: the version whose
  longest-lived worker joined last. During a rolling deploy, that is the new pods'
  version as soon as the first of them is up; an old pod that restarts meanwhile does
  not make its version new again (unless it is the last of its version).
* Among the eligible workers, an actor's preferred order is by rendezvous hashing of the
  actor and worker names: every worker computes the same order without talking, and
  actors spread evenly, moving as little as possible when a worker comes or goes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec


class WorkerInfo(msgspec.Struct, frozen=True):
    """What a worker publishes with each heartbeat (msgpack, in its member row)."""

    worker: str
    capacity: int
    load: int
    #: The code version each actor type's new turns record on this worker.
    versions: dict[str, str]
    #: When it joined (Unix seconds, the database's clock; set from the member row).
    started_at: float = 0.0
    #: Seconds until its membership expires without another heartbeat.
    expires_in: float = 0.0


def newest_version(type_name: str, workers: Sequence[WorkerInfo]) -> str | None:
    """The newest version of ``type_name`` among ``workers``: the one whose longest-lived
    worker joined last (a worker of an old version that restarts does not make it new)."""
    first_seen: dict[str, tuple[float, str]] = {}
    for w in workers:
        version = w.versions.get(type_name)
        if version is not None:
            seen = (w.started_at, w.worker)
            first_seen[version] = min(first_seen.get(version, seen), seen)
    if not first_seen:
        return None
    return max(first_seen, key=lambda version: first_seen[version])


def eligible(
    type_name: str,
    workers: Sequence[WorkerInfo],
    *,
    pinned: bool,
    in_flight: str | None,
) -> list[str]:
    """The workers that may run an actor of ``type_name`` now: its pinned turn's version
    (``in_flight``) if one runs it, else the newest version's."""
    hosting = [w for w in workers if type_name in w.versions]
    if pinned and in_flight:
        same = [w.worker for w in hosting if w.versions[type_name] == in_flight]
        if same:
            return sorted(same)
    newest = newest_version(type_name, hosting)
    return sorted(w.worker for w in hosting if w.versions[type_name] == newest)


def ranked(actor_id: str, workers: Sequence[str]) -> list[str]:
    """``workers`` in ``actor_id``'s order of preference (rendezvous hashing)."""

    def weight(worker: str) -> bytes:
        return hashlib.blake2b(f"{worker}\x00{actor_id}".encode(), digest_size=8).digest()

    return sorted(workers, key=weight, reverse=True)
