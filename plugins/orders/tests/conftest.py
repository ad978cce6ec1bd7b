"""The orders tests use the core's throwaway MariaDB and PostgreSQL databases and SQLite files."""

# mypy resolves "tests.conftest" to this very file (plugins/orders is on its path); pytest
# imports the core's tests/conftest.py, which defines these fixtures.
from tests.conftest import (  # type: ignore[attr-defined]
    engine_for,
    every_url,
    mysql_database_factory,
    mysql_server,
    postgresql_database_factory,
    sqlite_url,
)

__all__ = [
    "engine_for",
    "every_url",
    "mysql_database_factory",
    "mysql_server",
    "postgresql_database_factory",
    "sqlite_url",
]
