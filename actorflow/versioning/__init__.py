"""Checking a deploy before it happens: unfinished turns replayed against new code, with
no side effect (`check`, `DryRunHost`), and the report of what would diverge.

A layer beside the runtime (it activates actors on private in-memory copies of their
journals); the CLI (`actorflow replay`) and `actorflow.testing.replay` are built on it.
"""

from actorflow.versioning._check import Selection, check, check_store
from actorflow.versioning._dry_run import DryRunHost, DryRunWrite, Verdict
from actorflow.versioning._report import (
    Divergence,
    ReplayDivergenceError,
    ReplayReport,
    Unchecked,
)
from actorflow.versioning._sources import ExportError, load_export

__all__ = [
    "Divergence",
    "DryRunHost",
    "DryRunWrite",
    "ExportError",
    "ReplayDivergenceError",
    "ReplayReport",
    "Selection",
    "Unchecked",
    "Verdict",
    "check",
    "check_store",
    "load_export",
]
