"""The probe plugin: an entity and an executor for cluster tests and the cluster benchmark.

Not loaded by default.  The test harness and ``infsched bench --stage
cluster`` install it for the node processes they start, as a distribution
with an ``infsched`` entry point pointing at this module (see
`harness.install_probe_plugin`).

The ``probe`` executor optionally sleeps (simulated work), then records every
call (job key, entity id, node, pid, attempt, due and call time) as one row
in ``probe_calls`` of the database named by ``[plugins.probe] record_url``:
no unique key, so a job run twice shows as two rows.  A schedule's run (its
entity a `ScheduledRun`) is recorded the same way in ``probe_schedule_runs``,
with the schedule's name and the occurrence instead of the entity id.  The call time is the
database's clock.  While that database is unreachable the rows wait in
memory and are written, with their original times, once it is back; the
executor itself never fails because of it.  Without ``record_url`` it
records nothing (a no-op executor for throughput measurements).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.column_types import UtcDateTime
from infsched.database import create_engine
from infsched.dburl import DatabaseUrl
from infsched.dialects import registered_dialect
from infsched.entities import column, id_field, sharding_key
from infsched.errors import UnsupportedDatabaseError
from infsched.executors import ExecutorSpec, JobContext
from infsched.hookspecs import hookimpl
from infsched.schedules import ScheduledRun

log = logging.getLogger("infsched.probe")

ENTITY = "ProbeEntity"
EXECUTOR = "probe"
#: Seconds between attempts to write calls recorded while the database was away.
BACKLOG_RETRY = 0.5


@attrs.define(kw_only=True)
class ProbeEntity:
    """One thing to do at `due`."""

    id: int | None = id_field()
    due: datetime = sharding_key()
    label: str = column(length=32, default="")


calls_metadata = sa.MetaData()
calls = sa.Table(
    "probe_calls",
    calls_metadata,
    sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
    # One per call: a row written again after a commit whose answer was lost (the
    # database went away meanwhile) is ignored, so every row is one real call.
    sa.Column("call_id", sa.String(32), nullable=False, unique=True),
    sa.Column("job_key", sa.String(255), nullable=False, index=True),
    sa.Column("entity_id", sa.BigInteger(), nullable=False, index=True),
    sa.Column("node", sa.String(128), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("due", UtcDateTime(), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    # The entity's label (the flow tests' flow key), and when the call began and
    # ended by the node's clock: the nodes of a test share one machine's clock, and
    # a start needs no round trip to the database.
    sa.Column("label", sa.String(32), nullable=False, server_default=""),
    sa.Column("started", UtcDateTime(), nullable=True),
    sa.Column("ended", UtcDateTime(), nullable=True),
)


schedule_runs = sa.Table(
    "probe_schedule_runs",
    calls_metadata,
    sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String(32), nullable=False, unique=True),
    sa.Column("job_key", sa.String(255), nullable=False),
    sa.Column("schedule", sa.String(128), nullable=False, index=True),
    sa.Column("occurrence", UtcDateTime(), nullable=False),
    sa.Column("node", sa.String(128), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("due", UtcDateTime(), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
)


def create_calls_table(engine: sa.Engine) -> None:
    """Make ``probe_calls`` and ``probe_schedule_runs`` where they are missing."""
    calls_metadata.create_all(engine, checkfirst=True)


class RecordingProbe:
    """The ``probe`` executor: optional work, then one ``probe_calls`` row per call."""

    def __init__(self, record_url: str | None, node: str, sleep: float) -> None:
        self.node = node
        self.sleep = sleep
        self.pid = os.getpid()
        self.engine = None
        if record_url:
            url = DatabaseUrl(record_url)
            if not registered_dialect(url.scheme.dialect).concurrent_writers:
                raise UnsupportedDatabaseError(
                    "[plugins.probe] record_url must name a database several nodes "
                    "write at once (MySQL/MariaDB, PostgreSQL)"
                )
            self.engine = create_engine(url, pool_size=16)
            dialect = registered_dialect(url.scheme.dialect)
            now = dialect.current_timestamp()
            assert now is not None  # a database of concurrent writers keeps the time
            self._now = now
            # A call already made is skipped (its earlier write committed, the answer lost).
            self._inserts = {
                table.name: dialect.insert_ignore(table, ["call_id"])
                for table in (calls, schedule_runs)
            }
        self._lock = threading.Lock()
        #: (table name, row, monotonic time of the call) not written yet.
        self._backlog: list[tuple[str, dict[str, Any], float]] = []
        self._writer: threading.Thread | None = None

    def __call__(self, job: JobContext[ProbeEntity | ScheduledRun]) -> None:
        started = datetime.now(UTC)
        if self.sleep:
            time.sleep(self.sleep)
        if self.engine is None:
            return
        row: dict[str, Any] = {
            "call_id": uuid.uuid4().hex,
            "job_key": job.job_key,
            "node": self.node,
            "pid": self.pid,
            "attempt": job.attempt,
            "due": job.due_at.replace(tzinfo=None),
        }
        entity = job.entity
        if isinstance(entity, ScheduledRun):
            table = schedule_runs.name
            row.update(schedule=entity.schedule, occurrence=entity.occurrence.replace(tzinfo=None))
        else:
            table = calls.name
            row.update(
                entity_id=entity.id,
                label=entity.label,
                started=started.replace(tzinfo=None),
                ended=datetime.now(UTC).replace(tzinfo=None),
            )
        called = time.monotonic()
        with self._lock:
            waiting = bool(self._backlog)
        if not waiting:
            try:
                with self.engine.begin() as conn:
                    conn.execute(self._inserts[table].values(at=self._now), [row])
                return
            except sa.exc.DBAPIError:
                pass
        with self._lock:
            self._backlog.append((table, row, called))
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_backlog, name="probe-backlog", daemon=True
                )
                self._writer.start()

    def _write_backlog(self) -> None:
        assert self.engine is not None
        while True:
            with self._lock:
                rows = list(self._backlog)
            try:
                with self.engine.begin() as conn:
                    # Each call's time is the database's now less how long ago it was made.
                    db_now = conn.execute(sa.select(self._now)).scalar_one()
                    now = time.monotonic()
                    for name, insert in self._inserts.items():
                        params = [
                            {**row, "at": db_now - timedelta(seconds=now - called)}
                            for table, row, called in rows
                            if table == name
                        ]
                        if params:
                            conn.execute(insert, params)
            except sa.exc.DBAPIError:
                time.sleep(BACKLOG_RETRY)
                continue
            with self._lock:
                del self._backlog[: len(rows)]
                if not self._backlog:
                    self._writer = None
                    return


def _probe(section: Mapping[str, Any]) -> RecordingProbe:
    return RecordingProbe(
        record_url=section.get("record_url"),
        node=str(section.get("node", f"pid-{os.getpid()}")),
        sleep=float(section.get("sleep", 0.0)),
    )


@hookimpl
def register_entity_types() -> Iterable[type]:
    return [ProbeEntity]


@hookimpl
def register_executors() -> Iterable[ExecutorSpec]:
    return [
        ExecutorSpec(
            name=EXECUTOR,
            factory=_probe,
            description="records every call in probe_calls (cluster tests and benchmark)",
        )
    ]
