"""`actorflow watch ID`: print an invocation's stream as it comes (see docs/streams.md)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO

from actorflow._stream import StreamEvent


def print_events(events: Iterable[StreamEvent], out: TextIO, err: TextIO, as_json: bool) -> int:
    """Print text chunks to ``out`` as they arrive (other chunks as JSON lines), and
    notices (an attempt superseded or failed, the end) to ``err``; return the exit
    status: 0 when the invocation completed, 1 otherwise."""
    ended: StreamEvent | None = None
    line_open = False
    for event in events:
        if as_json:
            out.write(json.dumps({"id": event.id, "event": event.kind, "data": event.data}) + "\n")
            out.flush()
        elif event.kind == "chunk":
            text = event.data if isinstance(event.data, str) else json.dumps(event.data) + "\n"
            if line_open and not isinstance(event.data, str):
                text = "\n" + text  # a JSON line of its own, after text (a tool call, say)
            out.write(text)
            out.flush()
            line_open = not text.endswith("\n")
        elif event.kind in ("superseded", "failed"):
            if line_open:
                out.write("\n")
                out.flush()
                line_open = False
            err.write(_notice(event) + "\n")
            err.flush()
        if event.kind == "end":
            ended = event
    if line_open:
        out.write("\n")
    if ended is None:
        return 1
    data = ended.data
    if data.get("state") == "completed":
        return 0
    error = data.get("error") or {}
    detail = f": {error.get('type')}: {error.get('message')}" if error else ""
    if not as_json:
        err.write(f"[invocation {data.get('state')}{detail}]\n")
    return 1


def _notice(event: StreamEvent) -> str:
    data = event.data
    if event.kind == "superseded":
        return (
            f"[attempt {data['attempt']} of {data['step']} superseded by attempt "
            f"{data['by']}: discard its output above]"
        )
    error = data["error"]
    return (
        f"[attempt {data['attempt']} of {data['step']} failed: {error['type']}: {error['message']}]"
    )
