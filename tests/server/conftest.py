"""Fixtures of the server suite: a deadline on every async test, fresh recorded effects."""

from __future__ import annotations

import pytest

from tests.deadline import deadline_hook
from tests.server import app_under_test

#: No in-process test needs more than a fraction of this; one that hangs fails instead,
#: and its runtime and store still close.
TEST_DEADLINE = 20.0


@pytest.fixture(autouse=True)
def _reset_effects() -> None:
    app_under_test.reset()


pytest_pyfunc_call = deadline_hook(TEST_DEADLINE)
