"""Turning step results, arguments and exceptions into journal bytes and back."""

from __future__ import annotations

import builtins
import functools
import hashlib
import typing
import zlib
from collections.abc import Callable
from typing import Any

import msgspec

from actorflow._errors import JOURNALED_ERRORS, InvalidResultError, StepError, StepFailed
from actorflow._events import ErrorInfo

_encoder = msgspec.msgpack.Encoder()


def encode(value: Any) -> bytes:
    """MessagePack bytes of ``value`` (TypeError if msgspec can't encode it)."""
    return _encoder.encode(value)


@functools.lru_cache(maxsize=1024)
def decoder_for(kind: Any) -> msgspec.msgpack.Decoder[Any]:
    """A cached decoder for one type."""
    return msgspec.msgpack.Decoder(kind)


@functools.lru_cache(maxsize=1024)
def result_type_of(fn: Callable[..., Any]) -> Any:
    """The return annotation of ``fn`` (``Any`` when absent or unresolvable); cached, as
    resolving annotations costs more than the rest of a replayed step."""
    target = getattr(fn, "func", fn)  # functools.partial
    try:
        return typing.get_type_hints(target).get("return", Any)
    except Exception:
        return Any


def encode_result(step: str, value: Any, kind: Any) -> tuple[bytes, Any]:
    """Encode a step's result and decode it back as ``kind``.

    The handler always gets the decoded value, live and on replay alike, so the two can't
    differ (a tuple doesn't become a list only after a restart).
    """
    try:
        data = encode(value)
        return data, decoder_for(kind).decode(data)
    except (TypeError, msgspec.ValidationError) as exc:
        raise InvalidResultError(
            f"step {step!r} returned {type(value).__name__}, which cannot be journaled as "
            f"{getattr(kind, '__name__', kind)}: {exc}. Return msgspec-encodable values "
            f"(Structs, dataclasses, dicts, lists, str, int, float, bool, None, bytes)."
        ) from None


def fingerprint(args: tuple[Any, ...]) -> int:
    """A short fingerprint of a step's inputs (0 when they can't be encoded)."""
    if not args:
        return 0
    try:
        return zlib.crc32(encode(args)) or 1
    except TypeError:
        return 0


def derive(*parts: str, size: int = 16) -> bytes:
    """Deterministic bytes from identifiers (ids, seeds): the same parts give the same bytes."""
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=size).digest()


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def error_info(exc: BaseException) -> ErrorInfo:
    """An exception as journaled: type name, message and (when encodable) its arguments."""
    try:
        args = encode(exc.args)
    except TypeError:
        args = b""
    return ErrorInfo(qualified_name(type(exc)), str(exc), args)


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
