"""Which types the journal can keep, and the hooks that rebuild values as their type.

msgspec encodes and decodes its own types (Structs, dataclasses it can decode, dicts,
lists, str, int, ...) with no help. Pydantic models (``BaseModel``, which the ``openai``
and ``anthropic`` SDKs' responses are) go through the hooks here: a model is encoded as
pydantic dumps it, and decoded by its class's own validation, wherever the annotation
names the class (``list[Model]``, ``Model | None``, a Struct field). A type msgspec
cannot decode but pydantic can validate (a union of models, the dataclasses of
pydantic-ai's messages, a dataclass holding those) is decoded as plain data and validated
by a pydantic ``TypeAdapter`` of the whole type.

Nothing here imports pydantic: a value can only be a model if pydantic was imported by
whoever made it, so the hooks look it up in ``sys.modules``. Nothing is ever pickled.
"""

from __future__ import annotations

import collections
import contextvars
import functools
import sys
from collections.abc import Iterator
from typing import Any, Protocol, cast

import msgspec
from msgspec import inspect as mi

#: Models counted as the hooks encode and decode them, while a value is being checked
#: (see `Tally`); None otherwise.
_tally: contextvars.ContextVar[collections.Counter[type] | None] = contextvars.ContextVar(
    "actorflow_model_tally", default=None
)
#: Modules whose objects a model's dump may hold that msgspec cannot encode (urls, paths,
#: addresses): they are journaled as pydantic writes them in JSON, and validated back.
_JSONABLE_MODULES = ("pydantic", "pydantic_core", "pathlib", "ipaddress")
#: SDKs whose models are built from servers' data without validation (see `_rebuild`).
_LENIENT = ("openai", "anthropic")
_ADVICE = (
    "use a msgspec Struct, a dataclass or a pydantic BaseModel (and msgspec's "
    "types: str, int, float, bool, None, bytes, list, dict, datetime, ...)"
)


class ValueDecoder(Protocol):
    """What `decoder` returns: MessagePack bytes in, a value of the type out."""

    def decode(self, data: bytes, /) -> Any:
        """The value ``data`` encodes, as the type (`msgspec.ValidationError` if not)."""
        ...


def _pydantic() -> Any:
    return sys.modules.get("pydantic")


def is_model_class(kind: object) -> bool:
    """Whether ``kind`` is a pydantic ``BaseModel`` subclass."""
    pydantic = _pydantic()
    return pydantic is not None and isinstance(kind, type) and issubclass(kind, pydantic.BaseModel)


def is_model(value: object) -> bool:
    """Whether ``value`` is a pydantic model (an instance of a ``BaseModel``)."""
    pydantic = _pydantic()
    return pydantic is not None and isinstance(value, pydantic.BaseModel)


def enc_hook(obj: Any) -> Any:
    """msgspec's ``enc_hook``: a pydantic model as its dump (by alias, as pydantic would
    validate it back); objects such a dump may hold (urls, paths) as JSON text."""
    pydantic = _pydantic()
    if pydantic is not None:
        if isinstance(obj, pydantic.BaseModel):
            tally = _tally.get()
            if tally is not None:
                tally[type(obj)] += 1
            return obj.model_dump(mode="python", by_alias=True, round_trip=True, warnings=False)
        if isinstance(obj, pydantic.SecretStr | pydantic.SecretBytes):
            raise TypeError(
                f"a {type(obj).__name__} is not journaled: pydantic masks it when it dumps "
                f"it, so it would come back as '**********'; keep secrets out of steps' "
                f"results, arguments and state (pass a reference to them instead)"
            )
        if type(obj).__module__.split(".")[0] in _JSONABLE_MODULES:
            return sys.modules["pydantic_core"].to_jsonable_python(obj)
    raise TypeError(f"msgspec cannot encode a {type(obj).__qualname__}; {_ADVICE}")


def dec_hook(kind: type, obj: Any) -> Any:
    """msgspec's ``dec_hook``: a pydantic model, or a type only pydantic validates, from
    its decoded data. An ``openai`` or ``anthropic`` response that does not validate is
    built as its SDK built it (see `_rebuild`)."""
    return _decode(kind, obj, lenient=True)


def strict_dec_hook(kind: type, obj: Any) -> Any:
    """`dec_hook` for what comes from outside (arguments, events): every model validates."""
    return _decode(kind, obj, lenient=False)


def _decode(kind: type, obj: Any, lenient: bool) -> Any:
    via = getattr(kind, "__actorflow_validated__", None)
    if via is not None:
        return _adapter(via).validate_python(obj)
    if is_model_class(kind):
        value = _rebuild(cast(Any, kind), obj) if lenient else cast(Any, kind).model_validate(obj)
        tally = _tally.get()
        if tally is not None:
            tally[kind] += 1
        return value
    raise TypeError(f"{kind!r} is not a type the journal can keep; {_ADVICE}")


def _rebuild(model: Any, obj: Any) -> Any:
    """A model from its data: validated; or, for the models of the ``openai`` and
    ``anthropic`` SDKs, built as those SDKs build responses (their own ``construct``, no
    validation) if it does not validate, as when an OpenAI-compatible server sends a value
    the SDK's types do not list. The same data always takes the same path."""
    try:
        return model.model_validate(obj)
    except _pydantic().ValidationError:
        if not (isinstance(obj, dict) and _lenient(model)):
            raise
        return model.construct(**obj)


@functools.lru_cache(maxsize=256)
def _lenient(model: type) -> bool:
    """Whether ``model`` inherits a ``construct`` of its SDK's own (the Stainless-made
    ``openai`` and ``anthropic`` clients have one) rather than pydantic's deprecated one."""
    owner = next(base for base in model.__mro__ if "construct" in vars(base))
    return owner is not _pydantic().BaseModel and owner.__module__.split(".")[0] in _LENIENT


@functools.lru_cache(maxsize=512)
def _adapter(kind: Any) -> Any:
    return _pydantic().TypeAdapter(kind)


class _StandIn(type):
    """The metaclass of `_validated`'s stand-ins: msgspec checks that what `dec_hook`
    returns is an instance of the class it asked for, and the value pydantic validated
    (already of ``kind``) is."""

    def __instancecheck__(cls, instance: object) -> bool:
        return True


@functools.lru_cache(maxsize=512)
def _validated(kind: Any) -> type:
    """A stand-in class for a type only pydantic validates: msgspec sees a custom type and
    hands its data to `dec_hook`, which validates it as ``kind``."""
    return _StandIn(f"Validated[{type_label(kind)}]", (), {"__actorflow_validated__": kind})


def validated_type(kind: Any) -> Any:
    """``kind`` as msgspec is to see it: itself, or the stand-in of a type msgspec cannot
    decode but pydantic validates. TypeError, naming the type and what to do, for a type
    neither can journal. Cached per type."""
    try:
        return _checked(kind)
    except TypeError:
        if _hashable(kind):
            raise
        return _check(kind)


def by_pydantic(kind: Any) -> bool:
    """Whether values of ``kind`` (a checked type) are validated whole by pydantic.

    (Its stand-in says so, not identity: the cache behind `validated_type` hands back the
    first of equal types it saw, and ``dict[str, Any]`` written twice makes two objects.)"""
    return isinstance(validated_type(kind), _StandIn)


def decoder(kind: Any) -> ValueDecoder:
    """A decoder of ``kind`` with the hooks, cached per type (TypeError as `validated_type`)."""
    try:
        return _decoder(kind)
    except TypeError:
        if _hashable(kind):
            raise
        return _decoder.__wrapped__(kind)


@functools.lru_cache(maxsize=1024)
def _decoder(kind: Any) -> ValueDecoder:
    target = validated_type(kind)
    try:
        return msgspec.msgpack.Decoder(target, dec_hook=dec_hook)
    except TypeError as exc:
        raise TypeError(f"{type_label(kind)} cannot be journaled: {exc}; {_ADVICE}") from None


def strict_decoder(kind: Any) -> ValueDecoder:
    """A decoder of ``kind`` (a checked type) with `strict_dec_hook`, for what comes from
    outside; not cached (one per declared event, made with the class)."""
    return msgspec.msgpack.Decoder(validated_type(kind), dec_hook=strict_dec_hook)


@functools.lru_cache(maxsize=1024)
def _checked(kind: Any) -> Any:
    return _check(kind)


def _check(kind: Any) -> Any:
    label = type_label(kind)
    try:
        info = mi.type_info(kind)
    except TypeError as native:
        return _check_validated(kind, label, native)
    for custom in _custom_types(info):
        if not is_model_class(custom):
            where = "" if custom is kind else f" (in {label})"
            raise TypeError(
                f"{type_label(custom)}{where} cannot be journaled: it is neither a type "
                f"msgspec encodes nor a pydantic model; {_ADVICE}"
            )
        _check_model(custom, "" if custom is kind else f" (in {label})")
    return kind


def _check_validated(kind: Any, label: str, native: TypeError) -> Any:
    """A type msgspec refuses: accepted if pydantic can validate it and describe it."""
    if _pydantic() is None:
        raise TypeError(f"{label} cannot be journaled: {native}; {_ADVICE}") from None
    try:
        _adapter(kind).json_schema()
    except Exception as exc:
        raise TypeError(
            f"{label} cannot be journaled: msgspec cannot decode it ({native}) and pydantic "
            f"cannot validate it ({exc}); {_ADVICE}"
        ) from None
    return _validated(kind)


@functools.lru_cache(maxsize=512)
def _check_model(model: type, where: str) -> None:
    try:
        model.model_json_schema()  # type: ignore[attr-defined]
    except Exception as exc:
        raise TypeError(
            f"the pydantic model {type_label(model)}{where} cannot be journaled: "
            f"pydantic cannot describe it ({exc}); give its fields types pydantic can dump "
            f"and validate (no arbitrary_types_allowed classes), and call "
            f"{model.__name__}.model_rebuild() if it has forward references"
        ) from None


def _custom_types(info: mi.Type) -> Iterator[type]:
    """Every class in ``info`` that msgspec leaves to the hooks."""
    seen: set[int] = set()
    pending = [info]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, mi.CustomType):
            yield node.cls
        elif isinstance(node, mi.UnionType | mi.TupleType):
            pending += node.types if isinstance(node, mi.UnionType) else node.item_types
        elif isinstance(node, mi.DictType):
            pending += [node.key_type, node.value_type]
        elif isinstance(node, mi.Metadata):
            pending.append(node.type)
        elif hasattr(node, "item_type"):  # list, set, frozenset, tuple[X, ...]
            pending.append(node.item_type)
        elif hasattr(node, "fields"):  # Struct, dataclass, TypedDict, NamedTuple
            pending += [field.type for field in node.fields]


def type_label(kind: Any) -> str:
    """A type as a person reads it: its name, or its repr for a generic or union."""
    if isinstance(kind, type) and not getattr(kind, "__args__", None):
        return kind.__qualname__
    return repr(kind).replace("typing.", "")


def _hashable(kind: Any) -> bool:
    try:
        hash(kind)
    except TypeError:
        return False
    return True


def recount() -> None:
    """Forget the models counted so far by the running `Tally`, if any (an encoding attempt
    that was given up, to be made again)."""
    counted = _tally.get()
    if counted is not None:
        counted.clear()


class Tally:
    """Counts the models encoded and decoded through the hooks meanwhile, by class, so that
    a caller can tell a model that would come back as something else (a dict, where the
    annotation says ``Any``; a base class) from one that comes back as itself."""

    def __init__(self) -> None:
        self.encoded: collections.Counter[type] = collections.Counter()
        self.decoded: collections.Counter[type] = collections.Counter()

    def __enter__(self) -> Tally:
        self._token = _tally.set(self.encoded)
        return self

    def __exit__(self, *exc: object) -> None:
        _tally.reset(self._token)

    def decoding(self) -> None:
        """Count from now on what the hooks decode."""
        _tally.set(self.decoded)

    def lost(self) -> type | None:
        """A model class encoded more often than it was decoded back, if any."""
        if not self.encoded:
            return None
        missing = self.encoded - self.decoded
        return next(iter(missing), None)


def schema_components(
    types: list[Any], ref_template: str = "#/$defs/{name}"
) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """`msgspec.json.schema_components` that also describes pydantic models and the types
    only pydantic validates, by pydantic's own JSON schema (their definitions are added to
    the components)."""
    found: dict[str, Any] = {}
    template = ref_template.replace("{name}", "{model}")

    def hook(kind: type) -> dict[str, Any]:
        target = getattr(kind, "__actorflow_validated__", kind)
        if target is kind and not is_model_class(kind):
            raise NotImplementedError
        schema: dict[str, Any] = _adapter(target).json_schema(ref_template=template)
        found.update(schema.pop("$defs", {}))
        return schema

    schemas, components = msgspec.json.schema_components(
        types, schema_hook=hook, ref_template=ref_template
    )
    return schemas, {**found, **components}
