"""Responses of the real ``openai``, ``anthropic`` and ``pydantic-ai`` packages, built here
from the JSON their APIs send (no network), the way each SDK builds them."""

from __future__ import annotations

import datetime
from typing import Any

from anthropic.types import Message
from openai.types.chat import ChatCompletion
from pydantic_ai.messages import (
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.usage import RequestUsage

AT = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.UTC)


def chat_completion(content: str | None = None, *, tool: bool = True) -> ChatCompletion:
    """A chat completion that calls a tool, as the ``openai`` client builds one from the
    server's JSON (``construct``: no validation, nested models built by type), with a field
    the SDK does not know (a local server's extra)."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    raw: dict[str, Any] = {
        "id": "chatcmpl-42",
        "object": "chat.completion",
        "created": 1_767_000_000,
        "model": "gpt-local",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls" if tool else "stop",
                "logprobs": None,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": None,
                    "tool_calls": [call] if tool else None,
                },
            }
        ],
        "usage": {"prompt_tokens": 31, "completion_tokens": 12, "total_tokens": 43},
        "x_local_server": {"gpu": "none", "ms": 12.5},
    }
    return ChatCompletion.construct(**raw)


def anthropic_message() -> Message:
    """A Messages API answer with text and a tool call, validated as the SDK's model."""
    return Message.model_validate(
        {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-local",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"c": 1}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 20, "output_tokens": 9},
        }
    )


def model_response() -> ModelResponse:
    """A pydantic-ai model response: text and a tool call."""
    return ModelResponse(
        parts=[TextPart("Checking."), ToolCallPart("get_weather", {"city": "Oslo"}, "call_1")],
        usage=RequestUsage(input_tokens=5, output_tokens=7),
        model_name="test",
        timestamp=AT,
        provider_response_id="resp-1",
    )


def model_request() -> ModelRequest:
    """A pydantic-ai request: a user prompt and a tool's return."""
    return ModelRequest(
        parts=[
            UserPromptPart("Weather in Oslo?", timestamp=AT),
            ToolReturnPart("get_weather", {"temp": -3.5}, "call_1", timestamp=AT),
        ]
    )
