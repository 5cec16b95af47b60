"""What a request carries, checked before anything is accepted: its Content-Type, its JSON
body (nesting and numbers the journal cannot store), and its ``?wait=`` and ``?deadline=``.

Each refusal is an `ApiError` that says what was wrong, where, and what to send instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from actorflow.server._responses import ApiError

#: How deeply a request body may nest arrays and objects (``{"a": [1]}`` is 2 levels).
MAX_JSON_DEPTH = 64
#: The integers the journal stores (MessagePack's): int64 and uint64.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_A_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
_ALL_SQUARE = bytes.maketrans(b"{}", b"[]")
_OPENS_OR_CLOSES = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[{]|[\]}]')
#: ``?wait=`` and ``?deadline=``: plain decimals only, as the clients send them.
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def has_body(headers: Mapping[str, str]) -> bool:
    """Whether a request announces a body (chunks, or a Content-Length other than 0)."""
    length = headers.get("content-length", "0").strip().lstrip("0")
    return "transfer-encoding" in headers or length != ""


def check_json_content_type(method: str, path: str, content_type: str | None) -> None:
    """Refuse a body that is not declared ``application/json`` (UTF-8): a browser page may
    send ``text/plain`` anywhere without asking, never ``application/json``."""
    media, _, parameters = (content_type or "").partition(";")
    charset = ""
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    if media.strip().lower() == "application/json" and charset in ("", "utf-8"):
        return
    got = "no Content-Type" if content_type is None else f"Content-Type {content_type!r}"
    raise ApiError(
        415,
        "unsupported_media_type",
        f"{method} {path} takes a JSON body, sent with the header "
        f"'Content-Type: application/json' (UTF-8); this request has {got}",
    )


def decode_json(data: bytes, what: str) -> Any:
    """``data`` decoded as JSON, refused (400) when it is malformed, nests deeper than
    `MAX_JSON_DEPTH`, or holds a number the journal cannot store. ``what`` names the
    body in messages ("the arguments", "the event payload")."""
    _check_depth(data, what)
    try:
        value = msgspec.json.decode(data)
    except msgspec.ValidationError as exc:  # valid JSON; a number beyond any float or int
        raise ApiError(
            400,
            "invalid_message",
            f"a number in {what} is out of range ({exc}); send integers between {INT_MIN} "
            f"and {INT_MAX} and other numbers within a double's range, larger ones as strings",
        ) from None
    except msgspec.DecodeError as exc:
        raise ApiError(
            400, "malformed_json", f"the request body is not valid JSON: {exc}"
        ) from None
    _check_integers(value, what)
    return value


def _check_depth(data: bytes, what: str) -> None:
    """Refuse JSON nested deeper than `MAX_JSON_DEPTH`, before decoding it (the decoder
    recurses) and without recursing: strip the strings, keep the brackets, and remove the
    innermost pairs once per level, each pass a C loop over the bytes."""
    brackets = _JSON_STRING.sub(b"", data).translate(_ALL_SQUARE, _NOT_A_BRACKET)
    for _ in range(MAX_JSON_DEPTH):
        if b"[]" not in brackets:
            return
        brackets = brackets.replace(b"[]", b"")
    if b"[]" in brackets:
        raise ApiError(
            400,
            "invalid_message",
            f"arrays and objects in {what} nest more than {MAX_JSON_DEPTH} levels deep "
            f"(level {MAX_JSON_DEPTH + 1} opens at byte {_too_deep_at(data)} of the body); "
            f"flatten the structure, or store it elsewhere and pass a reference",
        )


def _too_deep_at(data: bytes) -> int:
    """The offset of the first bracket that opens a level beyond `MAX_JSON_DEPTH`."""
    depth = 0
    for token in _OPENS_OR_CLOSES.finditer(data):
        first = token.group()[:1]
        if first in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return token.start()
        elif first in (b"]", b"}"):
            depth -= 1
    return len(data)


def _check_integers(value: Any, what: str) -> None:
    """Refuse integers outside 64 bits, naming the first one's place (``$.a[2]``); the
    common case costs one encode, the walk runs only when it fails."""
    try:
        msgspec.msgpack.encode(value)
    except OverflowError:
        pass
    else:
        return
    pending: list[tuple[str, Any]] = [("$", value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, dict):
            pending += [(_member(path, key), inner) for key, inner in reversed(item.items())]
        elif isinstance(item, list):
            pending += [(f"{path}[{i}]", inner) for i, inner in reversed(list(enumerate(item)))]
        elif isinstance(item, int) and not INT_MIN <= item <= INT_MAX:
            raise ApiError(
                400,
                "invalid_message",
                f"the integer at {path} in {what} is outside the 64 bits the journal stores "
                f"({INT_MIN} to {INT_MAX}); send a larger number as a string",
            )


def _member(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{msgspec.json.encode(key).decode()}]"


def query_seconds(
    query: Mapping[str, str], name: str, *, maximum: float | None = None
) -> float | None:
    """``?name=`` as a number of seconds >= 0 (None when absent), capped at ``maximum``:
    plain decimals only (``5``, ``0.5``), never ``1e3``, ``inf``, ``nan`` or ``0x10``."""
    raw = query.get(name)
    if raw is None:
        return None
    value = float(raw) if _DECIMAL.fullmatch(raw) else math.nan
    if not math.isfinite(value):
        raise ApiError(
            400,
            "invalid_query",
            f"?{name}= takes a plain decimal number of seconds such as 5 or 0.5 (no "
            f"exponent, sign, spaces, inf or nan), got {raw!r}",
        )
    return value if maximum is None else min(value, maximum)
