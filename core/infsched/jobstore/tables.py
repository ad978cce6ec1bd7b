"""The SQL job store's table, ``infsched_jobs``: the hot job table.

It holds only jobs waiting in the lookahead window, waiting for a retry, or
in flight; a finished job is deleted from it and its outcome goes to the
history repository.  Only the SQL job store's modules (this package) read or
write it; everything else goes through the `JobStore` protocol.  It has its
own metadata: a node on another job store never creates it.
"""

from __future__ import annotations

import sqlalchemy as sa

from infsched.column_types import JsonText, RowId, UtcDateTime
from infsched.flow_limits import LimitScope
from infsched.jobstore.base import FLOW_KEY_LENGTH
from infsched.schema import Owner
from infsched.sentinel_time import EPOCH_TEXT, SentinelDateTime

metadata = sa.MetaData()

CLAIM_INDEX = "ix_infsched_jobs_claim"
CLAIM_INDEX_COLUMNS = ("state", "priority", "repository", "executor", "flow_key", "run_at")

jobs = sa.Table(
    "infsched_jobs",
    metadata,
    sa.Column(
        "id",
        RowId(),
        primary_key=True,
        autoincrement=True,
    ),
    # Unique per (repository, entity id, due time): the idempotency key of the job.
    sa.Column("job_key", sa.String(255), nullable=False, unique=True),
    sa.Column("repository", sa.String(48), nullable=False),
    sa.Column("executor", sa.String(48), nullable=False),
    sa.Column("entity_id", sa.String(191), nullable=False),
    sa.Column("due_at", UtcDateTime(), nullable=False),
    # When the job may next run: its due time, or later for a retry.
    sa.Column("run_at", UtcDateTime(), nullable=False),
    sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
    # waiting | claimed
    sa.Column("state", sa.String(16), nullable=False, server_default="waiting"),
    # Runs started so far (a claim counts one).
    sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("owner", Owner(), nullable=False, server_default=""),
    sa.Column("lease_until", SentinelDateTime(), nullable=False, server_default=EPOCH_TEXT),
    # The entity's JSON snapshot (jsonb on PostgreSQL).
    sa.Column("payload", JsonText(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    # The value of the entity field its repository names as flow_key ('' for none):
    # limits and fair shares apply per lane, (repository, executor, flow_key).  Last,
    # where the 0.4.0 upgrade adds it to an existing table.
    sa.Column("flow_key", sa.String(FLOW_KEY_LENGTH), nullable=False, server_default=""),
    # Claims read one priority and lane at a time, oldest run time first: an index
    # range per (priority, lane), so a lane held back by its limit is skipped, not
    # scanned, and the lanes of a priority can take turns (docs/flow-control.md).
    sa.Index(CLAIM_INDEX, *CLAIM_INDEX_COLUMNS),
    # No index on owner or lease_until: a claim would have to move an entry in each
    # (a third of the claim's cost, docs/performance.md).  Renewal and recovery read
    # the claimed jobs through the claim index's state prefix instead; there are
    # only as many as the nodes have in flight.
    # No index on (repository, entity_id) either: the unique job_key starts with
    # "repository:entity_id:", so `jobs show` finds an entity's jobs by that prefix
    # (jobstore.base.entity_key_prefix), and every insert and delete maintains one
    # index less (about a tenth of the schedule stage, docs/performance.md).
)


#: The job column each scope of limit target names (infsched.flow_limits.LimitTarget).
SCOPE_COLUMNS = {
    LimitScope.EXECUTOR: jobs.c.executor,
    LimitScope.REPOSITORY: jobs.c.repository,
    LimitScope.KEY: jobs.c.flow_key,
}


def unowned() -> tuple[sa.ColumnElement[bool], ...]:
    """Conditions for a job row nobody holds: '' now, NULL in a table made before."""
    return (jobs.c.owner == "", jobs.c.owner.is_(None))


def create_job_tables(engine: sa.Engine) -> list[str]:
    """Create the job table if it does not exist yet; the names created (as schema's)."""
    missing = missing_job_tables(engine)
    metadata.create_all(engine, checkfirst=True)
    return missing


def missing_job_tables(engine: sa.Engine) -> list[str]:
    inspector = sa.inspect(engine)
    return [t.name for t in metadata.sorted_tables if not inspector.has_table(t.name)]
