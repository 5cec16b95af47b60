"""The web console at /ui, in a real browser (Chromium driven by Playwright) against a real
`actorflow serve` of `tests/console/console_app.py` on a SQLite file, with a token.

Each page is checked for what it shows, shown again after a change made elsewhere without
a reload (live updates), and saved as a screenshot, at a desktop and a phone viewport."""

from __future__ import annotations

import json
import pathlib
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from actorflow import SyncClient
from tests.console.conftest import BROWSER_TIMEOUT_MS
from tests.server.processes import Server, clean_env, served

APP = "tests.console.console_app"
TOKEN = "console-test-token"
expect.set_options(timeout=BROWSER_TIMEOUT_MS)
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
#: Hostile input: as text in the page, it is harmless; as markup, it would set `pwned`.
SCRIPT = "<script>window.pwned = 1</script>"
IMAGE = "<img src=x onerror=window.pwned=2>"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("console")


@pytest.fixture(scope="module")
def server(workdir: pathlib.Path) -> Iterator[Server]:
    env = clean_env(ACTORFLOW_TOKEN=TOKEN, CONSOLE_DIR=str(workdir))
    with served(workdir, env=env, app=APP) as running:
        yield running
        assert running.stop() == 0


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[SyncClient]:
    with SyncClient(server.url, token=TOKEN) as connected:
        yield connected


def open_page(browser: Any, server: Server, fragment: str, *, token: str | None = TOKEN,
              viewport: dict[str, int] = DESKTOP) -> Page:  # fmt: skip
    """A new tab on ``/ui#fragment``, its session already holding ``token`` (if any), that
    fails the test on any script error."""
    context = browser.new_context(viewport=viewport)
    if token is not None:
        context.add_init_script(f"sessionStorage.setItem('actorflow.token', {json.dumps(token)})")
    page: Page = context.new_page()
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{server.url}/ui{fragment}")
    return page


def close(page: Page) -> None:
    """Close the tab; it must have had no script errors, and nothing hostile ran."""
    assert page.evaluate("window.pwned") is None
    assert page.errors == []  # type: ignore[attr-defined]
    page.context.close()


def shoot(page: Page, screenshots: pathlib.Path, name: str) -> None:
    page.screenshot(path=screenshots / f"{name}.png", full_page=True)


def wait_until(condition: Callable[[], bool], deadline: float = 10.0) -> None:
    """Return once ``condition()`` holds; fail if it does not within ``deadline`` s."""
    give_up = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < give_up, "the condition did not hold in time"
        time.sleep(0.05)


def fits_the_width(page: Page) -> bool:
    """Whether nothing sticks out sideways (no horizontal scrolling)."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


# -- the files ------------------------------------------------------------------------------


def test_the_page_loads_without_a_token_with_content_types_and_a_strict_policy(
    server: Server,
) -> None:
    page = httpx.get(f"{server.url}/ui")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "connect-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(f"{server.url}/ui/console.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert httpx.get(f"{server.url}/ui/console.css").headers["content-type"].startswith("text/css")
    assert httpx.get(f"{server.url}/ui/nothing.js").status_code == 404
    # the data is not public: every call the page makes needs the token
    assert httpx.get(f"{server.url}/v1/actors").status_code == 401
    assert httpx.get(f"{server.url}/v1/actors/Desk/x/checkpoint").status_code == 401


def test_every_file_the_page_loads_is_served_from_the_package(server: Server) -> None:
    html = httpx.get(f"{server.url}/ui").text
    assert "http://" not in html  # nothing from the internet
    assert "https://" not in html
    for name in re.findall(r'(?:src|href)="/ui/([^"]+)"', html):
        assert httpx.get(f"{server.url}/ui/{name}").status_code == 200, name


# -- the token ------------------------------------------------------------------------------


def test_the_token_is_asked_once_refused_clearly_and_kept_for_the_session(
    browser: Any, server: Server, screenshots: pathlib.Path
) -> None:
    page = open_page(browser, server, "#/actors", token=None)
    expect(page.locator("#token-form")).to_contain_text("needs its bearer token")
    shoot(page, screenshots, "token")
    page.fill("#token", "not-the-token")
    page.click("#token-form button")
    expect(page.locator("#token-form [role=alert]")).to_contain_text(
        "The server refused this token: the bearer token is not valid for this server"
    )
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    expect(page.locator("h1")).to_have_text("Actors")
    page.reload()  # kept in sessionStorage: not asked again
    expect(page.locator("#actors")).to_be_visible()
    expect(page.locator("#token-form")).to_have_count(0)
    page.errors.clear()  # type: ignore[attr-defined]  # the refused token's 401, expected
    close(page)


# -- the actors -----------------------------------------------------------------------------


def test_the_actors_page_filters_pages_and_shows_new_actors_live(
    browser: Any, server: Server, client: SyncClient, screenshots: pathlib.Path
) -> None:
    for n in range(3):
        client.call(f"Desk/list-{n}", "file", {"text": f"note {n}"})
    client.send("Desk/list-wait", "approve", {"what": "a list"})
    page = open_page(browser, server, "#/actors?type=Desk&limit=2")
    rows = page.locator("#actors tbody tr")
    expect(rows).to_have_count(2)
    first = rows.first.get_attribute("data-actor")
    expect(rows.first.locator("td").nth(1)).to_have_text("Desk")
    expect(rows.first.locator("td").nth(3)).to_have_text(re.compile(r"^src-"))  # code version
    page.click("a[rel=next]")
    expect(rows.first).not_to_have_attribute("data-actor", first or "")
    expect(rows).to_have_count(2)
    page.goto(f"{server.url}/ui#/actors?type=Desk")
    page.select_option("#filter-state", "waiting-event")
    expect(page).to_have_url(re.compile(r"state=waiting-event"))
    expect(page.locator("#actors tbody tr[data-actor='Desk/list-wait']")).to_be_visible()
    expect(page.locator("#actors tbody tr[data-actor='Desk/list-0']")).to_have_count(0)
    page.goto(f"{server.url}/ui#/actors")
    expect(page.locator("#actors tbody tr").first).to_be_visible()
    shoot(page, screenshots, "actors")
    client.call("Desk/list-late", "file", {"text": "late"})  # appears without a reload
    expect(page.locator("#actors tbody tr[data-actor='Desk/list-late']")).to_be_visible()
    close(page)


# -- an actor -------------------------------------------------------------------------------


def test_an_actors_timeline_shows_every_kind_of_entry_and_hostile_values_as_text(
    browser: Any, server: Server, client: SyncClient, screenshots: pathlib.Path
) -> None:
    actor = "Desk/timeline"
    client.call(actor, "note", {"text": SCRIPT})
    doomed = client.send(actor, "doomed", {"reason": IMAGE})
    assert client.invocation(doomed.invocation, wait=10).state == "failed"
    waiting = client.send(actor, "approve", {"what": "a timeline"})
    client.deliver(actor, "decision", {"by": IMAGE})
    assert client.invocation(waiting.invocation, wait=10).state == "completed"
    page = open_page(browser, server, f"#/actor/{actor}")
    timeline = page.locator("#timeline")
    turn = timeline.locator("section[data-turn='1']")
    expect(turn.locator("header h3")).to_have_text("Turn 1: note")
    retry = turn.locator("li[data-type=step_retry]")
    expect(retry).to_contain_text("attempt 1 of echo failed; next attempt at 20")
    expect(retry).to_contain_text("builtins.ConnectionError: the echo service dropped")
    step = turn.locator("li[data-type=step]").first
    expect(step).to_contain_text("step echo")
    expect(step).to_contain_text(re.compile(r"after the previous entry: \d+ ms · 2 attempts"))
    expect(turn.locator("li[data-type=timer]")).to_contain_text(
        re.compile(r"timer sleep due at 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ UTC")
    )
    expect(turn.locator("li.entry-message")).to_contain_text("sent Desk/archive.file")
    doomed = timeline.locator("section[data-turn='2']")
    expect(doomed.locator("li.entry-compensation")).to_contain_text("compensated reserve")
    expect(doomed.locator("li[data-type=turn_failed]")).to_contain_text(
        f"builtins.ValueError: {IMAGE}"
    )
    approve = timeline.locator("section[data-turn='3']")
    expect(approve.locator("li.entry-event")).to_contain_text("event decision received")
    expect(approve.locator("li.entry-event")).to_contain_text(IMAGE)  # the payload, as text
    expect(page.locator("#inbox li[data-type=event]")).to_contain_text(IMAGE)
    snapshot = page.locator("#snapshot")
    expect(snapshot).to_contain_text("checkpoint of turn 3")
    expect(snapshot).to_contain_text(SCRIPT)  # the state, as text
    expect(page.locator("#status")).to_contain_text("idle")
    # The hostile strings are text: no element came from them, nothing ran.
    assert page.locator("main script").count() == 0
    assert page.locator("main img").count() == 0
    shoot(page, screenshots, "actor")
    close(page)


def test_an_operator_retries_cancels_and_delivers_and_sees_the_changes_live(
    browser: Any, server: Server, client: SyncClient, workdir: pathlib.Path,
    screenshots: pathlib.Path,
) -> None:  # fmt: skip
    actor = "Desk/operated"
    failed = client.send(actor, "brittle", {})
    assert client.invocation(failed.invocation, wait=10).state == "failed"
    page = open_page(browser, server, f"#/actor/{actor}")
    row = page.locator(f"tr[data-invocation='{failed.invocation}']")
    expect(row).to_have_attribute("data-state", "failed")
    (workdir / "brittle-ok").touch()
    row.locator("button[data-action=retry]").click()
    expect(row).to_have_attribute("data-state", "completed")
    expect(row).to_contain_text("fixed")
    cancelled = client.send(actor, "approve", {"what": "to cancel"})
    waiting = page.locator(f"tr[data-invocation='{cancelled.invocation}']")
    expect(waiting).to_have_attribute("data-state", "running")
    waiting.locator("button[data-action=cancel]").click()
    expect(waiting).to_have_attribute("data-state", "cancelled")
    assert client.invocation(cancelled.invocation, wait=10).state == "cancelled"
    delivered = client.send(actor, "approve", {"what": "to deliver"})
    row = page.locator(f"tr[data-invocation='{delivered.invocation}']")
    expect(row).to_have_attribute("data-state", "running")  # seen without a reload
    page.fill("#event-name", "decision")
    page.fill("#event-payload", '{"by": "the console"}')
    page.click("#deliver-form button")
    expect(page.locator("#deliver-form .ok")).to_have_text("Delivered decision.")
    expect(row).to_have_attribute("data-state", "completed")
    assert client.invocation(delivered.invocation, wait=10).result == {"by": "the console"}
    page.fill("#event-name", "")
    page.fill("#event-payload", "")
    page.locator("#deliver-form .ok").evaluate("node => node.remove()")
    page.locator("#event-payload").blur()
    page.screenshot(path=screenshots / "console.png")  # the window only: docs/img/console.png
    close(page)


# -- a live stream --------------------------------------------------------------------------


def test_a_running_invocations_tokens_stream_into_the_page(
    browser: Any, server: Server, client: SyncClient, workdir: pathlib.Path,
    screenshots: pathlib.Path,
) -> None:  # fmt: skip
    sent = client.send("Streamer/live", "answer", {"count": 3})
    hex_id = sent.invocation.partition("#")[2]
    page = open_page(browser, server, f"#/invocation/Streamer/live/{hex_id}")
    text = page.locator("#stream-text")
    expect(text).to_have_text("first ")  # the stream waits for the gate
    expect(page.locator("#invocation-status")).to_contain_text("running")
    shoot(page, screenshots, "invocation")
    (workdir / "more").touch()
    expect(text).to_have_text("first w0 w1 w2 ")
    expect(page.locator("#stream-state")).to_have_text("Ended: completed")
    expect(page.locator("#invocation-status")).to_contain_text("completed")
    expect(page.locator("#invocation-status")).to_contain_text('"first w0 w1 w2"')
    close(page)


# -- stuck actors ---------------------------------------------------------------------------


def test_a_stuck_actor_shows_its_divergence_and_is_reset_after_a_confirmation(
    browser: Any, tmp_path: pathlib.Path, screenshots: pathlib.Path
) -> None:
    env = clean_env(ACTORFLOW_TOKEN=TOKEN, CONSOLE_DIR=str(tmp_path), CONSOLE_DRIFT="a")
    with served(tmp_path, env=env, app=APP) as first:
        with SyncClient(first.url, token=TOKEN) as client:
            sent = client.send("Drifter/d", "drift", {})
            wait_until(lambda: client.status("Drifter/d").state == "waiting-event")
        assert first.stop() == 0
    with served(tmp_path, env=env | {"CONSOLE_DRIFT": "b"}, app=APP) as second:
        page = open_page(browser, second, "#/stuck")
        card = page.locator("article[data-actor='Drifter/d']")
        expect(card).to_contain_text("stuck")
        expect(card.locator(".divergence .recorded")).to_contain_text("step-a")
        expect(card.locator(".divergence .requested")).to_contain_text("step-b")
        expect(card).to_contain_text("diverged at")
        shoot(page, screenshots, "stuck")
        card.locator("#reset-start").click()
        expect(card).to_contain_text("Really discard turn 1 of Drifter/d?")
        card.locator("#reset-cancel").click()  # asked, and not done
        card.locator("#reset-start").click()
        card.locator("#reset-confirm").click()
        expect(card.locator("#reset-done")).to_contain_text("Turn 1 (drift) discarded")
        expect(card).to_contain_text("discarded entries (keep them)")
        # It ran again, under the new code, and now waits for its event: deliver it.
        page.goto(f"{second.url}/ui#/actor/Drifter/d")
        expect(page.locator("#status")).to_contain_text("waiting-event")
        page.fill("#event-name", "go")
        page.click("#deliver-form button")
        row = page.locator(f"tr[data-invocation='{sent.invocation}']")
        expect(row).to_have_attribute("data-state", "completed")
        expect(row).to_contain_text('"b"')
        close(page)
        assert second.stop() == 0


# -- a phone --------------------------------------------------------------------------------


@pytest.mark.parametrize("fragment", ["#/actors", "#/actor/Desk/timeline", "#/stuck"])
def test_each_page_fits_a_phone(
    browser: Any, server: Server, client: SyncClient, screenshots: pathlib.Path, fragment: str
) -> None:
    client.call("Desk/timeline", "file", {"text": "a phone " * 30})
    page = open_page(browser, server, fragment, viewport=PHONE)
    expect(page.locator("main h1")).to_be_visible()
    expect(page.locator("main p.muted").first).not_to_have_text("Loading…")
    assert fits_the_width(page)
    name = fragment.strip("#/").split("/")[0]
    shoot(page, screenshots, f"phone-{name}")
    close(page)
