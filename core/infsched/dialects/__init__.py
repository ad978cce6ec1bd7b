"""Per-database statements: `dialect_for(engine)` returns the one for an engine's database."""

from __future__ import annotations

import sqlalchemy as sa

from infsched.column_types import supply_column_types
from infsched.dialects.base import Dialect, LockTimeoutError, RangePartition, RangePartitioning
from infsched.dialects.mysql import MySQLDialect
from infsched.dialects.sqlite import SQLiteDialect
from infsched.errors import UnsupportedDatabaseError

_BY_NAME: dict[str, Dialect] = {
    name: dialect for dialect in (MySQLDialect(), SQLiteDialect()) for name in dialect.names
}
for _dialect in set(_BY_NAME.values()):
    supply_column_types(_dialect.names, _dialect.column_type)


def dialect_for(bind: sa.Engine | sa.Connection) -> Dialect:
    """The Dialect of an engine's (or connection's) database; UnsupportedDatabaseError if none."""
    name = bind.dialect.name
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(_BY_NAME))
        raise UnsupportedDatabaseError(
            f"database {name!r} is not supported (supported: {known})"
        ) from None


__all__ = [
    "Dialect",
    "LockTimeoutError",
    "RangePartition",
    "RangePartitioning",
    "dialect_for",
]
