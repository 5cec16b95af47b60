"""`Waiters`: the callers waiting for invocations' results, filed by actor.

A caller of `Runtime.result` (an in-process call, or ``?wait=`` over HTTP) waits on an
event until the invocation ends, its actor gets stuck or moves, or the runtime stops. On a
cluster every worker hears every actor's outcomes and wakes that actor's waiters; filed by
actor, that costs the waiters of that actor, not a scan of every waiter in the process.
"""

from __future__ import annotations

import anyio


def _actor_of(invocation: str) -> str:
    return invocation.rpartition("#")[0]  # (an invocation id is ``Type/key#...``)


class Waiters:
    """Events of callers waiting for invocations, by actor id, then by invocation id."""

    def __init__(self) -> None:
        self._by_actor: dict[str, dict[str, list[anyio.Event]]] = {}

    def __len__(self) -> int:
        """How many invocations are waited for."""
        return sum(len(waiting) for waiting in self._by_actor.values())

    def add(self, invocation: str) -> anyio.Event:
        """A new event for a caller of ``invocation``, set when it is woken; `discard` it
        once the caller stops waiting."""
        event = anyio.Event()
        waiting = self._by_actor.setdefault(_actor_of(invocation), {})
        waiting.setdefault(invocation, []).append(event)
        return event

    def discard(self, invocation: str, event: anyio.Event) -> None:
        """Forget ``event`` (if still filed), and the entries it leaves empty."""
        actor_id = _actor_of(invocation)
        waiting = self._by_actor.get(actor_id)
        events = waiting.get(invocation) if waiting is not None else None
        if waiting is None or events is None or event not in events:
            return
        events.remove(event)
        if not events:
            del waiting[invocation]
            if not waiting:
                del self._by_actor[actor_id]

    def wake_invocation(self, invocation: str) -> None:
        """Wake the callers of ``invocation``."""
        actor_id = _actor_of(invocation)
        waiting = self._by_actor.get(actor_id)
        if waiting is None:
            return
        for event in waiting.pop(invocation, ()):
            event.set()
        if not waiting:
            del self._by_actor[actor_id]

    def wake_actor(self, actor_id: str) -> None:
        """Wake the callers of every invocation of ``actor_id``."""
        for events in self._by_actor.pop(actor_id, {}).values():
            for event in events:
                event.set()

    def wake_all(self) -> None:
        """Wake every caller (the runtime stops, or the journal's notices were lost)."""
        waiting, self._by_actor = self._by_actor, {}
        for by_invocation in waiting.values():
            for events in by_invocation.values():
                for event in events:
                    event.set()
