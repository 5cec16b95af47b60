"""The `actorflow` command line."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `actorflow` console script."""
    print("actorflow: the runtime and `actorflow serve` are not built yet", file=sys.stderr)
    return 2
