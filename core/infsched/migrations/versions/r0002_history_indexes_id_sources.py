"""0.2.0: history indexes for `jobs history`, id sources for rows other applications write.

- every history day table (partitioned table on MySQL/MariaDB, PostgreSQL) gets the
  indexes ``(state, finished_at, id)`` and ``(repository, finished_at, id)``;
- every scheduled repository with int ids gets its id source
  ``PREFIX_id_seq`` (a sequence on MariaDB, a counter table elsewhere), and
  on MariaDB each of its tables' id column defaults to the sequence.

Each table is checked before it is altered, so a run that stopped halfway
is run again to finish. Code of 0.1.0 runs on the result (it only adds).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from infsched.migrations.day_tables import history_tables, id_sourced, index_columns, reading

revision = "r0002"
down_revision = "r0001"
branch_labels = None
depends_on = None

release = "0.2.0"
older_code_compatible = True

#: The top of the ids a source hands out, below every generated id (2**40 - 1; a
#: revision keeps the value of its day, not the repositories' current one).
DATABASE_IDS_MAX = 1_099_511_627_775

#: The indexes `jobs history` reads (the suffix of their names, their columns).
HISTORY_INDEXES = {
    "repository_by_key": ("repository", "finished_at", "id"),
    "state_by_key": ("state", "finished_at", "id"),
}


def upgrade() -> None:
    conn, dialect = reading()
    for name in history_tables(conn, dialect):
        present = index_columns(conn, name)
        for suffix, columns in HISTORY_INDEXES.items():
            if columns in present:
                continue
            table = sa.Table(name, sa.MetaData(), *(sa.Column(c) for c in columns))
            index = sa.Index(f"ix_{name}_{suffix}", *(table.c[c] for c in columns))
            op.execute(dialect.add_index_statement(conn, index))
    existing = set(sa.inspect(conn).get_table_names())
    for sourced in id_sourced(conn, dialect):
        if sourced.source not in existing:
            for statement in dialect.id_source_statements(conn, sourced.source, DATABASE_IDS_MAX):
                op.execute(statement)
        for statement in dialect.default_ids_statements(
            conn, sourced.source, sourced.tables, sourced.column
        ):
            op.execute(statement)
