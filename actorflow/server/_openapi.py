"""The OpenAPI document the server serves at /openapi.json."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from actorflow.runtime import ActorStatus, InvocationStatus, JournalEntry, Runtime

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            "required": ["type", "message"],
        }
    },
}


def openapi_document(runtime: Runtime, actor_states: Sequence[str]) -> dict[str, Any]:
    """OpenAPI 3.1 for the API, with each hosted handler's argument schema; an actor's
    ``state`` is one of ``actor_states``."""
    (status, invocation, entry), components = msgspec.json.schema_components(
        [ActorStatus, InvocationStatus, JournalEntry], ref_template="#/components/schemas/{name}"
    )
    state_enum = {"type": "string", "enum": list(actor_states)}
    components["ActorStatus"]["properties"]["state"] = state_enum
    paths: dict[str, Any] = {}
    for type_name, cls in sorted(runtime.actor_types.items()):
        for name, info in sorted(cls.__actorflow_handlers__.items()):
            (args,), extra = msgspec.json.schema_components(
                [info.params], ref_template="#/components/schemas/{name}"
            )
            components.update(extra)
            paths[f"/v1/actors/{type_name}/{{key}}/messages/{name}"] = {
                "post": _send(type_name, name, info.fn.__doc__ or "", args, invocation)
            }
    actor = "/v1/actors/{type}/{key}"
    endpoints: list[tuple[str, str, str, dict[str, Any]]] = [
        (actor, "get", "An actor's status.", status),
        (f"{actor}/journal", "get", "An actor's journal.", _array(entry)),
        (f"{actor}/invocations", "get", "An actor's invocations.", _array(invocation)),
        (f"{actor}/invocations/{{id}}", "get", "An invocation (?wait=S).", invocation),
        (f"{actor}/invocations/{{id}}/cancel", "post", "Cancel an invocation.", invocation),
        (
            f"{actor}/invocations/{{id}}/retry",
            "post",
            "Retry a failed invocation from its last journaled step.",
            invocation,
        ),
        (f"{actor}/events/{{name}}", "post", "Deliver an event.", {"type": "object"}),
        ("/v1/actors", "get", "Actors by ?type= and ?state=.", _array(status)),
        ("/livez", "get", "Liveness (200 from the moment the port is bound).", {"type": "object"}),
        (
            "/readyz",
            "get",
            "Readiness (503 with the reason while starting, and while shutting down).",
            {"type": "object"},
        ),
    ]
    for path, method, summary, schema in endpoints:
        paths[path] = {method: _get(summary, schema, path)}
    paths["/v1/actors"]["get"]["parameters"] = [
        {"name": "type", "in": "query", "schema": {"type": "string"}},
        {"name": "state", "in": "query", "schema": state_enum},
    ]
    paths["/metrics"] = {"get": {"summary": "Prometheus metrics.", "responses": {"200": {}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "actorflow", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _array(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _get(summary: str, schema: dict[str, Any], path: str = "") -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": _path_parameters(path),
        "responses": {"200": _json(schema), "default": _json(_ERROR)},
    }


def _path_parameters(path: str) -> list[dict[str, Any]]:
    """Every ``{name}`` in a path template, declared as a required string parameter."""
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in names
    ]


def _send(
    type_name: str, handler: str, doc: str, args: dict[str, Any], invocation: dict[str, Any]
) -> dict[str, Any]:
    return {
        "summary": f"Send {type_name}.{handler}: {doc.strip().splitlines()[0] if doc else ''}",
        "parameters": [
            {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "wait", "in": "query", "schema": {"type": "number", "maximum": 60}},
            {"name": "deadline", "in": "query", "schema": {"type": "number"}},
            {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}},
        ],
        "requestBody": {"required": False, **_json(args)},
        "responses": {
            "200": _json(invocation),
            "202": _json(invocation),
            "default": _json(_ERROR),
        },
    }
