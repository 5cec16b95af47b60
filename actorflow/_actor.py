"""The `Actor` base class, the `@handler` decorator, and checks on actor definitions.

A misdefined actor fails when its class is created, with every problem listed at once,
never at its first message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, overload

import msgspec

from actorflow import _journalable
from actorflow._budget import Budget
from actorflow._context import Retry
from actorflow._errors import ActorDefinitionError, InvalidMessageError, InvalidResultError
from actorflow._journalable import ValueDecoder, dec_hook, strict_dec_hook, type_label
from actorflow._query import collect_queries
from actorflow._values import decoder_for, encode, refuse_lost_model

if TYPE_CHECKING:
    from actorflow._context import Context

#: How a running turn of an actor type is stopped at shutdown (see docs/deploys.md).
ShutdownStrategy = Literal["drain", "checkpoint", "compensate"]
#: What a turn in flight does when new code is deployed (see docs/versioning.md):
#: "upgrade" replays it under the new code at once; "pinned" holds it, if its replay
#: would diverge, until code of the version that started it runs.
Versioning = Literal["upgrade", "pinned"]

#: An actor key: 1 to 200 characters from ``A-Z a-z 0-9 . _ ~ : @ + = -``, other than
#: ``.`` and ``..`` (a URL path drops or climbs out of those segments, so no HTTP client
#: can address them). Written without look-arounds so that the OpenAPI document carries
#: the same pattern to clients and test generators (docs/api.md, "Actor keys").
KEY_PATTERN = re.compile(
    r"[A-Za-z0-9_~:@+=-][A-Za-z0-9._~:@+=-]{0,199}"
    r"|\.[A-Za-z0-9_~:@+=-][A-Za-z0-9._~:@+=-]{0,198}"
    r"|\.\.[A-Za-z0-9._~:@+=-]{1,198}"
)
TYPE_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,99}")
_HANDLER_MARK = "__actorflow_handler__"


@dataclasses.dataclass(frozen=True)
class HandlerOptions:
    """What `@handler` declares beyond the method itself."""

    deadline: float | None = None
    compensate_on_error: bool = True


@dataclasses.dataclass(frozen=True)
class HandlerInfo:
    """A checked handler: its name, the msgspec types of its arguments and result."""

    name: str
    fn: Callable[..., Any]
    params: type[msgspec.Struct]
    result_type: Any
    options: HandlerOptions
    _decoder: msgspec.msgpack.Decoder[Any]
    _result_decoder: ValueDecoder

    def encode_args(self, actor_type: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """Validate call arguments against the annotations; return them as MessagePack."""
        fields = self.params.__struct_fields__
        if len(args) > len(fields):
            raise InvalidMessageError(
                f"{actor_type}.{self.name}() takes {len(fields)} arguments, got {len(args)}"
            )
        named = dict(zip(fields, args, strict=False))
        for key, value in kwargs.items():
            if key in named:
                raise InvalidMessageError(f"{actor_type}.{self.name}() got {key!r} twice")
            named[key] = value
        return self.validate_mapping(actor_type, named)

    def validate_mapping(self, actor_type: str, named: dict[str, Any]) -> bytes:
        """Validate a mapping of argument names to values; return them as MessagePack."""
        try:
            value = msgspec.convert(
                named, self.params, from_attributes=True, dec_hook=strict_dec_hook
            )
            return encode(value)
        except msgspec.ValidationError as exc:
            raise InvalidMessageError(
                f"invalid arguments for {actor_type}.{self.name}: {exc}"
            ) from None
        except (OverflowError, TypeError) as exc:  # e.g. an integer outside 64 bits
            raise InvalidMessageError(
                f"invalid arguments for {actor_type}.{self.name}: {exc} (the journal stores "
                f"integers of 64 bits at most; send larger numbers as strings)"
            ) from None

    def decode_args(self, data: bytes) -> dict[str, Any]:
        """The keyword arguments stored in a message."""
        value = self._decoder.decode(data)
        return {name: getattr(value, name) for name in self.params.__struct_fields__}

    def encode_result(self, actor_type: str, value: Any) -> bytes:
        """Check a handler's return value against its annotation and encode it."""
        try:
            with _journalable.Tally() as counted:
                data = encode(value)
                counted.decoding()
                self._result_decoder.decode(data)
        except (TypeError, msgspec.ValidationError) as exc:
            raise InvalidResultError(
                f"{actor_type}.{self.name} returned a value that does not match its return "
                f"annotation or cannot be encoded with msgspec: {exc}"
            ) from None
        refuse_lost_model(f"{actor_type}.{self.name}", self.result_type, counted)
        return data


F = TypeVar("F", bound=Callable[..., Any])


@overload
def handler(fn: F, /) -> F: ...


@overload
def handler(
    *, deadline: float | None = None, compensate_on_error: bool = True
) -> Callable[[F], F]: ...


def handler(
    fn: Callable[..., Any] | None = None,
    *,
    deadline: float | None = None,
    compensate_on_error: bool = True,
) -> Any:
    """Mark an async method of an `Actor` as a handler: one message, one turn.

    ``deadline`` (seconds) bounds a whole turn of this handler; past it the turn is
    cancelled and its compensations run. ``compensate_on_error`` runs the compensations
    registered by completed steps, in reverse order, when the handler raises.
    """
    options = HandlerOptions(deadline, compensate_on_error)

    def mark(method: Callable[..., Any]) -> Callable[..., Any]:
        setattr(method, _HANDLER_MARK, options)
        return method

    return mark(fn) if fn is not None else mark


@dataclasses.dataclass(frozen=True)
class EventInfo:
    """A declared event: its name and payload type, and a check for delivered payloads."""

    name: str
    type: Any
    _decoder: ValueDecoder

    def validate(self, actor_type: str, data: bytes) -> None:
        """Refuse a payload (MessagePack) that does not decode as the declared type."""
        try:
            self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise InvalidMessageError(
                f"event {self.name!r} for {actor_type} must be a {type_label(self.type)}: {exc}"
            ) from None


class Actor:
    """Base class of every agent: subclass it, and mark async methods with `@handler`.

    Class keywords: ``name`` (the type name in actor ids; default the class name),
    ``state`` (a msgspec Struct, a dataclass or a pydantic model, constructible with no
    arguments; available as ``self.state``, checkpointed
    at the end of every turn and restored as it was before a turn that failed),
    ``shutdown`` ("checkpoint" by default, or "drain", "compensate"), ``retry`` (an
    `actorflow.Retry`: the policy of this type's steps that give none), ``events`` (a
    dict of event names to payload types: deliveries of other names, or of payloads of
    the wrong type, are refused before they are accepted), ``versioning`` ("upgrade" by
    default, or "pinned": what a turn in flight when new code is deployed does),
    ``budget`` (an `actorflow.Budget`: the default of invocations sent without one).
    Inside a handler, ``self.ctx`` is the only door to anything non-deterministic.
    Methods marked `@query` read ``self.state`` without a turn (docs/actors.md, "Queries").
    """

    __actorflow_name__: ClassVar[str]
    __actorflow_handlers__: ClassVar[dict[str, HandlerInfo]]
    #: The `@query` methods, checked like handlers (sync or async).
    __actorflow_queries__: ClassVar[dict[str, HandlerInfo]]
    __actorflow_state__: ClassVar[type | None]
    __actorflow_shutdown__: ClassVar[ShutdownStrategy]
    __actorflow_versioning__: ClassVar[Versioning]
    __actorflow_retry__: ClassVar[Retry | None]
    #: The budget of invocations sent to this type without one (docs/budgets.md).
    __actorflow_budget__: ClassVar[Budget | None]
    __actorflow_events__: ClassVar[dict[str, EventInfo] | None]

    ctx: Context
    key: str
    state: Any

    def __init_subclass__(
        cls,
        *,
        name: str | None = None,
        state: type | None = None,
        shutdown: ShutdownStrategy = "checkpoint",
        retry: Retry | None = None,
        events: dict[str, Any] | None = None,
        versioning: Versioning = "upgrade",
        budget: Budget | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        problems: list[str] = []
        type_name = name or cls.__name__
        if not TYPE_NAME_PATTERN.fullmatch(type_name):
            problems.append(f"actor type name {type_name!r} must match {TYPE_NAME_PATTERN.pattern}")
        if shutdown not in ("drain", "checkpoint", "compensate"):
            problems.append(f"shutdown={shutdown!r}; use 'drain', 'checkpoint' or 'compensate'")
        if versioning not in ("upgrade", "pinned"):
            problems.append(f"versioning={versioning!r}; use 'upgrade' or 'pinned'")
        _check_retry(retry, problems)
        _check_budget(budget, problems)
        declared = _check_events(events, problems)
        _check_state(state, problems)
        handlers = _collect_handlers(cls, problems)
        queries = collect_queries(cls, problems, _check_query, _HANDLER_MARK)
        if not handlers and not problems:
            problems.append("it has no handlers; mark its async methods with @actorflow.handler")
        if problems:
            listed = "\n".join(f"  - {p}" for p in problems)
            raise ActorDefinitionError(f"actor class {cls.__qualname__} is misdefined:\n{listed}")
        cls.__actorflow_name__ = type_name
        cls.__actorflow_handlers__ = handlers
        cls.__actorflow_queries__ = queries
        cls.__actorflow_state__ = state
        cls.__actorflow_shutdown__ = shutdown
        cls.__actorflow_versioning__ = versioning
        cls.__actorflow_retry__ = retry
        cls.__actorflow_budget__ = budget
        cls.__actorflow_events__ = declared


def _check_budget(budget: object, problems: list[str]) -> None:
    if budget is not None and not isinstance(budget, Budget):
        problems.append(f"budget={budget!r} must be an actorflow.Budget")


def _check_retry(retry: object, problems: list[str]) -> None:
    if retry is not None and not isinstance(retry, Retry):
        problems.append(f"retry={retry!r} must be an actorflow.Retry")


def _check_events(events: Any, problems: list[str]) -> dict[str, EventInfo] | None:
    if events is None:
        return None
    if not isinstance(events, dict):
        problems.append(f"events={events!r} must be a dict of event names to payload types")
        return None
    declared: dict[str, EventInfo] = {}
    for event, kind in events.items():
        if not isinstance(event, str) or not event or event.startswith("\x00"):
            problems.append(f"events: {event!r} is not an event name (a non-empty string)")
            continue
        try:
            decoder_for(kind)  # checks it, and builds the decoder wait_for will use
            decoder = _journalable.strict_decoder(kind)
            _journalable.schema_components([_journalable.validated_type(kind)])
        except TypeError as exc:
            problems.append(f"events: the payload type of {event!r}: {exc}")
            continue
        declared[event] = EventInfo(event, kind, decoder)
    return declared


def _check_state(state: Any, problems: list[str]) -> None:
    if state is None:
        return
    record = isinstance(state, type) and (
        issubclass(state, msgspec.Struct)
        or dataclasses.is_dataclass(state)
        or _journalable.is_model_class(state)
    )
    if not record:
        problems.append(
            f"state={state!r} must be a msgspec.Struct subclass, a dataclass or a pydantic "
            f"BaseModel subclass"
        )
        return
    try:
        decoder_for(state)
    except TypeError as exc:
        problems.append(f"state {state.__name__}: {exc}")
        return
    try:
        state()
    except Exception as exc:
        problems.append(f"state {state.__name__} must be constructible with no arguments: {exc}")


def _collect_handlers(cls: type, problems: list[str]) -> dict[str, HandlerInfo]:
    handlers: dict[str, HandlerInfo] = {}
    for base in reversed(cls.__mro__):
        for attr, value in vars(base).items():
            options = getattr(value, _HANDLER_MARK, None)
            if options is None:
                continue
            info = _check_handler(cls, attr, value, options, problems)
            if info is not None:
                handlers[attr] = info
    return handlers


def _check_query(cls: type, attr: str, fn: Any, problems: list[str]) -> HandlerInfo | None:
    return _check_handler(cls, attr, fn, HandlerOptions(), problems, kind="query")


def _check_handler(
    cls: type,
    attr: str,
    fn: Any,
    options: HandlerOptions,
    problems: list[str],
    kind: Literal["handler", "query"] = "handler",
) -> HandlerInfo | None:
    where = f"{kind} {cls.__name__}.{attr}"
    before = len(problems)
    if attr.startswith("_"):
        problems.append(f"{where}: {kind} names must not start with '_'")
    if kind == "query" and not callable(fn):
        problems.append(f"{where} must be a plain method (sync or async def)")
        return None
    if kind == "handler" and not inspect.iscoroutinefunction(fn):
        problems.append(f"{where} must be declared `async def`")
        return None
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        problems.append(f"{where}: cannot resolve its annotations ({exc})")
        return None
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for param in list(inspect.signature(fn).parameters.values())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            problems.append(f"{where}: parameter {param.name!r} must be a plain named parameter")
            continue
        if param.name not in hints:
            problems.append(f"{where}: annotate parameter {param.name!r} with its type")
            continue
        try:
            kind = _journalable.validated_type(hints[param.name])
        except TypeError as exc:
            problems.append(f"{where}: parameter {param.name!r}: {exc}")
            continue
        if param.default is param.empty:
            fields.append((param.name, kind))
        else:
            fields.append((param.name, kind, param.default))
    result_type = hints.get("return", Any)
    try:
        params = msgspec.defstruct(
            f"{cls.__name__}.{attr}.args", fields, kw_only=True, forbid_unknown_fields=True
        )
        decoder = msgspec.msgpack.Decoder(params, dec_hook=dec_hook)
        # refuses custom classes msgspec would only half-handle
        _journalable.schema_components([params])
    except TypeError as exc:
        problems.append(f"{where}: its parameter types cannot be journaled ({exc})")
        return None
    try:
        result_decoder = decoder_for(result_type)
        _journalable.schema_components([_journalable.validated_type(result_type)])
    except TypeError as exc:
        problems.append(f"{where}: its return type: {exc}")
        return None
    if len(problems) > before:
        return None
    return HandlerInfo(attr, fn, params, result_type, options, decoder, result_decoder)


def check_event(cls: type[Actor], name: str, data: bytes) -> None:
    """Refuse an event (its payload as MessagePack) that ``cls`` does not declare, or whose
    payload does not decode as the declared type; accept anything if it declares none."""
    declared = cls.__actorflow_events__
    if declared is None:
        return
    info = declared.get(name)
    if info is None:
        known = ", ".join(sorted(declared)) or "none"
        raise InvalidMessageError(
            f"{cls.__actorflow_name__} does not wait for events called {name!r}; "
            f"it declares: {known}"
        )
    info.validate(cls.__actorflow_name__, data)


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid actor key, else raise `InvalidMessageError`."""
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise InvalidMessageError(
            f"actor key {key!r} is not valid: use 1 to 200 characters from "
            f"A-Z a-z 0-9 and . _ ~ : @ + = -, other than '.' and '..' (URLs cannot "
            f"address those); see 'Actor keys' in docs/api.md"
        )
    return key


def source_version(cls: type) -> str:
    """A code version for an actor class when the app names none: ``src-`` and the first
    12 hex digits of the SHA-256 of the class's source text, so that any edit to the class
    (a handler, a step it calls inline, a comment) gives a new version and an unchanged
    class keeps its version across deploys. Code the class calls outside itself is not
    covered; name builds with ``--build-id`` for that. ``src-unknown`` when the source
    cannot be read (a class made at run time)."""
    try:
        text = inspect.getsource(cls)
    except (OSError, TypeError):
        return "src-unknown"
    return "src-" + hashlib.sha256(text.encode()).hexdigest()[:12]
