"""0.5.0: the database member each node uses, ``infsched_nodes.database_member``.

A node may reach its database through several members (a Galera cluster);
its heartbeat records the one in use, which `infsched nodes` and the dashboard
show.  Only adds a column that may be NULL, so 0.4.0 code runs on the result
(its inserts name their columns and it never reads this one), and the upgrade
can run while 0.4.0 nodes do.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from infsched.migrations.day_tables import reading

revision = "r0005"
down_revision = "r0004"
branch_labels = None
depends_on = None

release = "0.5.0"
older_code_compatible = True

NODES = "infsched_nodes"
COLUMN = "database_member"


def upgrade() -> None:
    conn, _dialect = reading()
    inspector = sa.inspect(conn)
    if not inspector.has_table(NODES):
        return
    if COLUMN not in {c["name"] for c in inspector.get_columns(NODES)}:
        op.add_column(NODES, sa.Column(COLUMN, sa.String(255), nullable=True))
