"""The day tables and partitioned tables a revision alters, found in the database itself.

Repositories create and drop them with maintenance, so no list of them
exists: a multi_table repository's days are ``PREFIX_YYYYMMDD`` tables, a
partitioned one is one table named after the repository, a scheduled
repository's rows carry the ``infsched_job_at`` mark, and its int ids have
the source ``PREFIX_id_seq`` (`DayShardedRepository.id_source`).
"""

from __future__ import annotations

import re

import attrs
import sqlalchemy as sa
from alembic import context

from infsched.dialects import Dialect

HISTORY = "infsched_history"
JOB_AT = "infsched_job_at"
_DAY_SUFFIX = re.compile(r"^(?P<prefix>.+)_(?P<day>\d{8})$")


def reading() -> tuple[sa.Connection, Dialect]:
    """The connection a revision reads the database through, and its dialect.

    Under ``--sql`` it is the connection to the database being reviewed,
    which the statements are not run on.
    """
    attributes = context.config.attributes
    return attributes["reader"], attributes["dialect"]


def prefix_of(name: str) -> str:
    """A multi_table day table's prefix; a partitioned table's own name."""
    match = _DAY_SUFFIX.match(name)
    return match.group("prefix") if match else name


def table_names(conn: sa.Connection, dialect: Dialect) -> list[str]:
    """The database's tables, without the partitions PostgreSQL lists as tables."""
    partitions = dialect.partition_table_names(conn)
    return [name for name in sa.inspect(conn).get_table_names() if name not in partitions]


def history_tables(conn: sa.Connection, dialect: Dialect) -> list[str]:
    """The history's day tables (SQLite) or its partitioned table (MySQL/MariaDB, PostgreSQL)."""
    return sorted(name for name in table_names(conn, dialect) if prefix_of(name) == HISTORY)


@attrs.frozen
class IdSourced:
    """A scheduled repository's tables whose int id column `column` draws from `source`."""

    source: str
    column: str
    tables: tuple[str, ...]


def id_sourced(conn: sa.Connection, dialect: Dialect) -> list[IdSourced]:
    """The scheduled repositories with int ids, from their tables' mark and primary key."""
    inspector = sa.inspect(conn)
    found: dict[tuple[str, str], list[str]] = {}
    for name in table_names(conn, dialect):
        columns = {c["name"]: c for c in inspector.get_columns(name)}
        if JOB_AT not in columns:
            continue
        # The primary key is the id, with the sharding key beside it where partitioned.
        key = inspector.get_pk_constraint(name)["constrained_columns"]
        ints = [c for c in key if isinstance(columns[c]["type"], sa.Integer)]
        if len(ints) != 1:
            continue
        found.setdefault((f"{prefix_of(name)}_id_seq", ints[0]), []).append(name)
    return [
        IdSourced(source, column, tuple(sorted(tables)))
        for (source, column), tables in sorted(found.items())
    ]


def index_columns(conn: sa.Connection, table: str) -> set[tuple[str, ...]]:
    """The column lists of `table`'s indexes."""
    return {
        tuple(str(c) for c in ix["column_names"] if c is not None)
        for ix in sa.inspect(conn).get_indexes(table)
    }
