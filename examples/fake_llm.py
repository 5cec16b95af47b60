"""A deterministic stand-in for an LLM and a web search tool, so the examples run offline.

Each call takes a little while (so you can kill the process mid-run) and appends a line to
``calls.log`` beside the journal, which is how you can see that no completed step ran twice.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

#: Seconds each fake call takes; `ACTORFLOW_EXAMPLE_DELAY=0` makes the examples instant.
DELAY = float(os.environ.get("ACTORFLOW_EXAMPLE_DELAY", "0.4"))
CALL_LOG = Path(os.environ.get("ACTORFLOW_EXAMPLE_LOG", "calls.log"))


def _record(kind: str, text: str) -> None:
    with CALL_LOG.open("a") as log:
        log.write(f"{kind}\t{text.replace(chr(10), ' | ')}\n")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def complete(prompt: str) -> str:
    """The fake LLM: the same prompt always gets the same answer."""
    time.sleep(DELAY)
    _record("llm", prompt[:60])
    if prompt.startswith("plan:"):
        topic = prompt.removeprefix("plan:").strip()
        return "\n".join(f"{topic} {aspect}" for aspect in ("history", "economics", "risks"))
    return f"summary {_digest(prompt)}: " + " / ".join(
        line.split(":", 1)[0] for line in prompt.splitlines()[1:]
    )


def search(query: str) -> list[str]:
    """The fake web search: three deterministic results per query."""
    time.sleep(DELAY)
    _record("search", query)
    return [f"{query}: source {n} ({_digest(query + str(n))})" for n in range(1, 4)]
