"""Handlers whose arguments are pydantic models (and types only pydantic validates) are
described in /openapi.json by pydantic's own schemas, and the document stays valid."""

from __future__ import annotations

from typing import Any

import msgspec
from openai.types.chat import ChatCompletion
from openapi_spec_validator import validate
from pydantic_ai.messages import ModelMessage

from actorflow import Actor, Runtime, handler
from actorflow.server import ACTOR_STATES
from actorflow.server._openapi import openapi_document
from journal import MemoryStore


class Assistant(Actor):
    @handler
    async def answer(
        self, completion: ChatCompletion, history: list[ModelMessage], note: str = ""
    ) -> str:
        return note


def refs(node: Any) -> set[str]:
    """Every ``$ref`` in a JSON document."""
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(item) for item in node))
    return set()


def test_model_arguments_are_described_by_their_pydantic_schemas() -> None:
    built = openapi_document(Runtime(MemoryStore(), [Assistant]), ACTOR_STATES)
    document = msgspec.json.decode(msgspec.json.encode(built))  # as served
    validate(document)
    components = document["components"]["schemas"]
    args = components["Assistant.answer.args"]["properties"]
    assert args["completion"]["title"] == "ChatCompletion"
    choice = args["completion"]["properties"]["choices"]["items"]
    assert choice == {"$ref": "#/components/schemas/Choice"}
    assert args["history"]["type"] == "array"
    assert "ChatCompletionMessage" in components
    assert "ModelResponse" in components
    missing = {ref for ref in refs(document) if ref.split("/")[-1] not in components}
    assert not missing  # every definition pydantic refers to is in the document
