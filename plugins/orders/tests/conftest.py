"""The orders tests use the core's throwaway MariaDB databases and SQLite files."""

# mypy resolves "tests.conftest" to this very file (plugins/orders is on its path); pytest
# imports the core's tests/conftest.py, which defines these fixtures.
from tests.conftest import (  # type: ignore[attr-defined]
    any_url,
    engine_for,
    mysql_database_factory,
    mysql_server,
    sqlite_url,
)

__all__ = ["any_url", "engine_for", "mysql_database_factory", "mysql_server", "sqlite_url"]
