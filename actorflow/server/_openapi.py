"""The OpenAPI document the server serves at /openapi.json: every path, parameter, status
and error type the server answers, so that clients and test generators can trust it
(`tests/server/test_openapi.py` validates it and runs schemathesis against a live server).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from actorflow._actor import KEY_PATTERN
from actorflow._budget import BudgetStatus
from actorflow._journalable import schema_components
from actorflow.cluster import WorkerInfo
from actorflow.runtime import (
    ActorStatus,
    Damage,
    InvocationStatus,
    JournalEntry,
    QueryAnswer,
    Runtime,
    TurnReset,
)
from actorflow.server._console import Checkpoint
from actorflow.server._query import QUERY_ERRORS

_REF = "#/components/schemas/{name}"

#: Every error type the API answers: its status and when.
ERRORS: dict[str, tuple[int, str]] = {
    "invalid_message": (400, "arguments, payload or actor key refused (the message says where)"),
    "malformed_json": (400, "the body is not valid JSON"),
    "invalid_query": (400, "a ?wait=, ?deadline=, ?state=, ?limit= or ?cursor= it cannot take"),
    "invalid_host": (400, "several or no Host headers"),
    "invalid_offset": (400, "a stream offset (Last-Event-ID) that is no event id of the stream"),
    "ambiguous_framing": (400, "both Content-Length and Transfer-Encoding"),
    "unauthorized": (401, "no or a wrong bearer token"),
    "origin_not_allowed": (403, "an Origin (a web page) not named by --allowed-origin"),
    "unknown_actor_type": (404, "an actor type this server does not host"),
    "unknown_handler": (404, "a handler the actor type does not have"),
    "unknown_invocation": (404, "no such invocation was accepted"),
    "not_found": (404, "no such endpoint"),
    "actor_stuck": (409, "the actor is stuck (with its error)"),
    "actor_corrupt": (
        409,
        "the actor is quarantined: its journal is damaged (where, and what to do)",
    ),
    "not_retryable": (409, "the invocation cannot be retried"),
    "reset_refused": (
        409,
        "the actor is not stuck or held, has no unfinished turn, or it is not discard_turn",
    ),
    "body_too_large": (413, "a body over --max-body-bytes"),
    "message_too_large": (413, "a message or event over the journal's record limit"),
    "unsupported_media_type": (415, "a body not sent as Content-Type: application/json"),
    "host_not_allowed": (421, "a Host not named by --allowed-host (nor this machine's)"),
    "invalid_budget": (400, "an Actorflow-Budget header it cannot take (the message says why)"),
    "no_budget": (404, "the invocation has no budget ledger"),
    "idempotency_key_reused": (422, "the Idempotency-Key was used for another request"),
    "too_many_pending_events": (429, "the actor holds too many events nobody waited for"),
    "too_many_queued_messages": (429, "the actor has too many messages waiting for their turns"),
    "starting": (503, "the server is not ready yet"),
    "shutting_down": (503, "the server is shutting down"),
    "journal_unavailable": (503, "the journal could not write; nothing was accepted"),
    **QUERY_ERRORS,
}
#: What a health check may be refused for (they answer any Host and need no token).
_HEALTH = ("ambiguous_framing", "origin_not_allowed")
#: ... any other endpoint (``unauthorized`` when the server has a token).
_SERVED = (*_HEALTH, "invalid_host", "host_not_allowed", "unauthorized", "starting",
           "shutting_down")  # fmt: skip
#: ... and, beyond those, any endpoint of an actor.
_ACTOR = ("invalid_message", "unknown_actor_type", "journal_unavailable", "actor_corrupt")
_BODY = ("malformed_json", "body_too_large", "message_too_large", "unsupported_media_type")
#: Headers an answer of this status carries.
_HEADERS = {
    401: {"WWW-Authenticate": "Bearer"},
    429: {"Retry-After": "seconds to wait before retrying"},
    503: {"Retry-After": "seconds to wait before retrying"},
}
#: Event names as a URL path can carry them: no "/", and not "." or "..".
EVENT_NAME_PATTERN = r"^(?:[^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)$"
#: An invocation's id after ``#``, as the server makes them.
INVOCATION_PATTERN = r"^[0-9a-f]{24}$"


def openapi_document(
    runtime: Runtime, actor_states: Sequence[str], *, token: bool = True
) -> dict[str, Any]:
    """OpenAPI 3.1 for the API, with each hosted handler's argument schema; an actor's
    ``state`` is one of ``actor_states``; ``token``: whether the server requires one."""
    schemas, components = msgspec.json.schema_components(
        [
            ActorStatus,
            InvocationStatus,
            JournalEntry,
            Damage,
            TurnReset,
            WorkerInfo,
            Checkpoint,
            BudgetStatus,
        ],
        ref_template=_REF,
    )
    status, invocation, entry, damage, reset, worker, checkpoint, budget = schemas
    states = {"type": "string", "enum": list(actor_states)}
    components["ActorStatus"]["properties"]["state"] = states
    # a quarantined actor's status (`QuarantinedStatus`) also says where its journal is damaged
    components["ActorStatus"]["properties"]["damage"] = damage
    types = sorted(runtime.actor_types)
    served = _SERVED if token else tuple(k for k in _SERVED if k != "unauthorized")
    actor_errors = (*served, *_ACTOR)
    paths: dict[str, Any] = {}
    for type_name in types:
        for name, info in sorted(runtime.actor_types[type_name].__actorflow_handlers__.items()):
            (args,), extra = schema_components([info.params], ref_template=_REF)
            components.update(extra)
            doc = (info.fn.__doc__ or "").strip().splitlines()
            summary = f"Send {type_name}.{name}" + (f": {doc[0]}" if doc else "")
            paths[f"/v1/actors/{type_name}/{{key}}/messages/{name}"] = {
                "post": _operation(
                    summary,
                    [_key(), *_send_parameters()],
                    {
                        "200": _answer("The invocation, finished within ?wait=.", invocation),
                        "202": _answer("Accepted durably; still queued or running.", invocation),
                    },
                    (
                        *actor_errors,
                        *_BODY,
                        "unknown_handler",
                        "invalid_query",
                        "actor_stuck",
                        "idempotency_key_reused",
                        "invalid_budget",
                        "too_many_queued_messages",
                    ),
                    body=_body("The handler's arguments, by name.", args, required=False),
                    location=True,
                )
            }
    paths |= _query_paths(runtime, components, actor_errors)
    actor = "/v1/actors/{type}/{key}"
    address = [_type(types), _key()]
    one = [*address, _path("invocation", "The hex after '#' in the invocation id.",
                           {"type": "string", "pattern": INVOCATION_PATTERN})]  # fmt: skip
    wait = _query("wait", "Wait up to this many seconds (capped at 60) for it to end.",
                  {"type": "number", "minimum": 0})  # fmt: skip
    paths[actor] = {
        "get": _operation(
            "An actor's status.", address, {"200": _answer("Its status.", status)}, actor_errors
        )
    }
    paths[f"{actor}/journal"] = {
        "get": _operation(
            "A page of an actor's journal and inbox, as readable entries.",
            [*address, *_page_parameters()],
            {"200": _page("Its entries.", entry)},
            (*actor_errors, "invalid_query"),
        )
    }
    paths[f"{actor}/checkpoint"] = {
        "get": _operation(
            "The state an actor's last finished turn checkpointed (turn 0 and a null state "
            "before its first), the turn, the journal position it covers and its code version.",
            address,
            {"200": _answer("Its checkpoint.", checkpoint)},
            actor_errors,
        )
    }
    confirmation = {
        "type": "object",
        "properties": {"discard_turn": {"type": "integer", "minimum": 1}},
        "required": ["discard_turn"],
        "additionalProperties": False,
    }
    paths[f"{actor}/reset"] = {
        "post": _operation(
            "Reset a stuck or held actor to its last turn boundary: its unfinished turn's "
            "journal entries are discarded (and returned) and its message runs again.",
            address,
            {"200": _answer("The turn discarded, and its journal entries.", reset)},
            (*actor_errors, *_BODY[:2], "unsupported_media_type", "reset_refused"),
            body=_body(
                "The number of the unfinished turn to discard (the actor's status 'turns').",
                confirmation,
                required=True,
            ),
        )
    }
    paths[f"{actor}/invocations"] = {
        "get": _operation(
            "A page of an actor's invocations: running and queued, then ended, latest first.",
            [*address, *_page_parameters()],
            {"200": _page("Its invocations.", invocation)},
            (*actor_errors, "invalid_query"),
        )
    }
    paths[f"{actor}/invocations/{{invocation}}"] = {
        "get": _operation(
            "An invocation, waiting up to ?wait= seconds for it to end.",
            [*one, wait],
            {"200": _answer("The invocation.", invocation)},
            (*actor_errors, "unknown_invocation", "invalid_query", "actor_stuck"),
        )
    }
    offset = _query(
        "offset",
        "Resume after this event id (<attempt>:<seq>).",
        {"type": "string", "pattern": r"^[0-9]+:[0-9]+$"},
    )
    paths[f"{actor}/invocations/{{invocation}}/stream"] = {
        "get": _operation(
            "An invocation's chunk stream (ctx.stream) as server-sent events, until it ends; "
            "resume after an event with Last-Event-ID or ?offset= (see docs/streams.md).",
            [*one, offset],
            {
                "200": {
                    "description": "Events: id, event (chunk, superseded, result, failed, "
                    "end) and one line of JSON data each.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                }
            },
            (*actor_errors, "unknown_invocation", "invalid_offset"),
        )
    }
    paths[f"{actor}/invocations/{{invocation}}/budget"] = {
        "get": _operation(
            "The budget of the tree this invocation is the root of: limits, spent, held by "
            "steps in flight, remaining (see docs/budgets.md).",
            one,
            {"200": _answer("The budget's figures.", budget)},
            (*actor_errors, "no_budget"),
        )
    }
    paths[f"{actor}/invocations/{{invocation}}/cancel"] = {
        "post": _operation(
            "Cancel an invocation: it stops at its next step and its compensations run.",
            one,
            {"202": _answer("The invocation, being cancelled.", invocation)},
            (*actor_errors, "unknown_invocation", "actor_stuck"),
        )
    }
    paths[f"{actor}/invocations/{{invocation}}/retry"] = {
        "post": _operation(
            "Run a failed invocation again from its last journaled step.",
            one,
            {"202": _answer("The invocation, queued again.", invocation)},
            (*actor_errors, "unknown_invocation", "actor_stuck", "not_retryable"),
            location=True,
        )
    }
    delivered = {
        "type": "object",
        "properties": {"delivered": {"type": "string"}},
        "required": ["delivered"],
    }
    paths[f"{actor}/events/{{name}}"] = {
        "post": _operation(
            "Deliver an event, for ctx.wait_for(name).",
            [
                *address,
                _path(
                    "name", "The event's name.", {"type": "string", "pattern": EVENT_NAME_PATTERN}
                ),
            ],
            {"202": _answer("Delivered durably.", delivered)},
            (*actor_errors, *_BODY, "actor_stuck", "too_many_pending_events"),
            body=_body("The event's payload (any JSON).", {}, required=False),
        )
    }
    paths["/v1/actors"] = {
        "get": _operation(
            "A page of actors and their states, by ?type= and ?state=, in id order.",
            [
                _query("type", "Only actors of this type.", {"type": "string", "enum": types}),
                _query("state", "Only actors in this state.", states),
                *_page_parameters(),
            ],
            {"200": _page("The actors.", status)},
            (*served, "invalid_query", "unknown_actor_type", "journal_unavailable"),
        )
    }
    paths["/v1/workers"] = {
        "get": _operation(
            "The live workers sharing the journal (PostgreSQL; an empty list for SQLite): "
            "capacity, actors hosted (load), each actor type's code version, when each "
            "joined, and seconds until its membership expires without a heartbeat.",
            [],
            {"200": _answer("The workers.", _array(worker))},
            (*served, "journal_unavailable"),
        )
    }
    paths["/livez"] = {
        "get": _operation(
            "Liveness: 200 from the moment the port is bound. Needs no token, answers any Host.",
            [],
            {"200": _answer("Alive.", _status_body(["alive"]))},
            _HEALTH,
            public=True,
        )
    }
    paths["/readyz"] = {
        "get": _operation(
            "Readiness: 503 with the reason while starting, and from the start of shutdown. "
            "Needs no token, answers any Host (a probe addresses the pod IP).",
            [],
            {
                "200": _answer("Ready.", _status_body(["ready"])),
                "503": _answer(
                    "Not ready: starting (with the reason) or shutting down.",
                    _status_body(["starting", "shutting down"]),
                ),
            },
            _HEALTH,
            public=True,
        )
    }
    paths["/metrics"] = {
        "get": _operation(
            "Prometheus metrics.",
            [],
            {
                "200": {
                    "description": "Prometheus' text format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
            served,
        )
    }
    paths["/openapi.json"] = {
        "get": _operation(
            "This document.", [], {"200": _answer("OpenAPI 3.1.", {"type": "object"})}, served
        )
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "actorflow",
            "version": "1",
            "description": "Actors addressed as {type}/{key}; see docs/api.md.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    if token:
        document["security"] = [{"bearer": []}]
    return document


def _query_paths(
    runtime: Runtime, components: dict[str, Any], errors: Sequence[str]
) -> dict[str, Any]:
    """A path per hosted `@query` method, its arguments a JSON object in ``?args=``."""
    (answered,), extra = msgspec.json.schema_components([QueryAnswer], ref_template=_REF)
    components.update(extra)
    paths: dict[str, Any] = {}
    for type_name, cls in sorted(runtime.actor_types.items()):
        for name, info in sorted(cls.__actorflow_queries__.items()):
            (args,), extra = msgspec.json.schema_components([info.params], ref_template=_REF)
            components.update(extra)
            doc = (info.fn.__doc__ or "").strip().splitlines()
            summary = f"Query {type_name}.{name}" + (f": {doc[0]}" if doc else "")
            arguments = {
                "name": "args",
                "in": "query",
                "description": "The query's arguments by name, as a JSON object (URL-encoded).",
                "content": {"application/json": {"schema": args}},
            }
            paths[f"/v1/actors/{type_name}/{{key}}/query/{name}"] = {
                "get": _operation(
                    summary,
                    [_key(), arguments],
                    {"200": _answer("Its result, and which state it read.", answered)},
                    (*errors, "malformed_json", *QUERY_ERRORS),
                )
            }
    return paths


def _operation(
    summary: str,
    parameters: list[dict[str, Any]],
    answers: dict[str, Any],
    errors: Sequence[str],
    *,
    body: dict[str, Any] | None = None,
    location: bool = False,
    public: bool = False,
) -> dict[str, Any]:
    """An operation answering ``answers`` or one of the ``errors`` (by type)."""
    responses = dict(answers)
    if location:
        for code in answers:
            responses[code]["headers"] = _headers({"Location": "The invocation's URL."})
    responses.update(_errors(errors))
    operation: dict[str, Any] = {"summary": summary, "parameters": parameters}
    if body is not None:
        operation["requestBody"] = body
    operation["responses"] = dict(sorted(responses.items()))
    if public:
        operation["security"] = []
    return operation


def _errors(kinds: Sequence[str]) -> dict[str, Any]:
    """One response per status among ``kinds``, its ``type`` one of them."""
    by_status: dict[int, list[str]] = {}
    for kind in dict.fromkeys(kinds):
        by_status.setdefault(ERRORS[kind][0], []).append(kind)
    responses = {}
    for code, found in sorted(by_status.items()):
        description = "; ".join(f"{kind}: {ERRORS[kind][1]}" for kind in found)
        response = _answer(description, _error_body(found))
        if code in _HEADERS:
            response["headers"] = _headers(_HEADERS[code])
        responses[str(code)] = response
    return responses


def _error_body(kinds: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "enum": kinds},
                    "message": {"type": "string"},
                },
                "required": ["type", "message"],
            }
        },
        "required": ["error"],
    }


def _headers(described: dict[str, str]) -> dict[str, Any]:
    return {
        name: {"description": text, "required": True, "schema": {"type": "string"}}
        for name, text in described.items()
    }


def _status_body(values: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"status": {"type": "string", "enum": values}, "reason": {"type": "string"}},
        "required": ["status"],
    }


def _answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(description: str, schema: dict[str, Any], *, required: bool) -> dict[str, Any]:
    return {"required": required, **_answer(description, schema)}


def _array(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def _page(description: str, item: dict[str, Any]) -> dict[str, Any]:
    """A page of a listing: a JSON array, and the next page's URL in a Link header."""
    link = '<URL>; rel="next": the next page (same query, and a cursor); none on the last.'
    headers = {"Link": {"description": link, "schema": {"type": "string"}}}
    return {**_answer(description, _array(item)), "headers": headers}


def _page_parameters() -> list[dict[str, Any]]:
    return [
        _query(
            "limit",
            "Items per page: 100 by default; more than 1000 is taken as 1000.",
            {"type": "integer", "minimum": 1},
        ),
        _query(
            "cursor",
            "Where the page starts: the cursor in the previous page's Link header, unchanged.",
            {"type": "string"},
        ),
    ]


def _path(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema}


def _key() -> dict[str, Any]:
    return _path(
        "key",
        "The actor's key: 1 to 200 of A-Z a-z 0-9 . _ ~ : @ + = -, not '.' or '..'.",
        {"type": "string", "pattern": f"^(?:{KEY_PATTERN.pattern})$"},
    )


def _type(types: list[str]) -> dict[str, Any]:
    return _path("type", "A hosted actor type.", {"type": "string", "enum": types})


def _send_parameters() -> list[dict[str, Any]]:
    return [
        _query(
            "wait",
            "Wait up to this many seconds (capped at 60) for the result; a plain decimal.",
            {"type": "number", "minimum": 0},
        ),
        _query(
            "deadline",
            "Cancel (and compensate) the turn after this many seconds; a plain decimal.",
            {"type": "number", "exclusiveMinimum": 0},
        ),
        {
            "name": "Idempotency-Key",
            "in": "header",
            "description": "Retries with the same key return the same invocation.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        {
            "name": "Actorflow-Budget",
            "in": "header",
            "description": "The invocation tree's budget, e.g. 'tokens=1000; cost=USD 2.50; "
            "llm_calls=10; tool_calls=20; wall_time=600' (docs/budgets.md).",
            "schema": {"type": "string", "minLength": 1, "maxLength": 1000},
        },
    ]
