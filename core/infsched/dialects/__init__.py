"""Per-database statements, one `Dialect` per database, and the dialects that are registered.

The built-in ones (MySQL/MariaDB, PostgreSQL, SQLite) are known from the start; a plugin
adds one through the ``register_dialects`` hook.  Registering a dialect also
makes `infsched.dburl` accept its URLs.  Components never look a dialect up:
they are handed `infsched.database.Database`, which carries it.
"""

from __future__ import annotations

import sqlalchemy as sa

from infsched.column_types import supply_column_types
from infsched.dburl import accept_scheme
from infsched.dialects.base import (
    DatabaseErrorKind,
    Dialect,
    LockTimeoutError,
    RangePartition,
    RangePartitioning,
)
from infsched.dialects.mysql import MySQLDialect
from infsched.dialects.postgresql import PostgreSQLDialect
from infsched.dialects.sqlite import SQLiteDialect
from infsched.errors import UnsupportedDatabaseError

#: The dialects the core ships; the built-in plugin (builtin_dialects.py) registers them.
BUILTIN_DIALECTS: tuple[Dialect, ...] = (MySQLDialect(), PostgreSQLDialect(), SQLiteDialect())

#: {Dialect.name: dialect}, and {SQLAlchemy dialect name: dialect} for engines made elsewhere.
_BY_NAME: dict[str, Dialect] = {}
_BY_BACKEND: dict[str, Dialect] = {}


def register_dialect(dialect: Dialect) -> None:
    """Know `dialect` from now on, and accept its URLs; the first of a name stays."""
    if dialect.name in _BY_NAME:
        return
    _BY_NAME[dialect.name] = dialect
    # A SQLAlchemy dialect name another dialect serves already stays with that one.
    claimed = [n for n in dialect.names if _BY_BACKEND.setdefault(n, dialect) is dialect]
    supply_column_types(claimed, dialect.column_type)
    accept_scheme(dialect.url_scheme)


for _builtin in BUILTIN_DIALECTS:
    register_dialect(_builtin)


def registered_dialect(name: str) -> Dialect:
    """The dialect registered as `name`, e.g. the one a URL's scheme names (``url.scheme.dialect``).

    A `DatabaseUrl` is made only for a registered dialect's scheme, so its name is known.
    """
    return _BY_NAME[name]


def dialect_for(bind: sa.Engine | sa.Connection) -> Dialect:
    """The Dialect of an engine's (or connection's) database; UnsupportedDatabaseError if none."""
    name = bind.dialect.name
    try:
        return _BY_BACKEND[name]
    except KeyError:
        known = ", ".join(sorted(_BY_BACKEND))
        raise UnsupportedDatabaseError(
            f"database {name!r} is not supported (supported: {known})"
        ) from None


def classify(exc: BaseException) -> DatabaseErrorKind | None:
    """What a database error means, whichever database raised it; None for any other.

    For code that meets several databases (a node's store and its repositories
    may differ): each dialect recognises only its own database's errors.
    """
    for dialect in _BY_NAME.values():
        kind = dialect.classify(exc)
        if kind is not None:
            return kind
    return None


__all__ = [
    "BUILTIN_DIALECTS",
    "DatabaseErrorKind",
    "Dialect",
    "LockTimeoutError",
    "RangePartition",
    "RangePartitioning",
    "classify",
    "dialect_for",
    "register_dialect",
    "registered_dialect",
]
