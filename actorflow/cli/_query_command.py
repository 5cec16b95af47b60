"""`actorflow query ACTOR NAME [ARGUMENTS]`: run an actor's `@query` method through the
server, on its state as of its last step boundary (docs/api.md, "CLI")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from actorflow._client import SyncClient


def query_command(
    client_options: Callable[[Any], Any],
    talk: Callable[[str, Path | None, float, Callable[[SyncClient], Any]], Any],
    json_argument: Callable[[str | None, str], Any],
    show: Callable[[Any], None],
) -> click.Command:
    """The command, built from the CLI's shared options and helpers (``talk`` runs an
    action with a client, turning failures into one-line errors; ``show`` prints JSON)."""

    @click.command("query")
    @click.argument("actor")
    @click.argument("name")
    @click.argument("arguments", required=False)
    @client_options
    def query(
        actor: str,
        name: str,
        arguments: str | None,
        url: str,
        token_file: Path | None,
        timeout: float,
    ) -> None:
        """Run the query NAME of ACTOR (Type/key), with ARGUMENTS as a JSON object, on its
        state as of its last step boundary (without waiting for its running turn); print
        the answer: its result, and which state it read.

        Example: actorflow query Researcher/job-1 notes '{"last": 3}'
        """
        args = json_argument(arguments, "ARGUMENTS") or {}
        if not isinstance(args, dict):
            raise click.BadParameter(
                "must be a JSON object of argument names to values", param_hint="ARGUMENTS"
            )
        show(talk(url, token_file, timeout, lambda client: client.query(actor, name, args)))

    return query
