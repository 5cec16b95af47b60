"""What the console needs of the API, in process: its files, the checkpoint endpoint, and
its own page's requests getting past the Origin check (a browser marks every POST with the
page's Origin, its own too), while other pages' still do not."""

from __future__ import annotations

import pytest

from tests.console.console_app import Desk
from tests.server.support import serving

pytestmark = pytest.mark.anyio


async def test_the_servers_own_page_may_post_and_other_pages_may_not() -> None:
    async with serving(actors=[Desk]) as api:
        own = {"Origin": "http://localhost", "Content-Type": "application/json"}
        sent = await api.send("Desk/own", "file", {"text": "from /ui"}, headers=own)
        assert sent.status_code == 202, sent.text
        for origin in ("http://localhost:3000", "http://evil.example", "null"):
            other = own | {"Origin": origin}
            refused = await api.send("Desk/other", "file", {"text": "x"}, headers=other)
            assert refused.status_code == 403, origin
            assert refused.json()["error"]["type"] == "origin_not_allowed"
        # a page whose own name was rebound to this server: its Host is refused first
        rebound = own | {"Origin": "http://evil.example", "Host": "evil.example"}
        answer = await api.send("Desk/rebound", "file", {"text": "x"}, headers=rebound)
        assert answer.status_code == 421
        listed = await api.http.get("/v1/actors")
        assert [actor["actor"] for actor in listed.json()] == ["Desk/own"]


async def test_a_host_allowed_only_by_a_wildcard_gets_no_same_origin_exception() -> None:
    async with serving(actors=[Desk], allowed_hosts=["*"]) as api:
        rebound = {"Origin": "http://evil.example", "Host": "evil.example"}
        answer = await api.send("Desk/rebound", "file", {"text": "x"}, headers=rebound)
        assert answer.status_code == 403
        assert answer.json()["error"]["type"] == "origin_not_allowed"
        named = {"Origin": "http://localhost", "Host": "localhost"}  # not named either
        assert (await api.send("Desk/own", "file", {"text": "x"}, headers=named)).status_code == 403


async def test_the_checkpoint_holds_the_state_the_last_turn_left() -> None:
    async with serving(actors=[Desk]) as api:
        never = await api.http.get("/v1/actors/Desk/new/checkpoint")
        assert never.status_code == 200
        assert never.json() == {
            "actor": "Desk/new", "turn": 0, "covers": 0, "version": None, "state": None
        }  # fmt: skip
        await api.send("Desk/kept", "file", {"text": "one"}, params={"wait": "5"})
        await api.send("Desk/kept", "file", {"text": "<two>"}, params={"wait": "5"})
        answer = (await api.http.get("/v1/actors/Desk/kept/checkpoint")).json()
        assert answer["turn"] == 2
        assert answer["state"] == {"notes": ["one", "<two>"]}
        assert answer["covers"] == 4  # two turns: each a start and an end
        assert answer["version"] == (await api.http.get("/v1/actors/Desk/kept")).json()["version"]


async def test_a_state_kept_in_parts_is_returned_whole() -> None:
    big = "x" * 40_000  # above the 16 KiB a checkpoint keeps inline
    async with serving(actors=[Desk]) as api:
        for n in range(3):
            sent = await api.send("Desk/big", "file", {"text": f"{n}{big}"}, params={"wait": "5"})
            assert sent.status_code == 200, sent.text
        answer = (await api.http.get("/v1/actors/Desk/big/checkpoint")).json()
        assert answer["state"] == {"notes": [f"{n}{big}" for n in range(3)]}


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        ("/v1/actors/Nobody/x/checkpoint", 404, "unknown_actor_type"),
        ("/v1/actors/Desk/.../checkpoint", 200, None),
        ("/v1/actors/Desk/a%20b/checkpoint", 400, "invalid_message"),
        ("/ui/missing.js", 404, "not_found"),
        ("/ui/..%2Fui%2Fapi.js", 404, "not_found"),  # only the files it ships, by name
    ],
)
async def test_refusals(path: str, status: int, kind: str | None) -> None:
    async with serving(actors=[Desk]) as api:
        answer = await api.http.get(path)
        assert answer.status_code == status, answer.text
        if kind is not None:
            assert answer.json()["error"]["type"] == kind


async def test_the_files_need_no_token_and_the_checkpoint_does() -> None:
    async with serving(actors=[Desk], token="t") as api:
        page = await api.http.get("/ui")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert (await api.http.get("/ui/api.js")).status_code == 200
        refused = await api.http.get("/v1/actors/Desk/x/checkpoint")
        assert refused.status_code == 401
        allowed = await api.http.get(
            "/v1/actors/Desk/x/checkpoint", headers={"Authorization": "Bearer t"}
        )
        assert allowed.status_code == 200
