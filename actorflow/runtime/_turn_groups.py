"""An actor's journal read back as turns: each turn's start, steps and (maybe) end."""

from __future__ import annotations

from actorflow._errors import ActorflowError
from actorflow._events import (
    ACTOR_CODEC,
    StepEntry,
    TurnCancelling,
    TurnCompleted,
    TurnContinued,
    TurnEnd,
    TurnFailed,
    TurnStarted,
)
from actorflow.replay._recorded import RecordedTurn
from journal import Store


class TurnGroup:
    """A turn as read from the journal: its start, steps and (maybe) end."""

    def __init__(self, position: int, started: TurnStarted) -> None:
        self.position = position
        self.started = started
        self.steps: list[tuple[int, StepEntry]] = []
        self.end: TurnEnd | None = None
        self.end_position = 0
        self.cancelled: str | None = None

    def recorded(self, actor_id: str) -> RecordedTurn:
        """The turn as replay matches it against the code."""
        return RecordedTurn(
            actor_id,
            self.started,
            self.position,
            self.steps,
            self.end,
            self.end_position,
            self.cancelled,
        )


async def read_turns(store: Store, stream: str, actor_id: str, start: int) -> list[TurnGroup]:
    """The turns journaled on ``stream`` from position ``start`` on, in order."""
    groups: list[TurnGroup] = []
    async for batch in store.read_batches(stream, start):
        for record in batch:
            entry = ACTOR_CODEC.decode(record)
            if isinstance(entry, TurnStarted):
                groups.append(TurnGroup(record.position, entry))
            elif not groups:
                raise ActorflowError(
                    f"actor {actor_id}: journal position {record.position} holds a "
                    f"{type(entry).__name__} outside any turn; the journal is damaged"
                )
            elif isinstance(entry, TurnCompleted | TurnFailed):
                groups[-1].end, groups[-1].end_position = entry, record.position
            elif isinstance(entry, TurnCancelling):
                groups[-1].cancelled = entry.reason
            elif isinstance(entry, TurnContinued):  # journaled with a checkpoint past it
                raise ActorflowError(
                    f"actor {actor_id}: journal position {record.position} ends a segment "
                    f"that its checkpoint does not cover; the journal is damaged"
                )
            else:
                groups[-1].steps.append((record.position, entry))
    return groups
