"""Fixtures of the runtime suite: a journal file per test, and a deadline on every test."""

from __future__ import annotations

import pathlib

import pytest

from tests.deadline import deadline_hook

#: No test here needs more than a fraction of this; one that hangs fails instead, and its
#: runtime and store still close (pytest-timeout would leave the store's threads behind).
TEST_DEADLINE = 20.0


@pytest.fixture
def db(tmp_path: pathlib.Path) -> pathlib.Path:
    """Where this test's SQLite journal lives (a restart reopens the same file)."""
    return tmp_path / "journal.db"


pytest_pyfunc_call = deadline_hook(TEST_DEADLINE)
