"""``actorflow serve --value-threshold BYTES``: above it, payloads are stored once as values."""

from __future__ import annotations

from typing import Any

import click

from actorflow.runtime._big_values import DEFAULT_VALUE_THRESHOLD


class _Threshold(click.ParamType):
    """A byte count >= 0, or ``off`` (0: large-value storage off)."""

    name = "BYTES"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            number = value
        elif str(value).strip().lower() == "off":
            return 0
        else:
            try:
                number = int(str(value))
            except ValueError:
                self.fail(f"{value!r} is not a byte count or 'off'", param, ctx)
        if number < 0:
            self.fail(f"{value!r} is negative", param, ctx)
        return number


value_threshold_option = click.option(
    "--value-threshold",
    type=_Threshold(),
    default=DEFAULT_VALUE_THRESHOLD,
    show_default=True,
    help="A step result, state part, message's arguments or event payload encoded in more "
    "bytes than this is stored once per journal as a value that records refer to by digest "
    "(0 or 'off': never; then --max-record-bytes caps them).",
)
