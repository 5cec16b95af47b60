"""Listings come a page at a time: the journal, an actor's invocations and the actors, each
with ``?limit=`` (1000 at most) and ``?cursor=``, the next page's URL in a ``Link`` header,
the first page the same JSON array as before; a page stays within its bytes however large
the records; the async client pages through them."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from actorflow import ActorRef, Page
from actorflow.runtime._pages import MAX_PAGE, PAGE_BYTES
from journal import MemoryStore
from tests.server.support import Api, error_of, eventually, reaches, serving
from tests.server.test_client import client_of

pytestmark = pytest.mark.anyio

LINK = re.compile(r'^<(/v1/[^>]+)>; rel="next"$')
#: More pages than any listing here has.
MAX_PAGES = 100


async def every_page(api: Api, path: str, **params: Any) -> list[list[Any]]:
    """Each page's JSON array, following the Link headers from ``path``."""
    pages = []
    answer = await api.http.get(path, params=params)
    while len(pages) < MAX_PAGES:
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        pages.append(answer.json())
        link = answer.headers.get("link")
        if link is None:
            return pages
        found = LINK.match(link)
        assert found, link
        answer = await api.http.get(found.group(1))
    raise AssertionError(f"{path} still had a next page after {MAX_PAGES} pages")


async def greet(api: Api, actor: str, count: int) -> None:
    for n in range(count):
        sent = await api.send(actor, "greet", {"name": f"n{n}"}, params={"wait": "5"})
        assert sent.json()["state"] == "completed", sent.text


async def test_the_journal_pages_follow_each_other_to_the_whole_journal() -> None:
    async with serving() as api:
        await greet(api, "Greeter/g", 12)  # 36 actor records, 12 inbox records
        whole = await api.runtime.journal(ActorRef("Greeter", "g"))
        pages = await every_page(api, "/v1/actors/Greeter/g/journal", limit="5")
        first = await api.http.get("/v1/actors/Greeter/g/journal")

    assert [len(page) for page in pages] == [5] * 9 + [3]
    listed = [(e["stream"], e["position"], e["type"]) for page in pages for e in page]
    assert listed == [(e.stream, e.position, e.type) for e in whole]
    assert listed[:2] == [("actor", 1, "turn"), ("actor", 2, "step")]
    assert listed[35:37] == [("actor", 36, "turn_done"), ("inbox", 1, "message")]
    assert first.json() == [entry for page in pages for entry in page]  # 48 < 100: one page
    assert "link" not in first.headers


async def test_a_journal_page_stops_at_its_bytes_and_is_streamed() -> None:
    big = "x" * (PAGE_BYTES // 3)
    async with serving() as api:
        for n in range(6):
            sent = await api.send(
                "Greeter/big", "greet", {"name": f"{n}{big}"}, params={"wait": "5"}
            )
            assert sent.status_code == 200
        first = await api.http.get("/v1/actors/Greeter/big/journal", params={"limit": "1000"})
        pages = await every_page(api, "/v1/actors/Greeter/big/journal", limit="1000")

    assert "content-length" not in first.headers  # sent as it is encoded
    assert 1 < len(first.json()) < 12
    assert sum(len(page) for page in pages) == 6 * 3 + 6
    for page in pages:
        assert sum(len(str(entry["data"])) for entry in page) < 3 * PAGE_BYTES


async def test_invocations_page_through_running_queued_then_ended_latest_first() -> None:
    async with serving() as api:
        ended = []
        for n in range(7):
            sent = await api.send("Approval/a", "request", {"what": f"w{n}"})
            await reaches(api, "Approval/a", "waiting-event")
            await api.http.post(
                "/v1/actors/Approval/a/events/decision", json={"by": "me", "approved": True}
            )
            ended.append(sent.json()["invocation"])
        await reaches(api, "Approval/a", "idle")
        running = (await api.send("Approval/a", "request", {"what": "now"})).json()["invocation"]
        await reaches(api, "Approval/a", "waiting-event")
        queued = [
            (await api.send("Approval/a", "request", {"what": f"q{n}"})).json()["invocation"]
            for n in range(4)
        ]
        pages = await every_page(api, "/v1/actors/Approval/a/invocations", limit="3")
        whole = await api.runtime.invocations(ActorRef("Approval", "a"))

    listed = [(i["invocation"], i["state"]) for page in pages for i in page]
    assert [len(page) for page in pages] == [3, 3, 3, 3]
    assert listed == [
        (running, "running"),
        *[(invocation, "queued") for invocation in queued],
        *[(invocation, "completed") for invocation in reversed(ended)],
    ]
    assert [(s.invocation, s.state) for s in whole] == listed


async def test_actors_page_through_in_id_order_by_type_and_state() -> None:
    async with serving(runtime_options={"idle_timeout": 0.05}) as api:
        for n in range(23):
            await api.send(f"Greeter/k{n:02d}", "greet", {"name": "a"})
        await api.send("Approval/waiting", "request", {"what": "w"})
        await reaches(api, "Approval/waiting", "waiting-event")

        async def passivated() -> bool:
            return set(api.runtime.hosted()) == {"Approval/waiting"}

        await eventually(passivated, "every actor but Approval/waiting to be passivated")
        everyone = await every_page(api, "/v1/actors", limit="10")
        greeters = await every_page(api, "/v1/actors", type="Greeter", state="idle", limit="10")
        waiting = await every_page(api, "/v1/actors", state="waiting-event", limit="10")
        pending = await every_page(api, "/v1/actors", state="pending")

    ids = [a["actor"] for page in everyone for a in page]
    assert ids == ["Approval/waiting", *[f"Greeter/k{n:02d}" for n in range(23)]]
    assert [len(page) for page in everyone] == [10, 10, 4]
    assert [len(page) for page in greeters] == [10, 10, 3]
    assert {a["state"] for page in greeters for a in page} == {"idle"}
    assert [[a["actor"] for a in page] for page in waiting] == [["Approval/waiting"]]
    assert pending == [[]]


@pytest.mark.parametrize(
    ("path", "params", "wanted"),
    [
        ("/v1/actors", {"limit": "0"}, "?limit= takes a whole number from 1 to 1000, got '0'"),
        ("/v1/actors", {"limit": "ten"}, "?limit= takes a whole number from 1 to 1000"),
        ("/v1/actors/Greeter/g/journal", {"limit": "-3"}, "got '-3'"),
        ("/v1/actors/Greeter/g/invocations", {"limit": "1.5"}, "got '1.5'"),
        ("/v1/actors", {"cursor": "nonsense"}, "is not one this listing gave out"),
        ("/v1/actors/Greeter/g/journal", {"cursor": ""}, "pass the next cursor"),
    ],
)
async def test_a_bad_limit_or_cursor_is_400_saying_what_to_pass(
    path: str, params: dict[str, str], wanted: str
) -> None:
    async with serving() as api:
        answer = await api.http.get(path, params=params)
    status, kind, message = error_of(answer)
    assert (status, kind) == (400, "invalid_query")
    assert wanted in message


async def test_a_cursor_of_one_listing_is_refused_by_another() -> None:
    async with serving() as api:
        await greet(api, "Greeter/g", 2)
        journal = await api.http.get("/v1/actors/Greeter/g/journal", params={"limit": "1"})
        cursor = LINK.match(journal.headers["link"]).group(1).split("cursor=")[1]  # type: ignore[union-attr]
        answer = await api.http.get("/v1/actors/Greeter/g/invocations", params={"cursor": cursor})
    assert error_of(answer)[:2] == (400, "invalid_query")


async def test_a_limit_above_the_maximum_is_taken_as_the_maximum() -> None:
    async with serving(MemoryStore()) as api:
        for n in range(MAX_PAGE + 5):
            await api.runtime.deliver(ActorRef("Greeter", f"k{n:04d}"), "note")
        answer = await api.http.get("/v1/actors", params={"limit": "5000"})
    assert len(answer.json()) == MAX_PAGE
    assert "cursor=" in answer.headers["link"]


async def test_the_async_client_pages_through_every_listing() -> None:
    async with serving() as api, client_of(api) as client:
        await greet(api, "Greeter/g", 5)
        pages = [page async for page in client.journal_pages("Greeter/g", limit=4)]
        invocations = [page async for page in client.invocation_pages("Greeter/g", limit=2)]
        actors = [page async for page in client.actor_pages("Greeter", limit=1)]
        whole = await client.journal("Greeter/g")
        rest = [page async for page in client.journal_pages("Greeter/g", cursor=pages[1].next)]

    assert all(isinstance(page, Page) for page in pages)
    assert [len(page.items) for page in pages] == [4, 4, 4, 4, 4]
    assert [page.next is None for page in pages] == [False] * 4 + [True]
    assert [e for page in pages for e in page.items] == whole
    assert [e for page in rest for e in page.items] == whole[8:]
    assert [len(page.items) for page in invocations] == [2, 2, 1]
    assert {s.state for page in invocations for s in page.items} == {"completed"}
    assert [[a.actor for a in page.items] for page in actors] == [["Greeter/g"]]


async def test_the_first_page_keeps_the_shape_old_clients_read() -> None:
    async with serving() as api:
        await greet(api, "Greeter/g", 1)
        answers = [
            await api.http.get(path)
            for path in (
                "/v1/actors",
                "/v1/actors/Greeter/g/journal",
                "/v1/actors/Greeter/g/invocations",
            )
        ]
    for answer in answers:
        assert isinstance(answer.json(), list)
        assert "link" not in answer.headers
    assert httpx.Response(200, json=answers[0].json()).json()[0]["actor"] == "Greeter/g"
