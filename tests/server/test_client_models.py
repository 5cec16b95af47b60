"""Pydantic models over HTTP: a typed `Client` call sends models and pydantic-ai's
messages as JSON arguments, the handler gets them as their classes, and the caller gets
the result as the handler's return type; a model event is delivered and checked."""

from __future__ import annotations

import anyio
import pydantic
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse

from actorflow import Actor, ClientError, handler
from tests.runtime.sdk_values import anthropic_message, chat_completion, model_request
from tests.runtime.sdk_values import model_response as response
from tests.server.support import reaches, serving
from tests.server.test_client import client_of

pytestmark = pytest.mark.anyio


class Go(pydantic.BaseModel):
    by: str


class Relay(Actor, events={"go": Go}):
    @handler
    async def relay(self, completion: ChatCompletion, history: list[ModelMessage]) -> Message:
        assert type(completion) is ChatCompletion
        assert completion == chat_completion()
        assert [type(m) for m in history] == [ModelRequest, ModelResponse]
        go = await self.ctx.wait_for("go")
        assert type(go) is Go
        return anthropic_message().model_copy(update={"id": f"msg_{go.by}"})


async def test_models_travel_as_json_and_come_back_as_the_return_type() -> None:
    async with serving(actors=[Relay]) as api, client_of(api) as client:
        relay = client.ref(Relay, "r")
        answers: list[Message] = []

        async def ask() -> None:
            history = [model_request(), response()]
            answers.append(await relay.call(Relay.relay, chat_completion(), history))

        async with anyio.create_task_group() as group:
            group.start_soon(ask)
            await reaches(api, "Relay/r", "waiting-event")
            with pytest.raises(ClientError, match=r"event .go. for Relay must be a Go"):
                await client.deliver(relay.ref, "go", {"who": "nobody"})
            await client.deliver(relay.ref, "go", Go(by="ops"))
    (answer,) = answers
    assert type(answer) is Message
    assert answer == anthropic_message().model_copy(update={"id": "msg_ops"})
