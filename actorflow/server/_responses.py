"""`ApiError` and the JSON responses of the API: every refusal, wherever it is decided
(before routing, in an endpoint, or from a runtime error), has the same body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.responses import Response

from actorflow._journalable import enc_hook

#: Results and events may hold pydantic models: they are written as pydantic dumps them.
_json = msgspec.json.Encoder(enc_hook=enc_hook)


class ApiError(Exception):
    """An error answered as JSON with an HTTP status."""

    def __init__(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        #: Headers the answer needs (``Allow``, ``Connection: close``, ...).
        self.headers = headers or {}


def ambiguous_framing() -> ApiError:
    """The refusal of a request framed by both Content-Length and Transfer-Encoding (by the
    ASGI guard, or by the connection when the HTTP parser refuses it first)."""
    return ApiError(
        400,
        "ambiguous_framing",
        "the request has both Content-Length and Transfer-Encoding headers, so where its "
        "body ends is ambiguous (a request-smuggling pattern) and it was not read; send one "
        "of the two",
        {"Connection": "close"},
    )


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded by msgspec."""
    return Response(_json.encode(value), status, headers, media_type="application/json")


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> Response:
    """The JSON body every error gets: ``{"error": {"type": ..., "message": ...}}``."""
    body = {"error": {"type": error.kind, "message": error.message}}
    return json_response(body, error.status, {**error.headers, **(headers or {})})


async def json_array(items: list[Any]) -> AsyncIterator[bytes]:
    """``items`` as a JSON array, in chunks of about 64 KiB."""
    chunk = bytearray(b"[")
    for n, item in enumerate(items):
        if n:
            chunk += b","
        chunk += _json.encode(item)
        if len(chunk) >= 65536:
            yield bytes(chunk)
            chunk.clear()
    chunk += b"]"
    yield bytes(chunk)
