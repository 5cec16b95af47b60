"""The deterministic core: one turn's ctx operations, matched against its journal.

- `_recorded`: what the journal holds for a turn, keyed by step id; no I/O.
- `_protocol`: `TurnHost`, what a turn needs from the actor that hosts it.
- `_turn`: `Turn`, the engine behind `Context`: steps (with retries), time, randomness,
  timers, events, messages, versioning markers, compensation; live or replayed.
- `_branches`: `ctx.gather` and `ctx.first`, with deterministic branch ids and losers
  replayed as far as their journal goes.
- `_steps`: calling a step's function, on the loop or in a worker thread.

The turn writes only through the `TurnHost` it is given (the runtime's actor host).
"""

from actorflow._values import canonical_equal as canonical_equal
from actorflow.replay._protocol import TurnHost as TurnHost
from actorflow.replay._recorded import RecordedTurn as RecordedTurn
from actorflow.replay._turn import Turn as Turn

__all__ = ["RecordedTurn", "Turn", "TurnHost", "canonical_equal"]
