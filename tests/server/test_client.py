"""`actorflow.Client` and `RemoteActor` against the API, in process (over ASGI)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from actorflow import ActorRef, Client, ClientError, HandlerFailed, InvalidMessageError
from tests.server import app_under_test
from tests.server.app_under_test import Approval, Booking, Broken, Decision, Greeter
from tests.server.support import Api, reaches, serving

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def client_of(api: Api, token: str | None = None) -> AsyncIterator[Client]:
    """A `Client` whose requests go to ``api``'s app instead of the network."""
    async with Client("http://localhost", token=token) as client:
        headers = client._http.headers
        await client._http.aclose()
        client._http = httpx.AsyncClient(
            transport=api.transport, base_url="http://localhost", headers=headers
        )
        yield client


async def test_a_typed_call_returns_the_handlers_result() -> None:
    async with serving() as api, client_of(api) as client:
        greeting = await client.ref(Greeter, "g").call(Greeter.greet, "ann", times=2)
        assert greeting == "hello ann hello ann"


async def test_a_typed_call_decodes_a_struct_result_after_waiting_for_an_event() -> None:
    async with serving() as api, client_of(api) as client:
        approval = client.ref(Approval, "a")
        decisions: list[Decision] = []

        async def ask() -> None:
            decisions.append(await approval.call(Approval.request, "deploy"))

        async with anyio.create_task_group() as group:
            group.start_soon(ask)
            await reaches(api, "Approval/a", "waiting-event")
            await client.deliver(approval.ref, "decision", {"by": "ops", "approved": True})
        assert decisions == [Decision("deploy", "ops", True)]
        assert isinstance(decisions[0], Decision)


async def test_a_typed_call_of_a_failing_handler_raises_handler_failed() -> None:
    async with serving() as api, client_of(api) as client:
        with pytest.raises(HandlerFailed, match="boom: fuse") as failure:
            await client.ref(Broken, "b").call(Broken.explode, "fuse")
        assert "ValueError" in failure.value.error_type


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [(("ann", 2, 3), {}), (("ann",), {"name": "bo"})],
    ids=["too-many-positional", "argument-given-twice"],
)
async def test_a_typed_call_with_arguments_that_do_not_fit_is_refused_as_embedded(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    async with serving() as api, client_of(api) as client:
        with pytest.raises(InvalidMessageError):
            await api.runtime.ref(Greeter, "g").send(Greeter.greet, *args, **kwargs)
        with pytest.raises((InvalidMessageError, ClientError)):
            await client.ref(Greeter, "g").call(Greeter.greet, *args, **kwargs)
        assert await api.runtime.list_actors() == []
        assert not app_under_test.greeted


async def test_send_then_result_and_invocation() -> None:
    async with serving() as api, client_of(api) as client:
        invocation = await client.ref(Greeter, "g").send(Greeter.greet, "bo")
        assert invocation.startswith("Greeter/g#")
        assert await client.result(invocation, timeout=5) == "hello bo"
        status = await client.invocation(invocation)
        assert (status.state, status.result) == ("completed", "hello bo")


async def test_result_gives_up_after_its_timeout() -> None:
    async with serving() as api, client_of(api) as client:
        invocation = await client.ref(Approval, "a").send(Approval.request, "x")
        with anyio.fail_after(5), pytest.raises(TimeoutError):
            await client.result(invocation, timeout=0.3)


async def test_an_idempotency_key_makes_a_retry_return_the_same_invocation() -> None:
    async with serving() as api, client_of(api) as client:
        first = await client.send("Greeter/g", "greet", {"name": "cy"}, idempotency_key="once")
        again = await client.send(
            "Greeter/g", "greet", {"name": "cy"}, idempotency_key="once", wait=5
        )
        assert again.invocation == first.invocation
        assert again.result == "hello cy"
        assert app_under_test.greeted["cy"] == 1


async def test_cancel_status_journal_and_list() -> None:
    async with serving() as api, client_of(api) as client:
        invocation = await client.ref(Booking, "b").send(Booking.trip, "lima")
        await reaches(api, "Booking/b", "waiting-timer")
        status = await client.status("Booking/b")
        assert (status.state, status.invocation) == ("waiting-timer", invocation)
        [listed] = await client.list_actors("Booking", "waiting-timer")
        assert listed.actor == "Booking/b"
        assert await client.list_actors(state="idle") == []
        await client.cancel(invocation)
        with pytest.raises(HandlerFailed):
            await client.result(invocation, timeout=5)
        cancelled = await client.invocation(invocation)
        assert (cancelled.state, cancelled.compensated) == ("cancelled", ("reserve",))
        journal = await client.journal(ActorRef("Booking", "b"))
        steps = [(e.type, e.data.get("name")) for e in journal if e.stream == "actor"]
        assert ("step", "reserve") in steps
        assert ("timer", "departure") in steps
        assert app_under_test.released == ["seat-to-lima"]


async def test_refusals_raise_client_error_with_the_status_and_kind() -> None:
    async with serving() as api, client_of(api) as client:
        with pytest.raises(ClientError) as unknown:
            await client.send("Greeter/g", "shout", {"name": "a"})
        assert (unknown.value.status, unknown.value.kind) == (404, "unknown_handler")
        assert "greet" in unknown.value.message
        with pytest.raises(ClientError) as invalid:
            await client.send("Greeter/g", "greet", {"name": 1})
        assert (invalid.value.status, invalid.value.kind) == (400, "invalid_message")
        with pytest.raises(ClientError) as missing:
            await client.invocation("Greeter/g#0123456789abcdef01234567")
        assert missing.value.status == 404
        with pytest.raises(ValueError, match="Type/key"):
            await client.status("no-slash")


async def test_the_client_sends_its_token() -> None:
    async with serving(token="tok") as api:
        async with client_of(api, token="tok") as client:
            assert await client.ref(Greeter, "g").call(Greeter.greet, "t") == "hello t"
        async with client_of(api) as anonymous:
            with pytest.raises(ClientError) as refused:
                await anonymous.status("Greeter/g")
            assert (refused.value.status, refused.value.kind) == (401, "unauthorized")
