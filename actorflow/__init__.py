"""actorflow: an asyncio actor runtime with an event-sourced journal.

Define agents as `Actor` subclasses with `@handler` methods, host them in a `Runtime` over a
journal store, and every step they take through ``self.ctx`` is journaled: after a crash or
a deploy, replay rebuilds each actor at the exact step where it stopped, and no completed
step runs again.
"""

from actorflow._actor import Actor as Actor
from actorflow._actor import ShutdownStrategy as ShutdownStrategy
from actorflow._actor import Versioning as Versioning
from actorflow._actor import handler as handler
from actorflow._budget import Budget as Budget
from actorflow._budget import BudgetExceeded as BudgetExceeded
from actorflow._budget import BudgetStatus as BudgetStatus
from actorflow._budget import Spend as Spend
from actorflow._client import Client as Client
from actorflow._client import ClientError as ClientError
from actorflow._client import RemoteActor as RemoteActor
from actorflow._client import SyncClient as SyncClient
from actorflow._clock import Clock as Clock
from actorflow._clock import ManualClock as ManualClock
from actorflow._clock import SystemClock as SystemClock
from actorflow._context import NO_RETRY as NO_RETRY
from actorflow._context import ActorRef as ActorRef
from actorflow._context import Context as Context
from actorflow._context import Happened as Happened
from actorflow._context import Retry as Retry
from actorflow._errors import ActorDefinitionError as ActorDefinitionError
from actorflow._errors import ActorflowError as ActorflowError
from actorflow._errors import ActorStuckError as ActorStuckError
from actorflow._errors import CompensationFailed as CompensationFailed
from actorflow._errors import ContextMisuseError as ContextMisuseError
from actorflow._errors import HandlerFailed as HandlerFailed
from actorflow._errors import HostedElsewhere, NoSuchActorError, QueryContextError, QueryFailed
from actorflow._errors import IdempotencyKeyReused as IdempotencyKeyReused
from actorflow._errors import InboxFull as InboxFull
from actorflow._errors import InvalidMessageError as InvalidMessageError
from actorflow._errors import InvalidResultError as InvalidResultError
from actorflow._errors import InvocationNotRetryable as InvocationNotRetryable
from actorflow._errors import JournalFailure as JournalFailure
from actorflow._errors import MessageTooLarge as MessageTooLarge
from actorflow._errors import NonDeterminismError as NonDeterminismError
from actorflow._errors import RuntimeClosedError as RuntimeClosedError
from actorflow._errors import StepError as StepError
from actorflow._errors import StepFailed as StepFailed
from actorflow._errors import StepOutcomeUnknown as StepOutcomeUnknown
from actorflow._errors import StepResultTooLarge as StepResultTooLarge
from actorflow._errors import Suspended as Suspended
from actorflow._errors import TooManyPendingEvents as TooManyPendingEvents
from actorflow._errors import TooManyQueuedMessages as TooManyQueuedMessages
from actorflow._errors import TurnCancelled as TurnCancelled
from actorflow._errors import TurnEndedError as TurnEndedError
from actorflow._errors import UnknownActorError as UnknownActorError
from actorflow._errors import UnknownHandlerError as UnknownHandlerError
from actorflow._errors import UnknownQueryError as UnknownQueryError
from actorflow._query import query as query
from actorflow._stream import StreamEvent as StreamEvent
from actorflow._stream_client import StreamInterrupted as StreamInterrupted
from actorflow.cluster import ClusterOptions as ClusterOptions
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

__version__ = "0.1.0"

__all__ = [
    "ACTOR_STATES",
    "NO_RETRY",
    "Actor",
    "ActorCorruptError",
    "ActorDefinitionError",
    "ActorHandle",
    "ActorRef",
    "ActorStatus",
    "ActorStuckError",
    "ActorflowError",
    "Client",
    "CompensationFailed",
    "ContextMisuseError",
    "Damage",
    "ClientError",
    "Clock",
    "ClusterOptions",
    "Context",
    "HandlerFailed",
    "TurnEndedError",
    "Happened",
    "IdempotencyKeyReused",
    "InboxFull",
    "InvalidMessageError",
    "InvalidResultError",
    "InvocationNotRetryable",
    "InvocationStatus",
    "JournalEntry",
    "JournalFailure",
    "ManualClock",
    "MessageTooLarge",
    "QuarantinedStatus",
    "ResetRefused",
    "TurnHeld",
    "TurnReset",
    "NonDeterminismError",
    "Page",
    "RemoteActor",
    "Retry",
    "Runtime",
    "RuntimeClosedError",
    "ShutdownReport",
    "ShutdownStrategy",
    "Versioning",
    "StepError",
    "StepFailed",
    "StepOutcomeUnknown",
    "StepResultTooLarge",
    "StreamEvent",
    "StreamInterrupted",
    "Suspended",
    "SyncClient",
    "SystemClock",
    "TooManyPendingEvents",
    "TooManyQueuedMessages",
    "TurnCancelled",
    "UnknownActorError",
    "UnknownHandlerError",
    "handler",
    "query",
    "HostedElsewhere",
    "NoSuchActorError",
    "QueryContextError",
    "QueryFailed",
    "UnknownQueryError",
    "QueryAnswer",
    *("Budget", "BudgetExceeded", "BudgetStatus", "Spend"),
]
