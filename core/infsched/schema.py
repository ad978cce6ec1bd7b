"""The engine's own tables, as SQLAlchemy Core metadata.

The job table is the SQL job store's own (infsched.jobstore.tables); these
are the tables every node needs whichever job store it uses:

- ``infsched_leases``: named leases (a repository's fetcher, maintenance),
  with an owner and an expiry judged by the database's clock.
- ``infsched_nodes``: one row per scheduler node, with its heartbeat.
- ``infsched_pauses``: pause switches, global (``*``) or per repository,
  stored here so that they hold for every node.
- ``infsched_schedules``: the recurring schedules (infsched.schedule_store),
  their definitions, pause flags and how far their occurrences were made jobs.
- ``infsched_limits``: the flow limits (infsched.limit_store) and each one's
  state: its rate's arrival time, a throttled gateway's hold, jobs started.
"""

from __future__ import annotations

import sqlalchemy as sa

from infsched.column_types import FixedText, LongText, UtcDateTime
from infsched.dialects import dialect_for
from infsched.migrations import VERSION_TABLE
from infsched.schema_versions import OLDEST_CODE_TABLE, stamp_new
from infsched.sentinel_time import EPOCH_TEXT, SentinelDateTime

metadata = sa.MetaData()

#: Longest node id: the width of the owner columns (a job's, a lease's).
MAX_NODE_ID = 128


class Owner(FixedText):
    """An owner column (a job's, a lease's): fixed-width, NOT NULL, '' for nobody; None in Python.

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
    # The database member its connections reach ("m2 at db2:3306"); NULL on SQLite.
    sa.Column("database_member", sa.String(255), nullable=True),
)

pauses = sa.Table(
    "infsched_pauses",
    metadata,
    # "*" pauses every repository; otherwise a repository name.
    sa.Column("scope", sa.String(64), primary_key=True),
    sa.Column("paused_by", sa.String(128), nullable=False),
    sa.Column("paused_at", UtcDateTime(), nullable=False),
)


schedules = sa.Table(
    "infsched_schedules",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    # The schedule's plain definition, as JSON (infsched.schedules.Schedule.as_definition).
    sa.Column("definition", LongText(), nullable=False),
    # Who declared it last: config, plugin NAME, cli or api.
    sa.Column("source", sa.String(160), nullable=False),
    sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
    # The latest occurrence made a job; the next materializer goes on after it (None: none yet).
    sa.Column("materialized_until", UtcDateTime(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)


limits = sa.Table(
    "infsched_limits",
    metadata,
    # "executor:NAME", "repository:NAME" or "key:VALUE" (infsched.flow_limits.LimitTarget).
    sa.Column("target", sa.String(240), primary_key=True),
    # Starts per second across the cluster (None: no rate limit), and the burst.
    sa.Column("rate", sa.Double(), nullable=True),
    sa.Column("burst", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("max_concurrent", sa.Integer(), nullable=True),
    # config, executor NAME (its ExecutorSpec), operator (infsched limits set), throttle.
    sa.Column("source", sa.String(160), nullable=False),
    # The rate's theoretical arrival time, microseconds since the epoch (rate_buckets.py).
    sa.Column("tat", sa.BigInteger(), nullable=False, server_default="0"),
    # A throttled gateway holds the target until then (microseconds since the epoch).
    sa.Column("held_until", sa.BigInteger(), nullable=False, server_default="0"),
    # Jobs claimed under the target in all: the dashboard's current rate.
    sa.Column("started", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)


def create_schema(engine: sa.Engine) -> list[str]:
    """Create the tables that do not exist yet; return the names created.

    Idempotent: CREATE TABLE IF NOT EXISTS semantics, so two nodes starting at
    once do not fail. A database without the node's tables is stamped with the
    schema revision of this code first (a 0.1.0 database, which has them, is
    left for `infsched db upgrade`).
    """
    inspector = sa.inspect(engine)
    missing = [t.name for t in metadata.sorted_tables if not inspector.has_table(t.name)]
    if leases.name in missing:
        with engine.begin() as conn:
            stamp_new(conn, dialect_for(engine))
        missing = [VERSION_TABLE, OLDEST_CODE_TABLE, *missing]
    metadata.create_all(engine, checkfirst=True)
    return missing
