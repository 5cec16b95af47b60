"""A fake OpenAI-compatible server on 127.0.0.1, so the LLM examples run offline.

It answers ``POST /v1/chat/completions`` in the real Chat Completions wire format, plain
JSON or, with ``"stream": true``, server-sent events (``chat.completion.chunk`` objects,
then ``data: [DONE]``), tool calls included. Its "model" is deterministic: the same
conversation always gets the same answer. While a tool offered in the request has not been
called yet in the conversation, it calls the next one (one call per answer), filling
each required argument from the user's last message; once every tool has answered, it
replies in text, quoting what each tool returned.

Every request it answers is appended to a log file, one line each
(``n <TAB> digest of the conversation <TAB> what it answered``), and ``GET /calls`` returns
them as JSON, so a test can check that no completed model call was made twice.

A request with an ``Idempotency-Key`` header is applied once per key, as a real provider
that honours keys would: the first answer's usage is counted, and a request made again
with the same key (a step re-executed after a crash) gets the same answer, counted as a
replay, not as usage. ``GET /usage`` returns ``{"keys", "total_tokens", "replayed",
"conflicts", "by_key"}`` over the keyed requests (``conflicts``: keys that came again with
another conversation; ``by_key``: the tokens counted for each key). Run it::

    python -m examples.fake_openai --port 8788 --log openai-calls.log

``--delay S`` makes each answer take S seconds (so you can kill an agent mid-call),
``--chunk-delay S`` waits S seconds between the chunks of a streamed answer (so you can
watch it stream), ``--hold-once`` stops the first streamed answer in text after its first
word for 20 seconds (as a model whose connection hangs: kill the agent mid-stream; the
request made again gets the whole answer), and ``--exit-after S`` stops the server after
S seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

#: The ``created`` time of every answer: fixed, so that answers are deterministic.
CREATED = 1_700_000_000


def digest(conversation: Any) -> str:
    """A short digest of a request's messages and tools (canonical JSON)."""
    text = json.dumps(conversation, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _text(content: Any) -> str:
    """A message's text, whether its content is a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _arguments(schema: dict[str, Any], prompt: str) -> dict[str, Any]:
    """Arguments for a tool: each required property filled from the user's prompt."""
    properties = schema.get("properties", {})
    args: dict[str, Any] = {}
    for name in schema.get("required", list(properties)):
        kind = properties.get(name, {}).get("type", "string")
        if kind == "integer":
            args[name] = len(prompt.split())
        elif kind == "number":
            args[name] = float(len(prompt.split()))
        elif kind == "boolean":
            args[name] = True
        else:
            args[name] = prompt
    return args


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """The assistant message (and finish reason) for a chat request: the fake model."""
    messages: list[dict[str, Any]] = request.get("messages", [])
    prompt = next((_text(m.get("content")) for m in reversed(messages) if m["role"] == "user"), "")
    called = [
        call["function"]["name"]
        for message in messages
        if message["role"] == "assistant"
        for call in message.get("tool_calls") or []
    ]
    key = digest([messages, request.get("tools")])
    for tool in request.get("tools") or []:
        function = tool["function"]
        if function["name"] not in called:
            call = {
                "id": f"call_{key[:8]}_{len(called) + 1}",
                "type": "function",
                "function": {
                    "name": function["name"],
                    "arguments": json.dumps(_arguments(function.get("parameters", {}), prompt)),
                },
            }
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return {"message": message, "finish_reason": "tool_calls"}
    results = [
        f"{name} said {_text(m.get('content'))}"
        for name, m in zip(called, (m for m in messages if m["role"] == "tool"), strict=False)
    ]
    text = f"Answer to {prompt!r}: " + ("; ".join(results) if results else "nothing to add") + "."
    return {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}


def _usage(request: dict[str, Any], reply: dict[str, Any]) -> dict[str, int]:
    prompt = len(json.dumps(request.get("messages", []))) // 4
    completion = len(json.dumps(reply["message"])) // 4
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion(request: dict[str, Any], reply: dict[str, Any], key: str) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    return {
        "id": f"chatcmpl-{key}",
        "object": "chat.completion",
        "created": CREATED,
        "model": request.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": reply["message"],
                "finish_reason": reply["finish_reason"],
                "logprobs": None,
            }
        ],
        "usage": _usage(request, reply),
    }


def chunks(request: dict[str, Any], reply: dict[str, Any], key: str) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed answer."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{key}",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": request.get("model", "fake"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    message = reply["message"]
    yield chunk({"role": "assistant", "content": ""})
    for index, call in enumerate(message.get("tool_calls") or []):
        head = {"index": index, "id": call["id"], "type": "function"}
        yield chunk({"tool_calls": [{**head, "function": {"name": call["function"]["name"]}}]})
        arguments = call["function"]["arguments"]
        for start in range(0, len(arguments), 8):
            piece = {"arguments": arguments[start : start + 8]}
            yield chunk({"tool_calls": [{"index": index, "function": piece}]})
    words = (message.get("content") or "").split(" ")
    for n, word in enumerate(words):
        if word or n:
            yield chunk({"content": word if n == 0 else f" {word}"})
    yield chunk({}, reply["finish_reason"])
    if (request.get("stream_options") or {}).get("include_usage"):
        yield {**chunk({}), "choices": [], "usage": _usage(request, reply)}


class FakeOpenAI(ThreadingHTTPServer):
    """The server: its answers, the log of requests and the delay per answer."""

    daemon_threads = True

    def __init__(self, port: int, log: Path, delay: float = 0.0, chunk_delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.log = log
        self.delay = delay
        self.chunk_delay = chunk_delay
        #: When set, the next streamed answer in text stops after its first word until the
        #: event is set (by a test in the same process), or for 20 seconds (``--hold-once``).
        self.hold: threading.Event | None = None
        self.calls: list[dict[str, Any]] = []
        #: The total tokens of each idempotency key's answer, and how many keyed requests
        #: came again (answered without counting).
        self.usage: dict[str, int] = {}
        self.replayed = 0
        #: Keyed requests that came again with another conversation (a provider refuses
        #: those; here they are counted, to show a key reused for another request).
        self.conflicts: list[str] = []
        self._requests: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The base URL to give an OpenAI client (``.../v1``)."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def applied_once(self, key: str | None, tokens: int, request: str) -> None:
        """Count a keyed request's usage the first time its key is seen (``request``:
        a digest of what it asks)."""
        if key is None:
            return
        with self._lock:
            if key in self.usage:
                self.replayed += 1
                if self._requests[key] != request:
                    self.conflicts.append(key)
            else:
                self.usage[key] = tokens
                self._requests[key] = request

    def record(self, key: str, reply: dict[str, Any], stream: bool) -> None:
        """Count an answered request: in memory (``GET /calls``) and in the log file."""
        message = reply["message"]
        calls = message.get("tool_calls") or []
        what = ",".join(c["function"]["name"] for c in calls) if calls else "text"
        with self._lock:
            self.calls.append({"n": len(self.calls) + 1, "digest": key, "answer": what})
            with self.log.open("a") as log:
                log.write(f"{len(self.calls)}\t{key}\t{what}{' (stream)' if stream else ''}\n")


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/calls":
            self._send_json(200, self.server.calls)
        elif self.path == "/usage":
            with self.server._lock:
                usage = dict(self.server.usage)
                body = {
                    "keys": len(usage),
                    "total_tokens": sum(usage.values()),
                    "replayed": self.server.replayed,
                    "conflicts": list(self.server.conflicts),
                    "by_key": usage,
                }
            self._send_json(200, body)
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if len(body) < length:  # the client went away mid-request (killed): nothing asked
            self.close_connection = True
            return
        try:
            request = json.loads(body or b"{}")
        except json.JSONDecodeError as exc:
            self._send_json(400, {"error": {"message": f"bad JSON: {exc}"}})
            return
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        reply = answer(request)
        key = digest([request.get("messages"), request.get("tools")])
        stream = bool(request.get("stream"))
        time.sleep(self.server.delay)
        applied = _usage(request, reply)["total_tokens"]
        self.server.applied_once(self.headers.get("Idempotency-Key"), applied, key)
        if not stream:
            self._send_json(200, completion(request, reply, key))
            self.server.record(key, reply, stream)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for n, item in enumerate(chunks(request, reply, key)):
            if n:
                time.sleep(self.server.chunk_delay)
            self.wfile.write(f"data: {json.dumps(item)}\n\n".encode())
            self.wfile.flush()
            if item["choices"] and item["choices"][0]["delta"].get("content"):
                hold, self.server.hold = self.server.hold, None
                if hold is not None:
                    hold.wait(20)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.server.record(key, reply, stream)


@contextlib.contextmanager
def running(log: Path, delay: float = 0.0) -> Iterator[FakeOpenAI]:
    """A fake server on a free loopback port, in a thread, for as long as the block runs."""
    server = FakeOpenAI(0, log, delay)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8788, help="0: any free port")
    parser.add_argument("--log", type=Path, default=Path("openai-calls.log"))
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per answer")
    parser.add_argument(
        "--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks"
    )
    parser.add_argument(
        "--hold-once", action="store_true", help="hang the first streamed answer in text"
    )
    parser.add_argument("--exit-after", type=float, default=None, help="stop after S seconds")
    args = parser.parse_args()
    server = FakeOpenAI(args.port, args.log, args.delay, args.chunk_delay)
    if args.hold_once:
        server.hold = threading.Event()
    if args.exit_after is not None:
        threading.Timer(args.exit_after, server.shutdown).start()
    print(f"fake OpenAI server on {server.url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
