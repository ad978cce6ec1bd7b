"""Column types named for what they hold; each database's dialect says how it stores them.

Table metadata declares `UtcDateTime`, `LongText`, `JsonText`, `FixedText` or `RowId`,
never a database's own type.  Each dialect (infsched.dialects) registers,
under the names of the SQLAlchemy dialects it serves, which type it uses for
each of them (`supply_column_types`); a database that registers nothing, or
nothing for a kind, gets the kind's generic SQLAlchemy type.  The dialects register when
`infsched.dialects` is imported, which creating any engine does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa

_T = TypeVar("_T")

#: The type a database uses for a kind of column, or None for the kind's generic type.
ColumnTypeSupplier = Callable[["ColumnKind[Any]"], "sa.types.TypeEngine[Any] | None"]

#: The name of a SQLAlchemy dialect -> the supplier registered for it.
_SUPPLIERS: dict[str, ColumnTypeSupplier] = {}


def supply_column_types(names: Iterable[str], supplier: ColumnTypeSupplier) -> None:
    """Let `supplier` choose the column types where SQLAlchemy's dialect is one of `names`."""
    for name in names:
        _SUPPLIERS[name] = supplier


class ColumnKind(sa.types.TypeDecorator[_T]):
    """A kind of column: its generic type (`impl`), unless the database's dialect supplies one."""

    cache_ok = True

    def load_dialect_impl(self, target: sa.Dialect) -> sa.types.TypeEngine[Any]:
        supplier = _SUPPLIERS.get(target.name)
        supplied = supplier(self) if supplier is not None else None
        if supplied is not None:
            # As supplied, not adapted by type_descriptor: CREATE TABLE compiles what this
            # returns, and psycopg's adaptation turns a TEXT into a VARCHAR.  Statements
            # still get the driver's adapted type (TypeDecorator adapts it for them).
            return supplied
        return target.type_descriptor(self.impl_instance)


class UtcDateTime(ColumnKind[datetime]):
    """A naive UTC date and time, kept to the microsecond."""

    impl = sa.DateTime
    cache_ok = True


class LongText(ColumnKind[str]):
    """Text of up to megabytes (an entity's JSON snapshot), never cut at 64 KiB."""

    impl = sa.Text
    cache_ok = True


class JsonText(LongText):
    """A JSON document, written and read as its text: LongText where the database
    has no JSON type worth its cost, a binary JSON type where it has (PostgreSQL's jsonb)."""

    cache_ok = True


class FixedText(ColumnKind[str]):
    """A string stored at its full width, so that changing it never resizes the row."""

    impl = sa.String
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length


class RowId(ColumnKind[int]):
    """A 64-bit primary key the database numbers itself (auto-increment)."""

    impl = sa.BigInteger
    cache_ok = True
