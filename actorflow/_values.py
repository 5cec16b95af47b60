"""Turning step results, arguments and exceptions into journal bytes and back."""

from __future__ import annotations

import builtins
import hashlib
import typing
import zlib
from collections.abc import Callable
from typing import Any

import msgspec

from actorflow import _journalable
from actorflow._errors import JOURNALED_ERRORS, InvalidResultError, StepError, StepFailed
from actorflow._events import ErrorInfo
from actorflow._journalable import ValueDecoder, enc_hook, is_model, type_label

#: Pydantic models are encoded through `enc_hook` (see `actorflow._journalable`).
_encoder = msgspec.msgpack.Encoder(enc_hook=enc_hook)
#: Sets sorted, dict keys sorted: the same value encodes to the same bytes in every
#: process, whatever its hash seed (set iteration order of strings depends on it).
_canonical = msgspec.msgpack.Encoder(order="deterministic", enc_hook=enc_hook)
#: Without hooks: what fingerprints of turns journaled under rules 1 and exceptions'
#: arguments were always encoded with, so that neither changes.
_plain = msgspec.msgpack.Encoder()
#: `_canonical` without the hooks: a value it encodes holds no pydantic model.
_canonical_plain = msgspec.msgpack.Encoder(order="deterministic")
#: Longest error message kept in the journal, in characters.
MAX_ERROR_MESSAGE = 8192
#: Largest encoded exception arguments kept in the journal, in bytes.
MAX_ERROR_ARGS = 8192


def encode(value: Any) -> bytes:
    """MessagePack bytes of ``value`` (TypeError if msgspec can't encode it)."""
    return _encoder.encode(value)


def canonical(value: Any) -> bytes:
    """MessagePack bytes of ``value`` in a canonical form: sets and dicts sorted, so equal
    values give equal bytes in every process (TypeError if msgspec can't encode it).

    msgspec sorts only dicts with string keys; other dicts keep their order (their keys'
    hashes do not depend on the process's hash seed unless they are strings or bytes).
    """
    try:
        return _canonical.encode(value)
    except TypeError:
        _journalable.recount()
        return _encoder.encode(_sorted(value, dump=True))


def _sorted(value: Any, dump: bool = False) -> Any:
    """``value`` with every set and dict inside it in a canonical order, for the cases
    msgspec's own ordering refuses (dicts with non-string keys, mixed-type sets); with
    ``dump``, pydantic models inside it too (as their dumps)."""
    if isinstance(value, set | frozenset):
        return sorted((_sorted(item, dump) for item in value), key=_sort_key)
    if isinstance(value, dict):
        items = ((k, _sorted(v, dump)) for k, v in value.items())
        return dict(sorted(items, key=lambda kv: _sort_key(kv[0])))
    if isinstance(value, list | tuple):
        return [_sorted(item, dump) for item in value]
    if dump and is_model(value):
        return _sorted(enc_hook(value), dump)
    return value


def _sort_key(item: Any) -> bytes:
    try:
        return _canonical.encode(item)
    except TypeError:
        return _encoder.encode(_sorted(item))


_fingerprinter = msgspec.msgpack.Encoder(
    order="deterministic", enc_hook=lambda obj: f"<{qualified_name(type(obj))}>"
)
_loose = msgspec.msgpack.Encoder(enc_hook=lambda obj: f"<{qualified_name(type(obj))}>")


def decoder_for(kind: Any) -> ValueDecoder:
    """A cached decoder for one type, rebuilding pydantic models as their classes
    (TypeError, naming the type, for a type the journal cannot keep)."""
    return _journalable.decoder(kind)


def check_result_type(step: str, kind: Any) -> None:
    """Refuse, before a step runs, a result type the journal cannot keep (cached per type)."""
    try:
        _journalable.validated_type(kind)
    except TypeError as exc:
        raise InvalidResultError(
            f"step {step!r} cannot run: its result type is not one the journal can keep, so "
            f"its result could not be journaled after the call. {exc}. Annotate the step "
            f"function's return type (or pass result_type=) with a type that can be."
        ) from None


def return_annotation(target: Callable[..., Any]) -> Any:
    """The return annotation of a function (``Any`` when absent or unresolvable)."""
    try:
        return typing.get_type_hints(target, include_extras=True).get("return", Any)
    except Exception:
        return Any


def encode_result(step: str, value: Any, kind: Any) -> tuple[bytes, Any]:
    """Encode a step's result (canonically) and decode it back as ``kind``.

    The handler always gets the decoded value, live and on replay alike, so the two can't
    differ (a tuple doesn't become a list only after a restart).
    """
    try:
        data = _canonical_plain.encode(value)
    except TypeError:  # a model (or a value only `canonical` orders) inside: count them
        return _encode_counted(step, value, kind)
    try:
        return data, decoder_for(kind).decode(data)
    except (TypeError, msgspec.ValidationError) as exc:
        raise _unjournalable(step, value, kind, exc) from None


def _encode_counted(step: str, value: Any, kind: Any) -> tuple[bytes, Any]:
    """`encode_result` for a value that holds models, refusing one that would be lost."""
    try:
        with _journalable.Tally() as counted:
            data = canonical(value)
            counted.decoding()
            decoded = decoder_for(kind).decode(data)
    except (TypeError, msgspec.ValidationError) as exc:
        raise _unjournalable(step, value, kind, exc) from None
    refuse_lost_model(f"step {step!r}", kind, counted)
    return data, decoded


def _unjournalable(step: str, value: Any, kind: Any, exc: Exception) -> InvalidResultError:
    return InvalidResultError(
        f"step {step!r} returned {type(value).__name__}, which cannot be journaled as "
        f"{type_label(kind)}: {exc}. Return msgspec-encodable values (Structs, "
        f"dataclasses, pydantic models, dicts, lists, str, int, float, bool, None, bytes)."
    )


def refuse_lost_model(what: str, kind: Any, counted: _journalable.Tally) -> None:
    """Refuse a result holding a pydantic model that would come back as something else
    (a dict where the annotation says ``Any`` or nothing, a base class's instance): the
    handler would get another type than the function returned."""
    lost = counted.lost()
    if lost is None or _journalable.by_pydantic(kind):
        return
    name = lost.__name__
    raise InvalidResultError(
        f"{what} returned a {type_label(lost)} (a pydantic model) where its result type "
        f"{type_label(kind)} does not name that class (no annotation, Any, or a base "
        f"class), so it would come back as something else (a dict, a base class), not as "
        f"a {name}. Annotate the return type with the model's class (-> {name}, "
        f"list[{name}], {name} | None, ...), or pass result_type= to ctx.run."
    )


def fingerprint(inputs: Any) -> int:
    """A short fingerprint of a step's inputs, the same in every process for equal inputs
    (0 for none). Values msgspec can't encode count by their type's name."""
    if not inputs:
        return 0
    try:
        data = _fingerprinter.encode(inputs)
    except TypeError:
        data = _loose.encode(_sorted(inputs))
    return zlib.crc32(data) or 1


def legacy_fingerprint(args: tuple[Any, ...]) -> int:
    """The fingerprint turns journaled under rules 1 used (see `TurnStarted.rules`)."""
    if not args:
        return 0
    try:
        return zlib.crc32(_plain.encode(args)) or 1
    except TypeError:
        return 0


def derive(*parts: str, size: int = 16) -> bytes:
    """Deterministic bytes from identifiers (ids, seeds): the same parts give the same bytes."""
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=size).digest()


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def error_info(exc: BaseException) -> ErrorInfo:
    """An exception as journaled: type name, message and (when encodable and small) its
    arguments. Long messages are cut at `MAX_ERROR_MESSAGE` characters."""
    try:
        args = _plain.encode(exc.args)
    except TypeError:
        args = b""
    if len(args) > MAX_ERROR_ARGS:
        args = b""
    message = str(exc)
    if len(message) > MAX_ERROR_MESSAGE:
        cut = len(message) - MAX_ERROR_MESSAGE
        message = f"{message[:MAX_ERROR_MESSAGE]}... ({cut:,} more characters)"
    return ErrorInfo(qualified_name(type(exc)), message, args)


def rebuild_error(step: str, info: ErrorInfo) -> Exception:
    """The exception a handler sees for a journaled error, live and on replay alike.

    Built-in exceptions and registered `StepError` subclasses come back as themselves;
    anything else as `StepFailed` naming the original type and message.
    """
    cls: type[BaseException] | None = None
    if info.type.startswith("builtins."):
        found = getattr(builtins, info.type.removeprefix("builtins."), None)
        if isinstance(found, type) and issubclass(found, Exception):
            cls = found
    else:
        cls = StepError.registry.get(info.type) or JOURNALED_ERRORS.get(info.type)
    if cls is not None and info.args:
        try:
            error = cls(*msgspec.msgpack.decode(info.args))
        except Exception:
            error = None
        if isinstance(error, Exception):
            return error
    return StepFailed(step, info.type, info.message)


def canonical_equal(a: bytes, b: bytes, kind: Any = Any) -> bool:
    """Whether two MessagePack values of type ``kind`` are equal once put in canonical
    form (a set or a dict that came out in another order in another process still
    compares equal)."""
    if a == b:
        return True
    decoder = decoder_for(kind)
    try:
        return canonical(decoder.decode(a)) == canonical(decoder.decode(b))
    except (msgspec.DecodeError, TypeError):
        return False
