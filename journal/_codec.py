"""Turning a tagged union of msgspec Structs into journal records and back (MessagePack)."""

from __future__ import annotations

import typing
from typing import Any, Generic, TypeVar

import msgspec

from journal._crypt import SEALED_MAGIC, sealed_payload
from journal._errors import DecodeError
from journal._records import NewRecord, Record

T = TypeVar("T")


def _members(union: Any) -> tuple[Any, ...]:
    """The member types of ``A | B`` or ``Union[A, B]``; a lone type is its own union."""
    return typing.get_args(union) or (union,)


def _tag_of(kind: Any) -> str:
    if not (isinstance(kind, type) and issubclass(kind, msgspec.Struct)):
        raise TypeError(
            f"Codec members must be msgspec.Struct classes with a tag, got {kind!r}; "
            f"declare it as `class {getattr(kind, '__name__', 'X')}(msgspec.Struct, tag=True)`"
        )
    tag = kind.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(
            f"{kind.__name__} has no string tag; declare it with tag=True or tag='name' "
            f"so that its records can be told apart in the journal"
        )
    return tag


class Codec(Generic[T]):
    """Encodes the members of one tagged union of Structs as records, and decodes them back.

    The record's type tag is the Struct's msgspec tag, so a reader picks the right type
    without trying each one; an unknown tag or bytes that don't fit the type raise
    `DecodeError` naming the stream and position.

    >>> codec = Codec(StepDone | TurnStarted)   # doctest: +SKIP
    """

    def __init__(self, union: Any) -> None:
        members = _members(union)
        # Each decoder yields one member of the union, so a T (typed so for the hot path).
        self._decoders: dict[str, msgspec.msgpack.Decoder[T]] = {}
        for kind in members:
            tag = _tag_of(kind)
            if tag in self._decoders:
                raise TypeError(f"two Codec members share the tag {tag!r}")
            self._decoders[tag] = msgspec.msgpack.Decoder(kind)
        self._encoder = msgspec.msgpack.Encoder()
        self._types = frozenset(members)

    @property
    def tags(self) -> frozenset[str]:
        """The type tags this codec knows."""
        return frozenset(self._decoders)

    def encode(self, value: T) -> NewRecord:
        """Encode one union member as a record ready to append."""
        kind = type(value)
        if kind not in self._types:
            raise TypeError(f"{kind.__name__} is not a member of this codec's union")
        tag = kind.__struct_config__.tag  # type: ignore[attr-defined]
        return NewRecord(type=tag, data=self._encoder.encode(value))

    def decode(self, record: Record) -> T:
        """Decode a stored record; raise `DecodeError` if its tag or bytes don't fit."""
        decoder = self._decoders.get(record.type)
        if decoder is not None:
            try:
                return decoder.decode(record.data)
            except msgspec.DecodeError:
                pass  # decode_payload raises the error naming the stream and position
        return self.decode_payload(record.type, record.data, record.stream, record.position)

    def decode_payload(self, record_type: str, data: bytes, stream: str, position: int) -> T:
        """Decode a payload given its type tag; ``stream``/``position`` name it in errors."""
        decoder = self._decoders.get(record_type)
        if data.startswith(SEALED_MAGIC):
            raise DecodeError(stream, position, record_type, sealed_payload(data))
        if decoder is None:
            known = ", ".join(sorted(self._decoders))
            raise DecodeError(
                stream, position, record_type, f"unknown record type (this codec knows: {known})"
            )
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as exc:  # ValidationError is a subclass
            raise DecodeError(stream, position, record_type, str(exc)) from None
