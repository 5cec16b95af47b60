"""``actorflow serve --value-threshold BYTES``: above it, payloads are stored once as values."""

from __future__ import annotations

import click

from actorflow.runtime._big_values import DEFAULT_VALUE_THRESHOLD


def _threshold(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """A byte count >= 0, or ``off`` (0: large-value storage off)."""
    if value.strip().lower() == "off":
        return 0
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a byte count or 'off'") from None
    if number < 0:
        raise click.BadParameter(f"{value!r} is negative")
    return number


value_threshold_option = click.option(
    "--value-threshold",
    metavar="BYTES",
    default=str(DEFAULT_VALUE_THRESHOLD),
    show_default=True,
    callback=_threshold,
    help="A step result, state part, message's arguments or event payload encoded in more "
    "bytes than this is stored once per journal as a value that records refer to by digest "
    "(0 or 'off': never; then --max-record-bytes caps them).",
)
