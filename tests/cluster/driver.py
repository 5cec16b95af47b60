"""The seeded driver: sends messages to any live worker, as clients behind a load balancer do.

`Driver` runs on a thread of its own (its own event loop). Its senders send each planned
message at a steady rate, each to a worker drawn by a seeded random generator from the
fleet's live workers, under the message's own Idempotency-Key. A send that fails is retried
against another worker with the same key: refused connections (nothing was sent), 503
(shutting down, or not ready), other 5xx (the database was restarting) and cut or timed-out
requests (the worker may have committed the message: the same key must then answer the same
invocation). Its watchers long-poll accepted invocations through random workers meanwhile,
as waiting callers would. `finish` then reads every acknowledged invocation's end through
any worker with ``?wait=``, and sends each message once more with its key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

TERMINAL = ("completed", "failed", "cancelled")
#: Seconds a send may take before it counts as cut (and is retried elsewhere): short, so
#: that a send to a stopped (SIGSTOP) worker moves on quickly.
SEND_TIMEOUT = 1.0
#: Pause before a failed send or read is retried.
RETRY_PAUSE = 0.05
#: Longest one long-poll waits while finishing.
WAIT_CHUNK = 5.0


@dataclasses.dataclass(frozen=True)
class Message:
    """A message to send: to ``actor`` (``Type/key``), handler, arguments, and its key."""

    actor: str
    handler: str
    args: dict[str, Any]
    key: str

    @property
    def path(self) -> str:
        return f"/v1/actors/{self.actor}/messages/{self.handler}"


def invocation_path(invocation: str) -> str:
    """Where the invocation ``Type/key#hex`` is shown."""
    actor, _, tail = invocation.rpartition("#")
    return f"/v1/actors/{actor}/invocations/{tail}"


class Driver:
    """Sends `plan` at ``rate`` messages a second to the workers ``live_urls()`` names."""

    def __init__(
        self,
        live_urls: Callable[[], list[str]],
        plan: list[Message],
        *,
        rate: float,
        seed: int,
        senders: int = 8,
        watchers: int = 4,
    ) -> None:
        self.live_urls = live_urls
        self.plan = plan
        self.rate = rate
        self.random = random.Random(seed)
        self.senders = senders
        self.watchers = watchers
        #: Message key -> the invocation its first acknowledgement named.
        self.accepted: dict[str, str] = {}
        #: How sends went: HTTP statuses and transport errors, counted.
        self.outcomes: Counter[str] = Counter()
        #: Keys whose send was cut after it may have reached a worker.
        self.ambiguous: set[str] = set()
        self.polls: Counter[str] = Counter()
        self.problems: list[str] = []
        self.error: BaseException | None = None
        self.sent = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._main, name="cluster-driver", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def wait_sent(self, timeout: float) -> None:
        """Wait until every message was acknowledged (or the thread failed)."""
        if not self.sent.wait(timeout) and self.error is None:
            pytest.fail(
                f"the driver did not get every message acknowledged within {timeout} s "
                f"({len(self.accepted)} of {len(self.plan)})",
                pytrace=False,
            )

    def close(self) -> None:
        """Stop the thread; re-raise what went wrong in it."""
        self.stop.set()
        self.thread.join(SEND_TIMEOUT + 10.0)
        if self.thread.is_alive():
            pytest.fail("the driver thread did not stop", pytrace=False)
        if self.error is not None:
            raise self.error

    def pick(self, avoid: str | None = None) -> str | None:
        """A live worker's URL, drawn at random (another than ``avoid`` if there is one)."""
        urls = self.live_urls()
        if avoid in urls and len(urls) > 1:
            urls.remove(avoid)
        return self.random.choice(urls) if urls else None

    def _main(self) -> None:
        try:
            asyncio.run(self._load())
        except BaseException as exc:  # handed to the test thread by close()
            self.error = exc
        finally:
            self.sent.set()

    async def _load(self) -> None:
        limits = httpx.Limits(max_connections=self.senders + self.watchers + 4)
        async with httpx.AsyncClient(timeout=SEND_TIMEOUT, limits=limits) as client:
            pending = iter(enumerate(self.plan))
            began = time.monotonic()

            async def sender() -> None:
                for index, message in pending:
                    wait = began + index / self.rate - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    await self._send(client, message)

            async with asyncio.TaskGroup() as group:
                for _ in range(self.watchers):
                    group.create_task(self._watch(client))
                async with asyncio.TaskGroup() as senders:
                    for _ in range(self.senders):
                        senders.create_task(sender())
                self.sent.set()
                await asyncio.to_thread(self.stop.wait)

    async def _send(self, client: httpx.AsyncClient, message: Message) -> None:
        headers = {"Idempotency-Key": message.key}
        url: str | None = None
        while not self.stop.is_set():
            url = self.pick(avoid=url)
            if url is None:
                await asyncio.sleep(RETRY_PAUSE)
                continue
            try:
                response = await client.post(url + message.path, json=message.args, headers=headers)
            except httpx.ConnectError:
                self.outcomes["refused connection"] += 1  # nothing was sent
                await asyncio.sleep(RETRY_PAUSE)
                continue
            except httpx.TransportError as exc:
                self.outcomes[type(exc).__name__] += 1
                self.ambiguous.add(message.key)  # the worker may have accepted it
                await asyncio.sleep(RETRY_PAUSE)
                continue
            self.outcomes[str(response.status_code)] += 1
            if response.status_code >= 500:
                await asyncio.sleep(RETRY_PAUSE)
                continue
            if response.status_code not in (200, 202):
                self.problems.append(f"{message.key}: {response.status_code} {response.text}")
                return
            body = response.json()
            if not isinstance(body, dict) or not isinstance(body.get("invocation"), str):
                self.problems.append(f"{message.key}: {response.status_code} {response.text!r}")
                return
            self.accepted[message.key] = body["invocation"]
            return

    async def _watch(self, client: httpx.AsyncClient) -> None:
        """Long-poll accepted invocations through random workers, as waiting callers do."""
        while not self.stop.is_set():
            keys = sorted(self.accepted)
            url = self.pick()
            if not keys or url is None:
                await asyncio.sleep(RETRY_PAUSE)
                continue
            invocation = self.accepted[self.random.choice(keys)]
            try:
                response = await client.get(
                    url + invocation_path(invocation),
                    params={"wait": "1"},
                    timeout=SEND_TIMEOUT + 2.0,
                )
            except httpx.TransportError as exc:
                self.polls[type(exc).__name__] += 1
                await asyncio.sleep(RETRY_PAUSE)
                continue
            if response.status_code != 200:
                self.polls[str(response.status_code)] += 1
                await asyncio.sleep(RETRY_PAUSE)
                continue
            state = response.json()["state"]
            self.polls[state] += 1
            if state not in ("queued", "running", *TERMINAL):
                self.problems.append(f"{invocation}: a status read said {state!r}")


@dataclasses.dataclass
class Finished:
    """What reading every acknowledged invocation back found."""

    #: Message key -> the invocation's final status body.
    statuses: dict[str, dict[str, Any]]
    #: Message key -> (HTTP status, invocation) a re-send with its key answered.
    resent: dict[str, tuple[int, str | None]]


async def finish(
    driver: Driver, timeout: float, *, readers: int = 32, resend: bool = True
) -> Finished:
    """Every acknowledged invocation's end, read through random live workers with
    ``?wait=``, and what sending its message once more with its key answers."""
    by_key = {message.key: message for message in driver.plan}
    gate = asyncio.Semaphore(readers)
    deadline = time.monotonic() + timeout
    statuses: dict[str, dict[str, Any]] = {}
    resent: dict[str, tuple[int, str | None]] = {}
    limits = httpx.Limits(max_connections=readers)
    async with httpx.AsyncClient(timeout=WAIT_CHUNK + 5.0, limits=limits) as client:

        async def read(key: str, invocation: str) -> None:
            async with gate:
                while time.monotonic() < deadline:
                    url = driver.pick()
                    left = deadline - time.monotonic()
                    wait = f"{min(WAIT_CHUNK, max(0.0, left)):.2f}"
                    try:
                        response = await client.get(
                            f"{url}{invocation_path(invocation)}", params={"wait": wait}
                        )
                    except httpx.TransportError:
                        await asyncio.sleep(RETRY_PAUSE)
                        continue
                    if response.status_code != 200:
                        await asyncio.sleep(RETRY_PAUSE)
                        continue
                    body: dict[str, Any] = response.json()
                    statuses[key] = body
                    if body.get("state") in TERMINAL:
                        break
                if not resend:
                    return
                message = by_key[key]
                url = driver.pick()
                again = await client.post(
                    f"{url}{message.path}", json=message.args, headers={"Idempotency-Key": key}
                )
                resent[key] = (again.status_code, again.json().get("invocation"))

        async with asyncio.TaskGroup() as group:
            for key, invocation in driver.accepted.items():
                group.create_task(read(key, invocation))
    return Finished(statuses, resent)
