"""The tools of the two LLM agent examples, with a ledger of every side effect.

``get_weather`` only reads. ``book_table`` acts on the world: it books a table in a SQLite
ledger (``ACTORFLOW_TOOL_LEDGER``, default ``tools.db`` beside the journal) and honours
idempotency keys as a real booking API would: a second call with the same key books
nothing more. Every call is counted as an attempt as it starts, so ``python -m examples.llm_tools``
shows each booking with how often it was attempted versus applied. Each call takes
``ACTORFLOW_EXAMPLE_DELAY`` seconds (default 0.3), long enough to kill an agent mid-call.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path

LEDGER = Path(os.environ.get("ACTORFLOW_TOOL_LEDGER", "tools.db"))
DELAY = float(os.environ.get("ACTORFLOW_EXAMPLE_DELAY", "0.3"))


def _ledger() -> sqlite3.Connection:
    conn = sqlite3.connect(LEDGER, isolation_level=None, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS attempts (n INTEGER PRIMARY KEY, tool TEXT, key TEXT)")
    conn.execute("CREATE TABLE IF NOT EXISTS bookings (key TEXT PRIMARY KEY, detail TEXT)")
    return conn


def _attempt(tool: str, key: str) -> None:
    with _ledger() as conn:
        conn.execute("INSERT INTO attempts (tool, key) VALUES (?, ?)", (tool, key))


def weather_in(city: str) -> str:
    """What `get_weather` says about ``city`` (deterministic, offline), without calling it."""
    kinds = ("sunny", "cloudy", "rainy", "windy")
    return kinds[int(hashlib.sha256(city.encode()).hexdigest(), 16) % len(kinds)]


def get_weather(city: str) -> str:
    """The weather in ``city``."""
    _attempt("get_weather", city)
    time.sleep(DELAY)
    return weather_in(city)


def book_table(city: str, idempotency_key: str) -> str:
    """Book a table for dinner in ``city``: applied once per idempotency key."""
    _attempt("book_table", idempotency_key)
    time.sleep(DELAY)
    with _ledger() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO bookings VALUES (?, ?)", (idempotency_key, f"table in {city}")
        )
    return f"table booked ({hashlib.sha256(idempotency_key.encode()).hexdigest()[:8]})"


def attempts() -> list[tuple[str, str]]:
    """Every tool call made so far, in order: (tool, key or argument)."""
    with _ledger() as conn:
        return conn.execute("SELECT tool, key FROM attempts ORDER BY n").fetchall()


def bookings() -> list[tuple[str, str]]:
    """Every booking applied: (idempotency key, what)."""
    with _ledger() as conn:
        return conn.execute("SELECT key, detail FROM bookings ORDER BY rowid").fetchall()


if __name__ == "__main__":
    tried = attempts()
    for key, detail in bookings():
        count = sum(1 for tool, k in tried if tool == "book_table" and k == key)
        print(f"{detail:30} applied once, attempted {count}x  [{key}]")
    print(f"{sum(1 for tool, _ in tried if tool == 'get_weather')} weather lookups")
