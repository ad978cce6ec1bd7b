"""SqlJobStore: the job store on MySQL/MariaDB or SQLite, in batches.

Every hot-path statement handles a batch: one multi-row INSERT IGNORE per
fetch batch, one claim (SELECT … FOR UPDATE SKIP LOCKED + UPDATE) per claim
batch, one transaction per batch of finished jobs.

Claims never queue on a global lock row.  They read the claim index one
priority at a time (``state, priority, run_at``), so a claim locks exactly
the rows it takes; SKIP LOCKED lets other nodes take the next ones.  Lease
expiry is judged by the database's clock (``UTC_TIMESTAMP(6)``), so a node
whose own clock is off neither steals nor loses jobs.  SQLite has one writer
at a time, and every SQLite transaction holds the write lock from its
start (dialects/sqlite.py), so there the read and the write of a claim
cannot interleave with another node's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from infsched.clock import as_utc, utc_naive
from infsched.database import Database
from infsched.id_lists import id_in
from infsched.jobstore import sql_recovery
from infsched.jobstore.base import (
    COPY_COLUMNS,
    ClaimedJob,
    Finished,
    FlowRules,
    HistoryWriter,
    JobState,
    LaneCount,
    NewJob,
    Outcome,
    StateCount,
)
from infsched.jobstore.counts import job_counts, lane_counts
from infsched.jobstore.sql_claims import LaneClaims
from infsched.jobstore.sql_inspect import SqlJobInspection
from infsched.jobstore.tables import create_job_tables, jobs, missing_job_tables, unowned
from infsched.schema import create_schema

_WAITING = JobState.WAITING.value
_CLAIMED = JobState.CLAIMED.value
_DEAD = JobState.DEAD.value
#: Longest error text kept on a job row.
MAX_ERROR = 4000


class SqlJobStore(SqlJobInspection):
    """The built-in job store (``sql``); its management queries are SqlJobInspection's."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._engine = database.engine
        self._dialect = database.dialect
        # Only SQLite (one node) reads the node's clock; MySQL reads UTC_TIMESTAMP(6).
        self._clock = database.clock
        # preserve_rowcount: an INSERT's count survives its closed cursor (psycopg resets it).
        self._insert_ignore = self._dialect.insert_ignore(jobs, ["job_key"]).execution_options(
            preserve_rowcount=True
        )
        self._claims = LaneClaims(self._dialect, self.db_now)

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    @property
    def job_rows(self) -> sa.FromClause:
        return jobs

    def create_schema(self) -> list[str]:
        return [*create_job_tables(self._engine), *create_schema(self._engine)]

    def missing_tables(self) -> list[str]:
        return missing_job_tables(self._engine)

    # -- time --

    def db_now(self, conn: sa.Connection) -> datetime:
        """The database's clock (UTC); the node's clock on SQLite."""
        expr = self._dialect.current_timestamp()
        if expr is None:
            return self._clock.now()
        value = conn.execute(sa.select(expr)).scalar_one()
        return as_utc(value)

    # -- fetcher side --

    def add_jobs(self, conn: sa.Connection, new_jobs: Sequence[NewJob]) -> int:
        if not new_jobs:
            return 0
        created = utc_naive(self._clock.now())
        rows = [
            {
                "job_key": j.job_key,
                "repository": j.repository,
                "executor": j.executor,
                "entity_id": j.entity_id,
                "due_at": utc_naive(j.due_at),
                "run_at": utc_naive(j.due_at),
                "priority": j.priority,
                "flow_key": j.flow_key,
                "state": _WAITING,
                "attempt": 0,
                "payload": j.payload,
                "created_at": created,
            }
            for j in new_jobs
        ]
        result = conn.execute(self._insert_ignore, rows)
        return max(result.rowcount, 0)

    #: The columns `add_jobs_from` expects its SELECT to produce, in order.
    COPY_COLUMNS = COPY_COLUMNS

    def add_jobs_from(self, conn: sa.Connection, rows: sa.Select[Any]) -> int:
        """INSERT … SELECT jobs from rows of the same database, ignoring existing keys.

        The rows never travel through Python: this is how a fetcher on the job
        store's own database moves a batch (see engine/fetcher.py).
        """
        # A snapshot selected as text goes into a jsonb column only cast (PostgreSQL).
        selected = list(rows.selected_columns)
        at = self.COPY_COLUMNS.index("payload")
        payload = self._dialect.json_column_value(selected[at])
        if payload is not selected[at]:
            selected[at] = payload
            rows = rows.with_only_columns(*selected, maintain_column_froms=True)
        statement = self._insert_ignore.from_select(list(self.COPY_COLUMNS), rows)
        result = conn.execute(statement)
        return max(result.rowcount, 0)

    def add_jobs_due_now(self, conn: sa.Connection, new_jobs: Sequence[NewJob]) -> None:
        self.add_jobs(conn, new_jobs)
        for job in new_jobs:
            conn.execute(
                jobs.update()
                .where(jobs.c.job_key == job.job_key, jobs.c.state == _WAITING)
                .values(run_at=utc_naive(self.db_now(conn)))
            )

    # -- worker side --

    def claim_due(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        repositories: Sequence[str],
        flow: FlowRules | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to `limit` due jobs of `repositories`: highest priority first, the
        lanes of a priority taking turns, within the flow limits (jobstore/sql_claims.py)."""
        if limit <= 0 or not repositories:
            return []
        claimed = self._claims.claim(self._engine, owner, limit, lease_seconds, repositories, flow)
        if not claimed:
            self._claims.forget_lanes()  # nothing due: look again next time
        return claimed

    def finish(self, owner: str, results: Sequence[Finished], write_history: HistoryWriter) -> int:
        """Record outcomes in one transaction: history rows, then the hot table.

        Done jobs are deleted; failed ones wait for their retry time; dead ones
        stay as dead letters.  Rows this node no longer owns (its lease expired
        and another node took the job) are left alone, and so is a row claimed
        again since (a higher attempt), even by this node: an outcome that came
        too late must not delete or reschedule the run that replaced it.

        Returns how many outcomes found their job row gone or claimed again:
        those jobs run (or ran) again elsewhere.
        """
        if not results:
            return 0
        mine = sa.or_(jobs.c.owner == owner, *unowned())
        done: dict[int, list[int]] = defaultdict(list)
        for r in results:
            if r.outcome.ends_job:
                done[r.job.attempt].append(r.job.id)
        # Retries wait again until their retry time; dead letters keep their run time.
        kept = [
            {
                "b_id": r.job.id,
                "b_state": _WAITING if r.outcome is Outcome.FAILED else _DEAD,
                "b_run_at": utc_naive(r.retry_at if r.retry_at is not None else r.job.run_at),
                "b_error": _trim(r.error),
                "b_attempt": r.job.attempt,
            }
            for r in results
            if r.outcome is Outcome.DEAD or (r.outcome is Outcome.FAILED and r.retry_at)
        ]
        stale = 0
        with self._engine.begin() as conn:
            write_history(conn, results)
            for attempt, ids in done.items():
                deleted = conn.execute(
                    jobs.delete().where(id_in(jobs.c.id, ids), jobs.c.attempt == attempt, mine)
                ).rowcount
                stale += len(ids) - deleted
            if kept:
                updated = conn.execute(
                    jobs.update()
                    .where(
                        jobs.c.id == sa.bindparam("b_id"),
                        jobs.c.attempt == sa.bindparam("b_attempt"),
                        mine,
                    )
                    .values(
                        state=sa.bindparam("b_state"),
                        owner=None,
                        lease_until=None,
                        run_at=sa.bindparam("b_run_at"),
                        last_error=sa.bindparam("b_error"),
                    ),
                    kept,
                ).rowcount
                stale += len(kept) - updated
        return stale

    def release(self, owner: str, job_ids: Sequence[int]) -> int:
        """Give claimed-but-unstarted jobs back; the claim does not count as an attempt."""
        if not job_ids:
            return 0
        with self._engine.begin() as conn:
            result = conn.execute(
                jobs.update()
                .where(id_in(jobs.c.id, job_ids), jobs.c.owner == owner)
                .values(state=_WAITING, owner=None, lease_until=None, attempt=jobs.c.attempt - 1)
            )
        return result.rowcount

    def defer(self, owner: str, deferred: Sequence[tuple[int, datetime]]) -> int:
        if not deferred:
            return 0
        with self._engine.begin() as conn:
            result = conn.execute(
                jobs.update()
                .where(
                    jobs.c.id == sa.bindparam("b_id"),
                    jobs.c.owner == owner,
                    jobs.c.state == _CLAIMED,
                )
                .values(
                    state=_WAITING,
                    owner=None,
                    lease_until=None,
                    attempt=jobs.c.attempt - 1,
                    run_at=sa.bindparam("b_run_at"),
                ),
                [{"b_id": i, "b_run_at": utc_naive(at)} for i, at in deferred],
            )
        return result.rowcount

    def renew_leases(self, owner: str, job_ids: Sequence[int], lease_seconds: float) -> int:
        if not job_ids:
            return 0
        with self._engine.begin() as conn:
            until = utc_naive(self.db_now(conn)) + timedelta(seconds=lease_seconds)
            result = conn.execute(
                jobs.update()
                .where(id_in(jobs.c.id, job_ids), jobs.c.owner == owner, jobs.c.state == _CLAIMED)
                .values(lease_until=until)
            )
        return result.rowcount

    def still_held(
        self, conn: sa.Connection, owner: str, claims: Sequence[tuple[int, int]]
    ) -> set[int]:
        return sql_recovery.still_held(conn, owner, claims)

    def recover_expired(self) -> int:
        return sql_recovery.recover_expired(self.database)

    def reclaim_own(self, owner: str) -> int:
        return sql_recovery.reclaim_own(self.database, owner)

    # -- gauges, statistics, the dashboard --

    def count_jobs(
        self,
        conn: sa.Connection,
        now: datetime,
        *,
        horizon: datetime | None = None,
        owner: str | None = None,
        repositories: Sequence[str] | None = None,
    ) -> list[StateCount]:
        return job_counts(conn, now, horizon=horizon, owner=owner, repositories=repositories)

    def count_lanes(
        self, conn: sa.Connection, now: datetime, *, targets: Collection[str] | None = None
    ) -> list[LaneCount]:
        return lane_counts(conn, now, targets=targets)


def _trim(error: str | None) -> str | None:
    if error is None or len(error) <= MAX_ERROR:
        return error
    return error[: MAX_ERROR - 1] + "…"
