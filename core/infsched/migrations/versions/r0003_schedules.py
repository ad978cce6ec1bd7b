"""0.3.0: the recurring schedules' table, ``infsched_schedules``.

Only adds a table, so code of 0.2.0 runs on the result (it never reads it), and
the upgrade can run while 0.2.0 nodes do. The table is declared here as it was
in this release, not imported: a later release's shape must not change what
this revision made.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from infsched.column_types import LongText, UtcDateTime
from infsched.migrations.day_tables import reading

revision = "r0003"
down_revision = "r0002"
branch_labels = None
depends_on = None

release = "0.3.0"
older_code_compatible = True

TABLE = "infsched_schedules"


def upgrade() -> None:
    conn, _dialect = reading()
    if sa.inspect(conn).has_table(TABLE):
        return  # made by a run that stopped before recording the revision, or by `db init`
    op.create_table(
        TABLE,
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("definition", LongText(), nullable=False),
        sa.Column("source", sa.String(160), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("materialized_until", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
