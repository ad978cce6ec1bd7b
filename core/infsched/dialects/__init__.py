"""Per-database statements: `dialect_for(engine)` returns the one for an engine's database."""

from __future__ import annotations

import sqlalchemy as sa

from infsched.column_types import supply_column_types
from infsched.dialects.base import (
    DatabaseErrorKind,
    Dialect,
    LockTimeoutError,
    RangePartition,
    RangePartitioning,
)
from infsched.dialects.mysql import MySQLDialect
from infsched.dialects.sqlite import SQLiteDialect
from infsched.errors import UnsupportedDatabaseError

_DIALECTS: tuple[Dialect, ...] = (MySQLDialect(), SQLiteDialect())
_BY_NAME: dict[str, Dialect] = {name: dialect for dialect in _DIALECTS for name in dialect.names}
for _dialect in _DIALECTS:
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


def classify(exc: BaseException) -> DatabaseErrorKind | None:
    """What a database error means, whichever database raised it; None for any other.

    For code that meets several databases (a node's store and its repositories
    may differ): each dialect recognises only its own database's errors.
    """
    for dialect in _DIALECTS:
        kind = dialect.classify(exc)
        if kind is not None:
            return kind
    return None


__all__ = [
    "DatabaseErrorKind",
    "Dialect",
    "LockTimeoutError",
    "RangePartition",
    "RangePartitioning",
    "classify",
    "dialect_for",
]
