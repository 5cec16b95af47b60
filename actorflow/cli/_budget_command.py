"""`actorflow budget INVOCATION`: the budget of an invocation tree (spent, held by steps
in flight, remaining), and the ``--budget`` option of `actorflow send` (docs/budgets.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from actorflow._budget import Budget
from actorflow._client import SyncClient


def parse_budget(
    context: click.Context, parameter: click.Parameter, value: str | None
) -> Budget | None:
    """``--budget 'tokens=1000; cost=USD 2.50'`` as a `Budget` (a usage error if not one)."""
    if value is None:
        return None
    try:
        return Budget.parse(value)
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc)) from None


#: The ``--budget`` option of `actorflow send`.
budget_option = click.option(
    "--budget",
    callback=parse_budget,
    help="The invocation tree's budget, e.g. 'tokens=1000; cost=USD 2.50; llm_calls=10; "
    "tool_calls=20; wall_time=600'.",
)


def budget_command(
    client_options: Callable[[Any], Any],
    talk: Callable[[str, Path | None, float, Callable[[SyncClient], Any]], Any],
    show: Callable[[Any], None],
) -> click.Command:
    """The command, built from the CLI's shared options and helpers."""

    @click.command("budget")
    @click.argument("invocation")
    @client_options
    def budget(invocation: str, url: str, token_file: Path | None, timeout: float) -> None:
        """Show the budget of the tree rooted at INVOCATION (Type/key#id): its limits, what
        is spent, what steps in flight hold, and what remains."""
        show(talk(url, token_file, timeout, lambda client: client.budget(invocation)))

    return budget
