"""The API under test, in process: a runtime, its `ServerState`, and an HTTP client over ASGI."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx

from actorflow import Actor, Runtime
from actorflow.server import ServerState, create_app
from journal import MemoryStore, Store
from tests.server.app_under_test import ACTORS

#: How long a poll waits for the runtime to reach a state before the test fails.
DEADLINE = 5.0


@dataclasses.dataclass
class Api:
    """A served runtime and an HTTP client talking to it."""

    runtime: Runtime
    state: ServerState
    transport: httpx.ASGITransport
    http: httpx.AsyncClient

    async def send(self, actor: str, handler: str, args: Any = None, **options: Any) -> Any:
        """POST a message; the response."""
        return await self.http.post(f"/v1/actors/{actor}/messages/{handler}", json=args, **options)

    async def actor_state(self, actor: str) -> str:
        """The ``state`` the status endpoint reports."""
        response = await self.http.get(f"/v1/actors/{actor}")
        assert response.status_code == 200, response.text
        state: str = response.json()["state"]
        return state


@contextlib.asynccontextmanager
async def serving(
    store: Store | None = None,
    headers: dict[str, str] | None = None,
    actors: list[type[Actor]] | None = None,
    runtime_options: dict[str, Any] | None = None,
    **settings: Any,
) -> AsyncIterator[Api]:
    """The test actors (or ``actors``) served over ``store`` (a fresh MemoryStore by
    default), with ``runtime_options`` for the `Runtime`; the store is closed afterwards."""
    store = store or MemoryStore()
    try:
        options = {"grace": 1, **(runtime_options or {})}
        async with Runtime(store, actors or ACTORS, **options) as runtime:
            state = ServerState(runtime, **settings)
            transport = httpx.ASGITransport(app=create_app(state))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://localhost", headers=headers
            ) as http:
                yield Api(runtime, state, transport, http)
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()


async def eventually(
    predicate: Callable[[], Awaitable[bool]], what: str, *, timeout: float = DEADLINE
) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        while True:
            if await predicate():
                return
            await anyio.sleep(0.005)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def reaches(api: Api, actor: str, state: str) -> None:
    """Wait until the status endpoint says ``actor`` is in ``state``."""

    async def check() -> bool:
        return await api.actor_state(actor) == state

    await eventually(check, f"{actor} to be {state!r}")


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    """An error response as (status, type, message), checking the body's shape."""
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"type", "message"}
    return response.status_code, error["type"], error["message"]


async def nothing_accepted(api: Api) -> None:
    """Nothing is journaled: no actor, no message, no event, no record at all."""
    assert await api.runtime.list_actors() == []
    assert [record async for record in api.runtime.store.read_all()] == []
