"""Many workers on one PostgreSQL journal: what a worker is, and where an actor should run.

This package holds the pieces with no runtime in them: `ClusterOptions` (a worker's
settings), `WorkerInfo` (what each worker publishes with its heartbeat) and the placement
rules (`placement`), which are pure functions of the live workers. The runtime's side,
which holds leases and hosts actors, is `actorflow.runtime._worker`. See docs/cluster.md.
"""

from actorflow.cluster._options import NOTIFY_PREFIXES as NOTIFY_PREFIXES
from actorflow.cluster._options import ClusterOptions as ClusterOptions
from actorflow.cluster._options import WorkerIdInUse as WorkerIdInUse
from actorflow.cluster._placement import WorkerInfo as WorkerInfo
from actorflow.cluster._placement import eligible as eligible
from actorflow.cluster._placement import newest_version as newest_version
from actorflow.cluster._placement import ranked as ranked

__all__ = [
    "NOTIFY_PREFIXES",
    "ClusterOptions",
    "WorkerIdInUse",
    "WorkerInfo",
    "eligible",
    "newest_version",
    "ranked",
]
