"""`@query`: read-only methods of an actor, answered from its state without a turn.

A query never queues behind the running turn and journals nothing: it runs on a copy of
the actor (its ``key``, and a copy of its ``state`` as of the last step boundary), whose
``ctx`` refuses every use with `QueryContextError`. The runtime picks the state
(`actorflow.runtime._query`); this module declares and checks queries, with the actor
definition's checks (`actorflow._actor`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from actorflow._errors import QueryContextError

if TYPE_CHECKING:
    from actorflow._actor import HandlerInfo

_QUERY_MARK = "__actorflow_query__"
F = TypeVar("F", bound=Callable[..., Any])

#: Checks one method the way handlers are checked (its arguments and result types), given
#: the class, the attribute name, the function and the list of problems to add to.
Check = Callable[[type, str, Any, list[str]], "HandlerInfo | None"]


def query(fn: F, /) -> F:
    """Mark a method of an `Actor` (sync or ``async def``) as a query: it reads
    ``self.state`` as of the actor's last step boundary, even while a turn runs, and
    returns a value. Its arguments and result are typed like a handler's (msgspec-
    encodable, checked when the class is defined); it journals nothing, cannot change the
    actor's state (it runs on a copy), and cannot use ``self.ctx`` (`QueryContextError`).
    """
    setattr(fn, _QUERY_MARK, True)
    return fn


def is_query(value: Any) -> bool:
    """Whether ``value`` is marked with `query`."""
    return getattr(value, _QUERY_MARK, False) is True


def collect_queries(
    cls: type, problems: list[str], check: Check, handler_mark: str
) -> dict[str, HandlerInfo]:
    """The checked queries of ``cls`` (inherited ones too), adding what is wrong with them
    to ``problems``. A method cannot be both a handler (``handler_mark``) and a query."""
    queries: dict[str, HandlerInfo] = {}
    for base in reversed(cls.__mro__):
        for attr, value in vars(base).items():
            if not is_query(value):
                continue
            if getattr(value, handler_mark, None) is not None:
                problems.append(
                    f"{cls.__name__}.{attr} is marked both @handler and @query; a query "
                    f"only reads the state, so give it its own method"
                )
                continue
            info = check(cls, attr, value, problems)
            if info is not None:
                queries[attr] = info
    return queries


class QueryContext:
    """What ``self.ctx`` is inside a query: every use raises `QueryContextError`."""

    def __init__(self, actor_id: str, query: str) -> None:
        self._where = (actor_id, query)  # every public name still reaches __getattr__

    def __getattr__(self, name: str) -> NoReturn:
        actor_id, query_name = self._where
        raise QueryContextError(
            f"query {query_name} of {actor_id} used self.ctx.{name}: a query only reads "
            f"self.state (a copy, as of the last step boundary) and journals nothing, so it "
            f"cannot take steps, sleep, wait for events, send messages or read ctx's clock; "
            f"do that in a @handler and keep what the query needs in self.state"
        )
