"""The serve suite's memory and reads scenarios (run by `benchmarks.serve`).

- ``memory``: a fresh ``actorflow serve benchmarks.serve_app`` (``--idle-timeout`` longer
  than the sending takes, so every actor is in memory at once) gets one message each for
  `ACTORS` distinct `Ping` actors from the load generator. Figures, all RSS read from
  ``/proc/<pid>/status`` of the server process (``VmRSS``; ``VmHWM`` for the peak): at
  start (after `WARM_UP` actors ran a turn), once every turn ran (``active``, with the
  count of actors in memory from /metrics), once every actor was passivated and the RSS
  stopped falling (``passivated``), and the same again after as many other actors ran
  and were passivated (``again``: memory kept is reused, or it grows). Per actor:
  (active - start) / actors in memory, and (passivated - start) / actors. Run twice:
  with CPython's default allocator, and with ``PYTHONMALLOC=malloc`` (every allocation
  from the C heap, which the server trims), to show how much of what stays is the
  default allocator's fragmentation.
- ``reads``: on the first ``memory`` server once everything is passivated, plus one
  `Echo` actor with `HISTORY` invocations whose messages carry `PAYLOAD` bytes, on a
  journal kept whole (``--snapshot-every 0``). Lookups of its oldest invocation, its newest
  and an unknown id (each the median of `LOOKUPS` requests) as ratios to the newest: flat
  is 1.0 (an index read each), a scan grows with the history. Paging through every actor
  (1000 a page) and through the history actor's whole journal, with the server's RSS
  growth while paging the journal against the bytes it sent.

Every request goes to 127.0.0.1 with a timeout; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from benchmarks._report import Column, Progress, Result, fraction, one_decimal, seconds, whole

#: Distinct actors of ``memory``: (full run, --quick run).
ACTORS = (20_000, 3_000)
#: The server's --idle-timeout in ``memory``: (full, quick), longer than sending takes.
IDLE = (45.0, 10.0)
#: Actors sent a message before the start is measured (the code paths warmed up).
WARM_UP = 100
#: Invocations of the one actor ``reads`` looks up: (full, quick).
HISTORY = (5_000, 1_000)
#: Bytes of each history message's payload (so the journal is tens of MB).
PAYLOAD = 4_000
#: Requests per lookup kind, of which the median is reported.
LOOKUPS = 200
#: How long the RSS must stay within `RSS_STILL` to count as settled, and the longest wait.
RSS_SETTLE = 6.0
RSS_STILL = 1.0  # MiB
RSS_WAIT = 45.0
MIB = 1024 * 1024


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """The process's resident set (or another ``/proc/<pid>/status`` size), in MiB."""
    text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"/proc/{pid}/status has no {field}")
    return int(found.group(1)) / 1024


def settled_rss(pid: int) -> float:
    """The RSS once it has stopped falling for `RSS_SETTLE` seconds (at most `RSS_WAIT`)."""
    give_up = time.monotonic() + RSS_WAIT
    low, still_since = rss_mib(pid), time.monotonic()
    while time.monotonic() < give_up and time.monotonic() - still_since < RSS_SETTLE:
        time.sleep(0.5)
        now = rss_mib(pid)
        if now < low - RSS_STILL:
            low, still_since = now, time.monotonic()
    return rss_mib(pid)


@contextlib.contextmanager
def memory_server(
    tmp: Path, label: str, idle: float, environment: dict[str, str]
) -> Iterator[object]:
    """``actorflow serve`` for ``memory`` (and ``reads``), on a journal kept whole."""
    from benchmarks import serve

    port = serve.free_port()
    command = [
        *serve.server_command(tmp / "j.db", port),
        f"--idle-timeout={idle:g}",
        "--snapshot-every=0",
        f"--max-queued-messages={2 * HISTORY[0]}",  # the history actor queues all at once
    ]
    with serve.served(label, command, port, tmp / f"{label}.log", env=environment) as server:
        yield server


def memory_run(
    quick: bool, progress: Progress, malloc: bool, then: Callable[[object], None]
) -> Result:
    """One ``memory`` run; ``then(server)`` runs on the server once it is passivated."""
    from benchmarks import serve

    actors = ACTORS[quick]
    allocator = "malloc" if malloc else "pymalloc"
    environment = {"PYTHONMALLOC": "malloc"} if malloc else {}
    with (
        tempfile.TemporaryDirectory(prefix="actorflow-bench-") as tmp,
        memory_server(Path(tmp), "memory", IDLE[quick], environment) as server,
    ):
        assert isinstance(server, serve.Served)
        pid = server.proc.pid
        wave(server, "warm", WARM_UP, progress, allocator)
        start = rss_mib(pid)
        in_memory = wave(server, "a", actors, progress, allocator)
        active = rss_mib(pid)
        passivated = passivate(server, progress, allocator)
        peak = rss_mib(pid, "VmHWM")
        wave(server, "b", actors, progress, allocator)
        again = passivate(server, progress, allocator)
        if not malloc:
            then(server)
        serve.stop_checked(server, running=0)
    return {
        "scenario": "memory",
        "allocator": allocator,
        "actors": actors,
        "in_memory": in_memory,
        "rss_start_mib": round(start, 1),
        "rss_active_mib": round(active, 1),
        "rss_peak_mib": round(peak, 1),
        "rss_passivated_mib": round(passivated, 1),
        "rss_again_mib": round(again, 1),
        "kib_per_active": round((active - start) * 1024 / max(in_memory, 1), 2),
        "kib_per_passivated": round((passivated - start) * 1024 / actors, 2),
        "returned": round((active - passivated) / max(active - start, 1e-9), 3),
    }


def wave(server: object, prefix: str, actors: int, progress: Progress, allocator: str) -> int:
    """One message to each of ``actors`` new `Ping` actors; return how many actors are in
    memory once every turn ran."""
    from benchmarks import serve

    assert isinstance(server, serve.Served)
    with httpx.Client(base_url=server.url, timeout=serve.REQUEST_TIMEOUT) as client:
        before = serve.metric(client, "actorflow_turns_total")
    sent = serve.load(
        server, lambda i: f"/v1/actors/Ping/{prefix}-{i:05d}/messages/ping", serve.ping_body,
        actors, lambda n: progress.step(f"memory ({allocator}): {prefix} {n:,}/{actors:,}"),
    )  # fmt: skip
    if sent.errors:
        raise server.fail(f"{sent.errors:,} sends failed: {sent.describe_errors()}")
    serve.settle(
        server, f"running {actors:,} turns",
        lambda c: serve.metric(c, "actorflow_turns_total") >= before + sent.accepted,
    )  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=serve.REQUEST_TIMEOUT) as client:
        return int(serve.metric(client, "actorflow_actors_active"))


def passivate(server: object, progress: Progress, allocator: str) -> float:
    """Wait until every actor is passivated; the RSS once it stopped falling."""
    from benchmarks import serve

    assert isinstance(server, serve.Served)
    progress.step(f"memory ({allocator}): waiting for passivation")
    serve.settle(
        server, "passivating every actor",
        lambda c: serve.metric(c, "actorflow_actors_active") == 0,
    )  # fmt: skip
    return settled_rss(server.proc.pid)


def timed(client: httpx.Client, path: str, times: int, status: int = 200) -> float:
    """The median seconds of ``times`` GETs of ``path`` (each must answer ``status``)."""
    spent = []
    for _ in range(times):
        began = time.perf_counter()
        answer = client.get(path)
        spent.append(time.perf_counter() - began)
        if answer.status_code != status:
            raise RuntimeError(
                f"GET {path}: {answer.status_code}, expected {status}: {answer.text[:200]}"
            )
    return statistics.median(spent)


def pages(client: httpx.Client, path: str, on_page: Callable[[int], None]) -> tuple[int, int]:
    """Follow ``path``'s pages to the end; the number of pages and of body bytes."""
    from benchmarks import serve

    count = size = 0
    for answer in serve.every_page(client, path):
        count, size = count + 1, size + len(answer.content)
        on_page(count)
    return count, size


def reads_run(server: object, quick: bool, progress: Progress, results: list[Result]) -> None:
    """The ``reads`` figures, on a passivated ``memory`` server (appended to ``results``)."""
    from benchmarks import serve

    assert isinstance(server, serve.Served)
    history = HISTORY[quick]
    text = "x" * PAYLOAD
    body = b'{"text":"%s"}' % text.encode()
    progress.step(f"reads: {history:,} invocations of one actor")
    with httpx.Client(base_url=server.url, timeout=serve.REQUEST_TIMEOUT) as client:
        path = "/v1/actors/Echo/history/messages/echo"
        first = accepted(client, path, text)
        sent = serve.load(server, lambda i: path, lambda i: body, history - 2, lambda n: None)
        if sent.errors:
            raise server.fail(f"{sent.errors:,} sends failed: {sent.describe_errors()}")
        last = accepted(client, path, text)
        serve.settle(
            server, "the history actor's turns and passivation",
            lambda c: c.get(serve_path(last)).json()["state"] == "completed"
            and serve.metric(c, "actorflow_actors_active") == 0,
        )  # fmt: skip
        progress.step("reads: lookups")
        newest = timed(client, serve_path(last), LOOKUPS)
        oldest = timed(client, serve_path(first), LOOKUPS)
        unknown_path = serve_path("Echo/history#" + "0" * 24)
        unknown = timed(client, unknown_path, LOOKUPS, status=404)
        results.append(
            {
                "scenario": "reads",
                "measure": "invocation lookup",
                "history": history,
                "newest_ms": round(newest * 1e3, 3),
                "oldest_ms": round(oldest * 1e3, 3),
                "unknown_ms": round(unknown * 1e3, 3),
                "oldest_ratio": round(oldest / newest, 3),
                "unknown_ratio": round(unknown / newest, 3),
            }
        )
        progress.step("reads: paging through every actor")
        began = time.perf_counter()
        count, size = pages(client, "/v1/actors?limit=1000", lambda n: None)
        listed = time.perf_counter() - began
        actors = ACTORS[quick] + 1
        results.append(
            {
                "scenario": "reads",
                "measure": "list actors",
                "items": actors,
                "pages": count,
                "seconds": round(listed, 3),
                "us_per_item": round(listed / actors * 1e6, 1),
            }
        )
        progress.step("reads: paging through a large journal")
        before = rss_mib(server.proc.pid)
        peak = [before]

        def sample(_: int) -> None:
            peak.append(rss_mib(server.proc.pid))

        began = time.perf_counter()
        count, size = pages(client, "/v1/actors/Echo/history/journal?limit=1000", sample)
        results.append(
            {
                "scenario": "reads",
                "measure": "journal pages",
                "pages": count,
                "body_mib": round(size / MIB, 1),
                "seconds": round(time.perf_counter() - began, 3),
                "rss_growth_mib": round(max(peak) - before, 1),
            }
        )


def accepted(client: httpx.Client, path: str, text: str) -> str:
    """Send ``text`` to ``path``; the invocation id (the send must be accepted)."""
    answer = client.post(path, json={"text": text})
    if answer.status_code != 202:
        raise RuntimeError(f"POST {path}: {answer.status_code} {answer.text[:200]}")
    invocation: str = answer.json()["invocation"]
    return invocation


def serve_path(invocation: str) -> str:
    """The URL of an invocation."""
    actor, _, tail = invocation.rpartition("#")
    return f"/v1/actors/{actor}/invocations/{tail}"


def memory_scenarios(quick: bool, progress: Progress) -> list[Result]:
    """``memory`` with each allocator, and ``reads`` on the first server."""
    progress.scenario(f"memory and reads, {ACTORS[quick]:,} actors")
    reads: list[Result] = []

    def then(server: object) -> None:
        reads_run(server, quick, progress, reads)

    results = [memory_run(quick, progress, malloc, then) for malloc in (False, True)]
    return results + reads


MEMORY_COLUMNS = [
    Column("allocator", "allocator", numeric=False),
    Column("actors", "actors", whole),
    Column("in memory", "in_memory", whole),
    Column("start MiB", "rss_start_mib", one_decimal),
    Column("active MiB", "rss_active_mib", one_decimal),
    Column("peak MiB", "rss_peak_mib", one_decimal),
    Column("passivated MiB", "rss_passivated_mib", one_decimal),
    Column("again MiB", "rss_again_mib", one_decimal),
    Column("KiB/active", "kib_per_active", fraction),
    Column("KiB/passivated", "kib_per_passivated", fraction),
    Column("returned", "returned", fraction),
]

READS_COLUMNS = [
    Column("measure", "measure", numeric=False),
    Column("history", "history", whole),
    Column("newest ms", "newest_ms", seconds),
    Column("oldest ms", "oldest_ms", seconds),
    Column("unknown ms", "unknown_ms", seconds),
    Column("oldest/newest", "oldest_ratio", fraction),
    Column("unknown/newest", "unknown_ratio", fraction),
    Column("items", "items", whole),
    Column("pages", "pages", whole),
    Column("body MiB", "body_mib", one_decimal),
    Column("seconds", "seconds", seconds),
    Column("us/item", "us_per_item", one_decimal),
    Column("RSS growth MiB", "rss_growth_mib", one_decimal),
]
