"""The journal tests' PostgreSQL server is started on first use by the ``postgres_dsn``
fixture (tests/conftest.py) and stopped when the session ends."""

import pytest

# The value contract is imported by more than one test module: rewrite its asserts before.
pytest.register_assert_rewrite("tests.journal.contract_values")
