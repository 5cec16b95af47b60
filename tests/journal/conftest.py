"""The journal tests' PostgreSQL server is started on first use by the ``postgres_dsn``
fixture (tests/conftest.py) and stopped when the session ends."""
