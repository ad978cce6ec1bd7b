"""0.4.0: flow control, the limits table and the jobs' lanes.

- ``infsched_limits``: the flow limits and each one's state;
- ``infsched_jobs.flow_key`` (NOT NULL, '' for none);
- the claim index becomes ``(state, priority, repository, executor, flow_key,
  run_at)``: claims read one lane at a time.

Not compatible with 0.3.0 code: its claim, reading the new index for a
priority's oldest rows, would sort every due row of the priority and lock each
one it reads. Stop the cluster, upgrade, start the new release
(docs/upgrading.md). Each step is checked before it runs, so an upgrade that
stopped halfway is run again to finish (MariaDB's DDL is not transactional).
The tables are declared here as they were in this release, not imported.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from infsched.column_types import UtcDateTime
from infsched.migrations.day_tables import index_columns, reading

revision = "r0004"
down_revision = "r0003"
branch_labels = None
depends_on = None

release = "0.4.0"
older_code_compatible = False

JOBS = "infsched_jobs"
LIMITS = "infsched_limits"
CLAIM_INDEX = "ix_infsched_jobs_claim"
OLD_CLAIM = ("state", "priority", "run_at")
NEW_CLAIM = ("state", "priority", "repository", "executor", "flow_key", "run_at")


def upgrade() -> None:
    conn, dialect = reading()
    inspector = sa.inspect(conn)
    if not inspector.has_table(LIMITS):
        op.create_table(
            LIMITS,
            sa.Column("target", sa.String(240), primary_key=True),
            sa.Column("rate", sa.Double(), nullable=True),
            sa.Column("burst", sa.Integer(), nullable=False, server_default="1"),
            sa.Column("max_concurrent", sa.Integer(), nullable=True),
            sa.Column("source", sa.String(160), nullable=False),
            sa.Column("tat", sa.BigInteger(), nullable=False, server_default="0"),
            sa.Column("held_until", sa.BigInteger(), nullable=False, server_default="0"),
            sa.Column("started", sa.BigInteger(), nullable=False, server_default="0"),
            sa.Column("updated_at", UtcDateTime(), nullable=False),
        )
    if not inspector.has_table(JOBS):
        return  # a node on another job store: no job table to alter
    if "flow_key" not in {c["name"] for c in inspector.get_columns(JOBS)}:
        op.add_column(
            JOBS, sa.Column("flow_key", sa.String(191), nullable=False, server_default="")
        )
    present = index_columns(conn, JOBS)
    if NEW_CLAIM in present:
        return
    names = {i["name"] for i in sa.inspect(conn).get_indexes(JOBS)}
    if CLAIM_INDEX in names:
        # The old index goes first: the new one takes its name.
        op.drop_index(CLAIM_INDEX, table_name=JOBS)
    table = sa.Table(JOBS, sa.MetaData(), *(sa.Column(c) for c in NEW_CLAIM))
    op.execute(
        dialect.add_index_statement(conn, sa.Index(CLAIM_INDEX, *(table.c[c] for c in NEW_CLAIM)))
    )
