"""The engine's own tables, as SQLAlchemy Core metadata.

- ``infsched_jobs``: the hot job table.  It holds only jobs waiting in the
  lookahead window, waiting for a retry, or in flight; a finished job is
  deleted from it and its outcome goes to the history repository.
- ``infsched_leases``: named leases (a repository's fetcher, maintenance),
  with an owner and an expiry judged by the database's clock.
- ``infsched_nodes``: one row per scheduler node, with its heartbeat.
- ``infsched_pauses``: pause switches, global (``*``) or per repository,
  stored here so that they hold for every node.
"""

from __future__ import annotations

import sqlalchemy as sa

from infsched.column_types import FixedText, LongText, RowId, UtcDateTime
from infsched.sentinel_time import EPOCH_TEXT, SentinelDateTime

metadata = sa.MetaData()

#: Longest node id: the width of ``infsched_jobs.owner``.
MAX_NODE_ID = 128


class Owner(FixedText):
    """``infsched_jobs.owner``: fixed-width and NOT NULL, '' for nobody; None in Python.

    A claim sets owner and lease on every row it takes.  From NULL to a value
    the row grows, and InnoDB rewrites it (payload and all) instead of
    updating it in place; a fixed-width, never-NULL column is updated in
    place, which halved the claim's UPDATE (about 20 to 10 µs a row).
    """

    cache_ok = True

    def __init__(self) -> None:
        super().__init__(MAX_NODE_ID)

    def process_bind_param(self, value: str | None, dialect: sa.Dialect) -> str:
        return "" if value is None else value

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> str | None:
        return value or None


def unowned() -> tuple[sa.ColumnElement[bool], ...]:
    """Conditions for a job row nobody holds: '' now, NULL in a table made before."""
    return (jobs.c.owner == "", jobs.c.owner.is_(None))


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
    sa.Column("payload", LongText(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    # Claims read one priority at a time, oldest run time first: an index range per priority.
    sa.Index("ix_infsched_jobs_claim", "state", "priority", "run_at"),
    # No index on owner or lease_until: a claim would have to move an entry in each
    # (a third of the claim's cost, docs/performance.md).  Renewal and recovery read
    # the claimed jobs through the claim index's state prefix instead; there are
    # only as many as the nodes have in flight.
    # No index on (repository, entity_id) either: the unique job_key starts with
    # "repository:entity_id:", so `jobs show` finds an entity's jobs by that prefix
    # (jobstore.base.entity_key_prefix), and every insert and delete maintains one
    # index less (about a tenth of the schedule stage, docs/performance.md).
)

leases = sa.Table(
    "infsched_leases",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("owner", Owner(), nullable=False, server_default=""),
    sa.Column("lease_until", SentinelDateTime(), nullable=False, server_default=EPOCH_TEXT),
    # Free-form progress a lease holder leaves for its successor (a fetch watermark).
    sa.Column("state", sa.Text(), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

nodes = sa.Table(
    "infsched_nodes",
    metadata,
    sa.Column("node_id", sa.String(128), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("heartbeat_at", UtcDateTime(), nullable=False),
    sa.Column("in_flight", sa.Integer(), nullable=False, server_default="0"),
    # running | stopping | stopped
    sa.Column("state", sa.String(16), nullable=False, server_default="running"),
)

pauses = sa.Table(
    "infsched_pauses",
    metadata,
    # "*" pauses every repository; otherwise a repository name.
    sa.Column("scope", sa.String(64), primary_key=True),
    sa.Column("paused_by", sa.String(128), nullable=False),
    sa.Column("paused_at", UtcDateTime(), nullable=False),
)


def create_schema(engine: sa.Engine) -> list[str]:
    """Create the tables that do not exist yet; return the names created.

    Idempotent: CREATE TABLE IF NOT EXISTS semantics, so two nodes starting at
    once do not fail.
    """
    inspector = sa.inspect(engine)
    missing = [t.name for t in metadata.sorted_tables if not inspector.has_table(t.name)]
    metadata.create_all(engine, checkfirst=True)
    return missing
