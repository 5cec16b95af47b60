"""``actorflow serve --otel``: the option (registered on the serve command in one line)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def otel_option(fn: F) -> F:
    """Add ``--otel`` to a command."""
    option = click.option(
        "--otel",
        is_flag=True,
        help="Trace turns and steps with OpenTelemetry (needs actorflow[otel]): with the "
        "global tracer provider if one is set (opentelemetry-instrument), else one "
        "configured from the OTEL_* environment variables. See docs/tracing.md.",
    )
    return option(fn)
