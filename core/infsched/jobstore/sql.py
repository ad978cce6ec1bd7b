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

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from operator import itemgetter
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
    HistoryWriter,
    JobState,
    NewJob,
    Outcome,
    StateCount,
)
from infsched.jobstore.counts import job_counts
from infsched.jobstore.sql_inspect import SqlJobInspection
from infsched.jobstore.tables import create_job_tables, jobs, missing_job_tables, unowned
from infsched.schema import create_schema

_WAITING = JobState.WAITING.value
_CLAIMED = JobState.CLAIMED.value
_DEAD = JobState.DEAD.value
#: What a claim reads of each job, in this order.
_CLAIMED_COLUMNS = (
    jobs.c.id,
    jobs.c.job_key,
    jobs.c.repository,
    jobs.c.executor,
    jobs.c.entity_id,
    jobs.c.due_at,
    jobs.c.run_at,
    jobs.c.attempt,
    jobs.c.payload,
)
_DUE_AT, _RUN_AT = 5, 6
#: Seconds the set of waiting priorities is reused between claims.
PRIORITY_TTL = 1.0
#: Distinct priorities read one by one before a single SELECT DISTINCT is cheaper.
MAX_PRIORITY_PROBES = 16
#: Longest error text kept on a job row.
MAX_ERROR = 4000


#: What a claim found: the database's clock, each priority's rows, and what to add
#: to a row's attempt to count the claim.
_Claim = tuple[datetime, list[tuple[int, Sequence[Any]]], int]


def _utc_text(text: str) -> datetime:
    """A DATETIME column read as text (naive UTC) as an aware datetime."""
    return datetime.fromisoformat(text + "+00:00")


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
        self._priority_values: tuple[int, ...] = ()
        self._priorities_read_at = float("-inf")

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
        self, owner: str, limit: int, lease_seconds: float, repositories: Sequence[str]
    ) -> list[ClaimedJob]:
        """Claim up to `limit` due jobs of `repositories`: highest priority, then oldest first."""
        if limit <= 0 or not repositories:
            return []
        with self._engine.begin() as conn:
            claimed = self._claim_returning(conn, owner, limit, lease_seconds, repositories)
            if claimed is None:
                claimed = self._claim_then_update(conn, owner, limit, lease_seconds, repositories)
        now, batches, bump = claimed
        if not batches:
            self._priorities_read_at = float("-inf")  # nothing due: look again next time
            return []
        # Unpacked as tuples: a Row's attribute lookup by name cost more than the rest.
        return [
            ClaimedJob(
                id=job_id,
                job_key=key,
                repository=repository,
                executor=executor,
                entity_id=entity_id,
                due_at=_utc_text(due_at),
                run_at=_utc_text(run_at),
                priority=priority,
                attempt=attempt + bump,
                snapshot=snapshot,
                claimed_at=now,
            )
            for priority, found in batches
            for (
                job_id,
                key,
                repository,
                executor,
                entity_id,
                due_at,
                run_at,
                attempt,
                snapshot,
            ) in found
        ]

    def _due(
        self, priority: int, limit: int, repositories: Sequence[str], now: sa.ColumnElement[Any]
    ) -> sa.Select[Any]:
        """The waiting jobs of `priority` due by `now`, oldest first (no columns yet)."""
        query = (
            sa.select()
            .where(jobs.c.state == _WAITING, jobs.c.priority == priority, jobs.c.run_at <= now)
            .order_by(jobs.c.run_at)
            .limit(limit)
        )
        if len(repositories) == 1:
            return query.where(jobs.c.repository == repositories[0])
        return query.where(jobs.c.repository.in_(list(repositories)))

    def _claim_returning(
        self,
        conn: sa.Connection,
        owner: str,
        limit: int,
        lease_seconds: float,
        repositories: Sequence[str],
    ) -> _Claim | None:
        """Claim with one statement per priority: an UPDATE of the rows a locking SELECT
        skipping locked ones finds, returning them as one JSON document with the clock.

        None where the database has no data-modifying CTE (`Dialect.returning_rows`).
        On PostgreSQL it saved the claim's second pass over the rows (the UPDATE
        by an id list) and its round trips.
        """
        dialect = self._dialect
        clock = dialect.current_timestamp()
        if clock is None:
            return None
        now: datetime | None = None
        batches: list[tuple[int, Sequence[Any]]] = []
        taken = 0
        for priority in self._priorities(conn):
            locked = dialect.lock_skipping_locked(
                self._due(priority, limit - taken, repositories, clock).add_columns(jobs.c.id)
            ).subquery("due")
            update = (
                jobs.update()
                .where(jobs.c.id == locked.c.id)
                .values(
                    state=_CLAIMED,
                    owner=owner,
                    lease_until=clock + sa.literal(timedelta(seconds=lease_seconds)),
                    attempt=jobs.c.attempt + 1,
                )
                .returning(*_CLAIMED_COLUMNS)
            )
            claimed = dialect.returning_rows(update, "claimed")
            if claimed is None:
                return None
            values = [claimed.c[c.name] for c in _CLAIMED_COLUMNS[:-1]]
            document = sa.select(
                sa.func.count(),
                dialect.json_array_agg(
                    dialect.json_array(*values, dialect.json_document(claimed.c.payload))
                ),
                clock,
            ).select_from(claimed)
            count, text, read_at = conn.execute(document).one()
            now = now or as_utc(read_at)
            if not count:
                continue
            rows: list[Any] = json.loads(text)
            rows.sort(key=itemgetter(_RUN_AT))
            batches.append((priority, rows))
            taken += len(rows)
            if taken >= limit:
                break
        # The attempt came back already counted.
        return (now or self.db_now(conn)), batches, 0

    def _claim_then_update(
        self,
        conn: sa.Connection,
        owner: str,
        limit: int,
        lease_seconds: float,
        repositories: Sequence[str],
    ) -> _Claim:
        """Claim with a locking SELECT per priority, then one UPDATE of the ids it locked."""
        # The database's clock, read once per claim: selected with every row it
        # cost a DATETIME parse per job, far more than this round trip.
        now = self.db_now(conn)
        naive_now = utc_naive(now)
        rows: list[Any] = []  # Rows of _CLAIMED_COLUMNS, unpacked below
        # Each priority's rows: the priority is the query's, not read per row.
        batches: list[tuple[int, Sequence[Any]]] = []
        for priority in self._priorities(conn):
            query = self._due(
                priority, limit - len(rows), repositories, sa.literal(naive_now, jobs.c.run_at.type)
            ).add_columns(*_CLAIMED_COLUMNS)
            found = self._lock_rows(conn, self._dialect.lock_skipping_locked(query))
            if found:
                batches.append((priority, found))
            rows.extend(found)
            if len(rows) >= limit:
                break
        if rows:
            lease_until = naive_now + timedelta(seconds=lease_seconds)
            conn.execute(
                jobs.update()
                .where(id_in(jobs.c.id, [r[0] for r in rows]))
                .values(
                    state=_CLAIMED,
                    owner=owner,
                    lease_until=lease_until,
                    attempt=jobs.c.attempt + 1,
                )
            )
        # The attempt was read before the UPDATE counted it.
        return now, batches, 1

    def _lock_rows(self, conn: sa.Connection, query: sa.Select[Any]) -> list[Any]:
        """The rows `query` locks, each a list of _CLAIMED_COLUMNS with the snapshot decoded.

        They come back as one JSON document (the locking SELECT runs inside an
        aggregate): PyMySQL parsed a thousand 9-column rows in pure Python, a
        fifth of a node's CPU in the execute benchmark, where one json.loads of
        the batch, snapshots included, is C.  Times are text in the document
        ("YYYY-MM-DD HH:MM:SS.ffffff", naive UTC), which _utc_text reads.  A
        document the database cut short (at its aggregate length limit,
        `Dialect.aggregate_length_setting`) is read again row by row: the rows
        are this transaction's by now.
        """
        locked = query.subquery()
        dialect = self._dialect
        values = [locked.c[c.name] for c in _CLAIMED_COLUMNS[:-1]]
        document = sa.select(
            sa.func.count(),
            dialect.json_array_agg(
                dialect.json_array(*values, dialect.json_document(locked.c.payload))
            ),
        )
        count, text = conn.execute(document).one()
        if not count:
            return []
        try:
            rows: list[Any] = json.loads(text)
        except ValueError:
            rows = []
        if len(rows) != count:
            rows = [
                [*row[:_DUE_AT], str(row[_DUE_AT]), str(row[_RUN_AT]), row[-2], json.loads(row[-1])]
                for row in conn.execute(query)
            ]
        # The aggregate's order is the database's to choose: oldest run time first again.
        rows.sort(key=itemgetter(_RUN_AT))
        return rows

    def _priorities(self, conn: sa.Connection) -> tuple[int, ...]:
        """The priority values of waiting jobs, highest first; re-read at most once a second.

        A new higher priority is claimed first within a second; until then it
        waits behind the priorities already known, and no job is ever skipped.
        """
        if time.monotonic() - self._priorities_read_at > PRIORITY_TTL:
            self._priority_values = self._read_priorities(conn)
            self._priorities_read_at = time.monotonic()
        return self._priority_values

    @staticmethod
    def _read_priorities(conn: sa.Connection) -> tuple[int, ...]:
        """The distinct priorities of waiting jobs, highest first.

        One MAX() per value, each a single descent of the claim index: a
        SELECT DISTINCT read every waiting row's entry (18 ms a call with
        50,000 waiting jobs).  Past MAX_PRIORITY_PROBES values, DISTINCT it is.
        """
        found: list[int] = []
        while len(found) < MAX_PRIORITY_PROBES:
            query = sa.select(sa.func.max(jobs.c.priority)).where(jobs.c.state == _WAITING)
            if found:
                query = query.where(jobs.c.priority < found[-1])
            value = conn.execute(query).scalar()
            if value is None:
                return tuple(found)
            found.append(int(value))
        every = conn.execute(
            sa.select(jobs.c.priority).where(jobs.c.state == _WAITING).distinct()
        ).scalars()
        return tuple(sorted(every, reverse=True))

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


def _trim(error: str | None) -> str | None:
    if error is None or len(error) <= MAX_ERROR:
        return error
    return error[: MAX_ERROR - 1] + "…"
