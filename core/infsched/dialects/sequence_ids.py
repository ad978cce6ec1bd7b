"""Ids from a SEQUENCE that is the id column's DEFAULT in each of a repository's tables.

MariaDB and PostgreSQL both have sequences, so a plain ``INSERT`` that leaves
out the id gets the next one.  They differ only in how the SQL is spelled
(`create_statement`, `next_value`, how information_schema shows the default,
how to read the sequence's top); finding the tables that lack the default,
setting it, and saying what is wrong are shared here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import sqlalchemy as sa


def quote(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


class SequenceIds(ABC):
    """One database's spelling of sequence-backed ids, and what follows from it."""

    @abstractmethod
    def create_statement(self, conn: sa.Connection, name: str, maximum: int) -> str:
        """``CREATE SEQUENCE IF NOT EXISTS`` for ids 1..`maximum`, never cycling."""

    @abstractmethod
    def next_value(self, conn: sa.Connection, name: str) -> str:
        """The SQL expression drawing the next id, as a column DEFAULT."""

    @abstractmethod
    def draws_from(self, default: str | None, name: str) -> bool:
        """Whether a column default, as information_schema shows it, draws from `name`."""

    @abstractmethod
    def top(self, conn: sa.Connection, name: str) -> int | None:
        """The highest id sequence `name` may hand out; None if it does not exist."""

    def create(self, conn: sa.Connection, name: str, maximum: int) -> None:
        # exec_driver_sql: nothing in these statements is a bind parameter.
        conn.exec_driver_sql(self.create_statement(conn, name, maximum))

    def defaults(
        self, conn: sa.Connection, tables: Sequence[str], column: str
    ) -> dict[str, str | None]:
        """Each table's DEFAULT of `column`, as information_schema shows it, in `tables`' order.

        information_schema lists the tables in an order of its own, which changed
        from one day to the next: an upgrade alters them in the order given.
        """
        if not tables:
            return {}
        rows = conn.execute(
            sa.text(
                "SELECT table_name, column_default FROM information_schema.columns "
                "WHERE table_schema = :schema AND column_name = :column "
                "AND table_name IN :tables"
            ).bindparams(sa.bindparam("tables", expanding=True)),
            {"schema": conn.dialect.default_schema_name, "column": column, "tables": list(tables)},
        )
        found = {str(table): default for table, default in rows}
        return {table: found[table] for table in tables if table in found}

    def missing_defaults(
        self, conn: sa.Connection, name: str, tables: Sequence[str], column: str
    ) -> list[tuple[str, str]]:
        """(table, ALTER statement) for each table whose `column` does not draw from `name`."""
        # A metadata change on both databases (no table rewrite), also on older tables.
        return [
            (
                table,
                f"ALTER TABLE {quote(conn, table)} ALTER COLUMN {quote(conn, column)} "
                f"SET DEFAULT {self.next_value(conn, name)}",
            )
            for table, default in self.defaults(conn, tables, column).items()
            if not self.draws_from(default, name)
        ]

    def set_defaults(
        self, conn: sa.Connection, name: str, tables: Sequence[str], column: str
    ) -> list[str]:
        """Make `column` of `tables` draw from `name`; the tables changed."""
        changed = []
        for table, statement in self.missing_defaults(conn, name, tables, column):
            conn.exec_driver_sql(statement)
            changed.append(table)
        return changed

    def problems(
        self, conn: sa.Connection, name: str, maximum: int, tables: Sequence[str], column: str
    ) -> list[str]:
        """What keeps sequence `name` from handing out ids 1..`maximum` to `tables`."""
        top = self.top(conn, name)
        if top is None:
            return [f"id sequence {name!r} is missing: `infsched partitions maintain` makes it"]
        found = []
        if top > maximum:
            found.append(
                f"id sequence {name!r} goes up to {top}, beyond {maximum}: its ids may meet "
                "those infsched generates"
            )
        for table, default in sorted(self.defaults(conn, tables, column).items()):
            if not self.draws_from(default, name):
                found.append(
                    f"table {table!r}: column {column!r} does not default to "
                    f"{self.next_value(conn, name)} (default {default}); "
                    "`infsched partitions maintain` sets it"
                )
        return found
