"""Fixtures of the replay-check suite: a journal file per test, and a deadline on every test."""

from __future__ import annotations

import pathlib

import pytest

from tests.deadline import deadline_hook

TEST_DEADLINE = 20.0


@pytest.fixture
def db(tmp_path: pathlib.Path) -> pathlib.Path:
    """Where this test's SQLite journal lives."""
    return tmp_path / "journal.db"


pytest_pyfunc_call = deadline_hook(TEST_DEADLINE)
