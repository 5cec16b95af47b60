"""Hosting actors: activation, inboxes, checkpoints, recovery, shutdown, and what the
runtime reports.

- `_runtime`: `Runtime`, the embedded runtime: accepting messages, activating actors,
  results, cancellation, operator retries, shutdown.
- `_handle`: `ActorHandle`, a typed reference to one actor.
- `_reads`: the read side of `Runtime` (status, invocations, journal pages, listings).
- `_host`: `ActorHost`, one activated actor: its journal writer, inbox, checkpoint and turn
  loop (it hosts the `replay` core's turns).
- `_quarantine`: actors whose journals are damaged (status ``corrupt``): refusing their
  work, exporting what can be read, resetting them.
- `_pinned`: pinned actor types: a turn in flight that another code version started,
  whose replay would diverge, is held (status ``held``) instead of stuck.
- `_reset`: resetting a stuck or held actor to its last turn boundary (its unfinished
  turn exported, then discarded).
- `_inspect`: reading an actor's journal from outside it (status, invocations), and the
  index that finds an invocation's outcome.
- `_pages`: listings a page at a time (journal, invocations, actors), with cursors.
- `_idempotency`: client idempotency keys and their retention.
- `_status`: the records the runtime reports (`ActorStatus`, `InvocationStatus`, ...).
"""

from actorflow.runtime._handle import ActorHandle as ActorHandle
from actorflow.runtime._pinned import TurnHeld as TurnHeld
from actorflow.runtime._quarantine import ActorCorruptError as ActorCorruptError
from actorflow.runtime._query import QueryAnswer as QueryAnswer
from actorflow.runtime._reset import ResetRefused as ResetRefused
from actorflow.runtime._reset import TurnReset as TurnReset
from actorflow.runtime._runtime import Runtime as Runtime
from actorflow.runtime._status import ACTOR_STATES as ACTOR_STATES
from actorflow.runtime._status import ActorStatus as ActorStatus
from actorflow.runtime._status import Damage as Damage
from actorflow.runtime._status import InvocationStatus as InvocationStatus
from actorflow.runtime._status import JournalEntry as JournalEntry
from actorflow.runtime._status import Page as Page
from actorflow.runtime._status import QuarantinedStatus as QuarantinedStatus
from actorflow.runtime._status import ShutdownReport as ShutdownReport

__all__ = [
    "QueryAnswer",
    "ACTOR_STATES",
    "ActorCorruptError",
    "ActorHandle",
    "ActorStatus",
    "Damage",
    "InvocationStatus",
    "JournalEntry",
    "QuarantinedStatus",
    "Page",
    "ResetRefused",
    "Runtime",
    "ShutdownReport",
    "TurnHeld",
    "TurnReset",
]
