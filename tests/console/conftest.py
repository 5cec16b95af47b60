"""The console's browser tests: Playwright driving the machine's Chromium (Debian's
``chromium`` package, which `.ci/run` installs when missing: Playwright downloads no browser
here), one browser for each module; and the directory each page's screenshot is saved in
(printed at the end of the run)."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

#: Where Chromium is looked for, after ``ACTORFLOW_CHROMIUM``.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
#: Longest any one browser action or expectation waits before it fails.
BROWSER_TIMEOUT_MS = 10_000


def chromium_path() -> str:
    """The Chromium executable to drive (fails saying how to install one)."""
    given = os.environ.get("ACTORFLOW_CHROMIUM")
    found = given or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if not found:
        pytest.fail(
            "the console's browser tests need Chromium: `apt-get install chromium` (Debian; "
            ".ci/run does it), or set ACTORFLOW_CHROMIUM to a Chromium or Chrome executable"
        )
    return found


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest) -> Iterator[pathlib.Path]:
    """The directory the screenshots go to (emptied first), named at the end of the run."""
    where = pathlib.Path(tempfile.gettempdir()) / "actorflow-console-screenshots"
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    yield where
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        saved = len(list(where.glob("*.png")))
        reporter.write_line(f"console screenshots ({saved}): {where}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for a module. Not for the session: Playwright's sync API runs
    an event loop in this thread while it is open, and the async tests after this module
    could not run theirs."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            launched.close()
