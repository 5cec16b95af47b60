"""The web console at ``/ui`` (docs/console.md), and the one endpoint only it needed.

The console is static files shipped in the package (``actorflow/server/console/``):
hand-written HTML, CSS and JavaScript modules, no build step, nothing loaded from
elsewhere. They hold no data, so they are served without a token (as ``/livez``); every
request the page makes for data goes to the API with the token the operator typed.

Each file is served with its content type and a Content-Security-Policy that lets the page
run only its own scripts and styles and talk only to this server: whatever a journal
holds, were it ever written into the page as markup, could not run.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from actorflow._actor import check_key
from actorflow._context import ActorRef
from actorflow._errors import UnknownActorError
from actorflow._events import ActorSnapshot, actor_stream
from actorflow.runtime._state_parts import state_bytes
from actorflow.server._responses import ApiError, json_response

if TYPE_CHECKING:
    from actorflow.server._app import Endpoint, ServerState

#: Where the page lives; ``/ui/NAME`` serves the file NAME of the console's directory.
PREFIX = "/ui"
#: The content type of each kind of file the console ships (any other is not served).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: Only this server's own scripts, styles, images and API; no inline code, no frames.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def _assets() -> dict[str, tuple[bytes, str]]:
    """The console's files by name, read once: (content, content type)."""
    found: dict[str, tuple[bytes, str]] = {}
    for item in importlib.resources.files("actorflow.server").joinpath("console").iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in CONTENT_TYPES:
            found[item.name] = (item.read_bytes(), CONTENT_TYPES[suffix])
    return found


ASSETS = _assets()


async def page(request: Request, state: ServerState) -> Response:
    """GET /ui: the console's page."""
    return _asset("index.html")


async def asset(request: Request, state: ServerState) -> Response:
    """GET /ui/{name}: one of the console's files."""
    return _asset(request.path_params["name"])


def _asset(name: str) -> Response:
    if name not in ASSETS:
        raise ApiError(404, "not_found", f"the console has no file {name!r}")
    content, media_type = ASSETS[name]
    return Response(content, headers=HEADERS, media_type=media_type)


class Checkpoint(msgspec.Struct, frozen=True):
    """An actor's latest checkpoint: the turn it ended, the actor-stream position it
    covers (records up to it are folded in, and deleted every ``--snapshot-every``
    turns), the code version of that turn, and the state it holds, as plain data."""

    actor: str
    turn: int
    covers: int
    version: str | None
    state: Any


async def checkpoint(request: Request, state: ServerState) -> Response:
    """GET /v1/actors/{type}/{key}/checkpoint: the state its last finished turn left."""
    ref = ActorRef(request.path_params["type"], request.path_params["key"])
    check_key(ref.key)
    runtime = state.runtime
    if ref.type_name not in runtime.actor_types:
        known = ", ".join(sorted(runtime.actor_types)) or "none"
        raise UnknownActorError(f"unknown actor type {ref.type_name!r}; this server hosts: {known}")
    store = runtime.store
    for attempt in range(3):
        snapshot = await store.load_snapshot(actor_stream(ref.id))
        if snapshot is None:
            return json_response(Checkpoint(ref.id, 0, 0, None, None))
        saved = msgspec.msgpack.decode(snapshot.data, type=ActorSnapshot)
        try:
            data = await state_bytes(store, ref.id, saved)
        except Exception:  # its parts collected under a newer checkpoint: read that one
            if attempt == 2:
                raise
            continue
        value = msgspec.msgpack.decode(data) if data else None
        version = saved.version or None
        return json_response(Checkpoint(ref.id, saved.turn, snapshot.position, version, value))
    raise AssertionError("unreachable")  # pragma: no cover


def routes(add: Callable[[str, Endpoint, bool], Any]) -> list[Any]:
    """The console's routes, made by ``add(path, endpoint, public)`` (GET only)."""
    actor = "/v1/actors/{type}/{key}"
    return [
        add(PREFIX, page, True),
        add(f"{PREFIX}/{{name}}", asset, True),
        add(f"{actor}/checkpoint", checkpoint, False),
    ]
