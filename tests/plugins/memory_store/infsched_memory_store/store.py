"""MemoryJobStore: the jobs of one process in a dict, as procrastinate's InMemoryConnector.

Only one node can use it (its jobs are in its memory), and they are gone
when the process ends: it is for tests, and for showing what a job store
must do (it passes `infsched.testing.jobstore.JobStoreContract`).

The fetcher adds jobs on its own connection, in the transaction that marks
the entities scheduled: `add_jobs` stages them on that connection, and they
are applied when it commits and dropped when it rolls back (SQLAlchemy's
connection events).  The commit event fires just before the database
commits, so jobs may be applied though the commit then fails: the entities
stay unmarked and the next fetch offers the same keys, which are ignored,
as with a job store in another database (jobs first, marks after).

A claim works as the SQL store's (infsched/jobstore/sql_claims.py): the due
jobs wait in lanes (repository, executor, flow key); within a priority the
lanes take turns at the claim, ``ceil(left / lanes)`` each, what one leaves
going round again to the others, and the lane that goes first turns with
every claim.  The flow limits live in the configured database's limits
table, for every node: a claim under `FlowRules` whose lanes have limited
targets locks those rows in a transaction of its own
(`infsched.limit_rows.lock_buckets`), counts the jobs in flight under each
concurrency cap from its own claimed jobs, and writes the rates' new state
back (`write_buckets`); the jobs it took are marked claimed only once that
transaction has committed.

Two locks: `_lock` guards the jobs and is held across the history write of
`finish` and `cancel_jobs` and the limits transaction of `claim_due`
(nobody claims a job meanwhile), always taken after that transaction began
(`_transaction_then_lock`); `_staging` guards what transactions staged
and is never held while waiting on the database, so a fetcher committing
never waits for a node writing its history.  Committed jobs are applied by
the next operation, under `_lock`.
"""

from __future__ import annotations

import itertools
import json
import threading
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.clock import Clock, utc_naive
from infsched.database import Database
from infsched.fair_shares import share_out
from infsched.flow_limits import Lane
from infsched.jobstore.base import (
    COPY_COLUMNS,
    JOB_ROW_COLUMNS,
    ClaimedJob,
    Finished,
    FlowRules,
    HistoryWriter,
    JobRow,
    JobState,
    JobStateError,
    LaneCount,
    LiveRow,
    NewJob,
    Outcome,
    Progress,
    StateCount,
    entity_key_prefix,
)
from infsched.limit_rows import lock_buckets, write_buckets
from infsched.rate_buckets import MICROS, RateBucket
from infsched.schema import create_schema

WAITING, CLAIMED, DEAD = JobState.WAITING.value, JobState.CLAIMED.value, JobState.DEAD.value
#: Jobs per progress report of `retry_dead`, as the SQL store's transactions.
BATCH = 1000
#: The job attribute each scope of limit target names.
_SCOPE_ATTRIBUTES = {"executor": "executor", "repository": "repository", "key": "flow_key"}


@attrs.define
class _Job:
    """One job; times naive UTC, as the SQL store's rows."""

    id: int
    job_key: str
    repository: str
    executor: str
    entity_id: str
    due_at: datetime
    run_at: datetime
    priority: int
    flow_key: str
    state: str
    attempt: int
    owner: str | None
    lease_until: datetime | None
    payload: str
    last_error: str | None
    created_at: datetime

    def row(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in JOB_ROW_COLUMNS}

    def wait(self) -> None:
        self.state, self.owner, self.lease_until = WAITING, None, None


#: A new job's values, COPY_COLUMNS in order.
_NewRow = tuple[Any, ...]


#: Times of a new job; a bound literal (the fetcher's created_at) comes back as text on MySQL.
_TIMES = {"due_at", "run_at", "created_at"}


def _datetime(value: Any, column: str) -> Any:
    return datetime.fromisoformat(value) if column in _TIMES and isinstance(value, str) else value


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC)


def _share_out(
    lanes: dict[int, dict[Lane, list[_Job]]],
    limit: int,
    turn: int,
    buckets: dict[str, RateBucket],
) -> list[tuple[Lane, list[_Job]]]:
    """What each lane gives the claim, in the order taken (`infsched.fair_shares`).

    The due lists are consumed; nothing is marked claimed here.
    """

    def take(priority: int, lane: Lane, n: int) -> list[_Job]:
        due = lanes[priority][lane]
        group, due[:n] = due[:n], []
        return group

    ordered = [(p, sorted(lanes[p])) for p in sorted(lanes, reverse=True)]
    return [(lane, group) for _p, lane, group in share_out(ordered, limit, turn, buckets, take)]


def _slots(
    taken: Sequence[tuple[Lane, list[_Job]]], buckets: dict[str, RateBucket]
) -> dict[int, float]:
    """Each rate-limited job's start, in seconds after the claim (the latest of its rates').

    Jobs under no rate have none; every target counts the jobs started under it.
    """
    found: dict[int, float] = {}
    for lane, group in taken:
        targets = [buckets[t] for t in lane.targets() if t in buckets]
        rated = [b for b in targets if b.limit.rate is not None]
        for b in targets:
            if b.limit.rate is None:
                b.taken += len(group)
        if rated:
            for job in group:
                found[job.id] = max(b.take() - b.now for b in rated) / MICROS
    return found


class MemoryJobStore:
    """The job store ``memory``: one process's jobs, in memory."""

    def __init__(self, database: Database) -> None:
        self._engine = database.engine
        self._clock: Clock = database.clock
        self._lock = threading.RLock()
        self._jobs: dict[int, _Job] = {}
        self._ids: dict[str, int] = {}
        self._next_id = itertools.count(1)
        self._staging = threading.Lock()
        #: What each open transaction added, applied when it commits.
        self._staged: dict[sa.Connection, list[Callable[[], None]]] = {}
        self._listening: weakref.WeakSet[sa.Connection] = weakref.WeakSet()
        self._committed: list[Callable[[], None]] = []
        #: Claims made: the lane that goes first in a priority turns with each.
        self._turn = 0

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    @property
    def job_rows(self) -> None:
        return None  # no rows in the database: history is written from the outcomes

    def create_schema(self) -> list[str]:
        return create_schema(self._engine)

    def missing_tables(self) -> list[str]:
        return []

    def db_now(self, conn: sa.Connection) -> datetime:
        return self._clock.now()

    # -- transactions --

    def _on_commit(self, conn: sa.Connection, apply: Callable[[], None]) -> None:
        """`apply` once `conn`'s transaction commits; never if it rolls back."""
        with self._staging:
            if not conn.in_transaction():
                self._committed.append(apply)
                return
            self._staged.setdefault(conn, []).append(apply)
            if conn not in self._listening:  # a connection may run many transactions
                self._listening.add(conn)
                sa.event.listen(conn, "commit", self._commit)
                sa.event.listen(conn, "rollback", self._rollback)

    def _commit(self, conn: sa.Connection) -> None:
        with self._staging:
            self._committed.extend(self._staged.pop(conn, ()))

    def _rollback(self, conn: sa.Connection) -> None:
        with self._staging:
            self._staged.pop(conn, None)

    @contextmanager
    def _transaction_then_lock(self) -> Iterator[tuple[sa.Connection, sa.RootTransaction]]:
        """A transaction begun, then `_lock` taken: always in that order.

        Callers hand this store their connection inside a transaction (the
        gauges, the fetcher) and then wait for `_lock`; on SQLite that
        transaction holds the database's only write lock.  Whoever holds
        `_lock` must therefore never wait to begin one, or the two wait for
        each other until the busy timeout.  The caller commits the
        transaction (``with transaction:``) before it changes the jobs, so a
        failed commit changes nothing.
        """
        with self._engine.connect() as conn:
            transaction = conn.begin()
            with self._lock:
                yield conn, transaction

    def _settled(self) -> dict[int, _Job]:
        """The jobs, what committed transactions added applied; call holding `_lock`."""
        with self._staging:
            committed, self._committed = self._committed, []
        for apply in committed:
            apply()
        return self._jobs

    # -- the fetcher --

    def _insert(self, rows: Iterable[_NewRow], due_at: datetime | None) -> None:
        """Add the jobs whose keys are new; with `due_at`, make the waiting ones due then."""
        for values in rows:
            row = dict(zip(COPY_COLUMNS, values, strict=True))
            key = row["job_key"]
            if key in self._ids:
                continue
            job = _Job(id=next(self._next_id), owner=None, lease_until=None, last_error=None, **row)
            self._jobs[job.id] = job
            self._ids[key] = job.id
        if due_at is not None:
            for values in rows:
                job = self._jobs[self._ids[values[0]]]
                if job.state == WAITING:
                    job.run_at = due_at

    def _stage(self, conn: sa.Connection, rows: list[_NewRow], due_now: bool = False) -> int:
        unique = list({r[0]: r for r in rows}.values())
        fresh = sum(r[0] not in self._ids for r in unique)
        # Due from the moment they are added, as an UPDATE in the transaction would make them.
        due_at = utc_naive(self._clock.now()) if due_now else None

        def apply() -> None:
            self._insert(unique, due_at)

        self._on_commit(conn, apply)
        return fresh

    def _new_rows(self, jobs: Sequence[NewJob]) -> list[_NewRow]:
        created = utc_naive(self._clock.now())
        return [
            (
                j.job_key,
                j.repository,
                j.executor,
                j.entity_id,
                utc_naive(j.due_at),
                utc_naive(j.due_at),
                j.priority,
                j.flow_key,
                WAITING,
                0,
                j.payload,
                created,
            )
            for j in jobs
        ]

    def add_jobs(self, conn: sa.Connection, jobs: Sequence[NewJob]) -> int:
        return self._stage(conn, self._new_rows(jobs)) if jobs else 0

    def add_jobs_from(self, conn: sa.Connection, rows: sa.Select[Any]) -> int:
        found = [
            tuple(_datetime(v, c) for v, c in zip(r, COPY_COLUMNS, strict=True))
            for r in conn.execute(rows)
        ]
        return self._stage(conn, found) if found else 0

    def add_jobs_due_now(self, conn: sa.Connection, jobs: Sequence[NewJob]) -> None:
        self._stage(conn, self._new_rows(jobs), due_now=True)

    # -- the workers --

    def claim_due(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        repositories: Sequence[str],
        flow: FlowRules | None = None,
    ) -> list[ClaimedJob]:
        if limit <= 0 or not repositories:
            return []
        if flow is None or not flow.limited:
            with self._lock:
                return self._claim(owner, limit, lease_seconds, repositories, None)
        with self._transaction_then_lock() as (_, transaction):
            return self._claim(owner, limit, lease_seconds, repositories, (transaction, flow))

    def _claim(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        repositories: Sequence[str],
        limits: tuple[sa.RootTransaction, FlowRules] | None,
    ) -> list[ClaimedJob]:
        """The claim, holding `_lock`; with `limits`, in the transaction that locks their rows."""
        now = self._clock.now()
        lanes = self._due_lanes(set(repositories), utc_naive(now))
        turn, self._turn = self._turn, self._turn + 1
        in_use: set[str] = set()
        if limits is not None:
            in_use = {t for found in lanes.values() for lane in found for t in lane.targets()}
            in_use &= limits[1].limited
        if limits is None or not in_use:
            return self._mark(owner, lease_seconds, now, _share_out(lanes, limit, turn, {}), {})
        transaction, flow = limits
        with transaction:
            conn = transaction.connection
            buckets = lock_buckets(conn, sorted(in_use), now, flow.horizon, self._in_flight)
            taken = _share_out(lanes, limit, turn, buckets)
            slots = _slots(taken, buckets)
            write_buckets(conn, buckets)
        # The limits' transaction committed: now the jobs are this claim's.
        return self._mark(owner, lease_seconds, now, taken, slots)

    def _due_lanes(self, names: set[str], now: datetime) -> dict[int, dict[Lane, list[_Job]]]:
        """Per priority, each lane's jobs due by `now` (naive UTC), oldest first."""
        lanes: dict[int, dict[Lane, list[_Job]]] = {}
        for j in self._settled().values():
            if j.state == WAITING and j.repository in names and j.run_at <= now:
                lane = Lane(j.repository, j.executor, j.flow_key)
                lanes.setdefault(j.priority, {}).setdefault(lane, []).append(j)
        for found in lanes.values():
            for due in found.values():
                due.sort(key=lambda j: (j.run_at, j.id))
        return lanes

    def _in_flight(self, conn: sa.Connection, scope: str, name: str) -> int:
        """The jobs claimed under a target: all in this process, as every claim of this store."""
        attribute = _SCOPE_ATTRIBUTES[scope]
        return sum(
            j.state == CLAIMED and getattr(j, attribute) == name for j in self._jobs.values()
        )

    def _mark(
        self,
        owner: str,
        lease_seconds: float,
        now: datetime,
        taken: Sequence[tuple[Lane, list[_Job]]],
        slots: dict[int, float],
    ) -> list[ClaimedJob]:
        """The taken jobs claimed by `owner`, each with its start slot (0 without one)."""
        lease_until = utc_naive(now) + timedelta(seconds=lease_seconds)
        claimed = []
        for _lane, group in taken:
            for job in group:
                job.state, job.owner, job.lease_until = CLAIMED, owner, lease_until
                job.attempt += 1
                claimed.append(
                    ClaimedJob(
                        id=job.id,
                        job_key=job.job_key,
                        repository=job.repository,
                        executor=job.executor,
                        entity_id=job.entity_id,
                        due_at=_aware(job.due_at),
                        run_at=_aware(job.run_at),
                        priority=job.priority,
                        attempt=job.attempt,
                        flow_key=job.flow_key,
                        snapshot=json.loads(job.payload),
                        claimed_at=now,
                        start_at=(
                            now + timedelta(seconds=slots[job.id]) if job.id in slots else None
                        ),
                    )
                )
        return claimed

    def _mine(self, job_id: int, attempt: int, owner: str) -> _Job | None:
        """The job of this claim, unless claimed again since (a higher attempt, another node)."""
        job = self._settled().get(job_id)
        if job is None or job.attempt != attempt or job.owner not in (owner, None):
            return None
        return job

    def finish(self, owner: str, results: Sequence[Finished], write_history: HistoryWriter) -> int:
        if not results:
            return 0
        with self._transaction_then_lock() as (conn, transaction):
            with transaction:
                write_history(conn, results)
            stale = 0
            for r in results:
                kept = r.outcome is Outcome.DEAD or (r.outcome is Outcome.FAILED and r.retry_at)
                if not r.outcome.ends_job and not kept:
                    continue
                job = self._mine(r.job.id, r.job.attempt, owner)
                if job is None:
                    stale += 1
                elif r.outcome.ends_job:
                    del self._jobs[job.id], self._ids[job.job_key]
                else:
                    job.wait()
                    job.state = WAITING if r.outcome is Outcome.FAILED else DEAD
                    job.run_at = utc_naive(r.retry_at or r.job.run_at)
                    job.last_error = r.error
            return stale

    def still_held(
        self, conn: sa.Connection, owner: str, claims: Sequence[tuple[int, int]]
    ) -> set[int]:
        with self._lock:
            return {i for i, attempt in claims if self._mine(i, attempt, owner) is not None}

    def release(self, owner: str, job_ids: Sequence[int]) -> int:
        with self._lock:
            jobs = self._settled()
            released = [jobs[i] for i in set(job_ids) if i in jobs and jobs[i].owner == owner]
            for job in released:
                job.wait()
                job.attempt -= 1
            return len(released)

    def defer(self, owner: str, deferred: Sequence[tuple[int, datetime]]) -> int:
        with self._lock:
            jobs = self._settled()
            found = [
                (jobs[i], at)
                for i, at in deferred
                if i in jobs and jobs[i].owner == owner and jobs[i].state == CLAIMED
            ]
            for job, at in found:
                job.wait()
                job.attempt -= 1
                job.run_at = utc_naive(at)
            return len(found)

    def renew_leases(self, owner: str, job_ids: Sequence[int], lease_seconds: float) -> int:
        with self._lock:
            jobs = self._settled()
            until = utc_naive(self._clock.now()) + timedelta(seconds=lease_seconds)
            renewed = [
                jobs[i]
                for i in set(job_ids)
                if i in jobs and jobs[i].owner == owner and jobs[i].state == CLAIMED
            ]
            for job in renewed:
                job.lease_until = until
            return len(renewed)

    def _wait_again(self, which: Callable[[_Job], bool]) -> int:
        with self._lock:
            found = [j for j in self._settled().values() if j.state == CLAIMED and which(j)]
            for job in found:
                job.wait()
            return len(found)

    def recover_expired(self) -> int:
        now = utc_naive(self._clock.now())
        return self._wait_again(lambda j: j.lease_until is not None and j.lease_until < now)

    def reclaim_own(self, owner: str) -> int:
        return self._wait_again(lambda j: j.owner == owner)

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
        groups: dict[tuple[str, str], list[int]] = {}
        with self._lock:
            for j in self._settled().values():
                if repositories is not None and j.repository not in repositories:
                    continue
                counts = groups.setdefault((j.repository, j.state), [0, 0, 0, 0])
                counts[0] += 1
                counts[1] += j.run_at <= now
                counts[2] += horizon is None or j.run_at <= horizon
                counts[3] += owner is not None and j.owner == owner
        return [StateCount(r, s, *counts) for (r, s), counts in groups.items()]

    def count_lanes(
        self, conn: sa.Connection, now: datetime, *, targets: Collection[str] | None = None
    ) -> list[LaneCount]:
        wanted = None if targets is None else set(targets)
        lanes: dict[Lane, list[Any]] = {}
        with self._lock:
            for j in self._settled().values():
                if j.state != WAITING or j.run_at > now:
                    continue
                lane = Lane(j.repository, j.executor, j.flow_key)
                if wanted is not None and wanted.isdisjoint(lane.targets()):
                    continue
                found = lanes.setdefault(lane, [0, j.run_at])
                found[0] += 1
                found[1] = min(found[1], j.run_at)
        return [LaneCount(lane, due, oldest) for lane, (due, oldest) in lanes.items()]

    # -- management --

    def _rows(self, which: Callable[[_Job], bool]) -> list[LiveRow]:
        with self._lock:
            return [j.row() for j in self._settled().values() if which(j)]

    def list_jobs(
        self,
        *,
        state: str | None = None,
        repository: str | None = None,
        due_before: datetime | None = None,
        limit: int = 100,
    ) -> list[JobRow]:
        before = utc_naive(due_before) if due_before is not None else None
        rows = self._rows(
            lambda j: (
                (state is None or j.state == state)
                and (repository is None or j.repository == repository)
                and (before is None or j.due_at < before)
            )
        )
        rows.sort(key=lambda r: (r["due_at"], r["id"]))
        return [JobRow.from_row(r) for r in rows[:limit]]

    def job_row(self, key: str) -> LiveRow | None:
        found = self._rows(lambda j: j.job_key == key)
        return found[0] if found else None

    def entity_job_rows(self, entity_id: str, repository: str | None = None) -> list[LiveRow]:
        return self._rows(lambda j: j.entity_id == entity_id and repository in (None, j.repository))

    def keys_of(self, ref: str, repository: str) -> list[str]:
        prefix = entity_key_prefix(repository, ref)
        found = self._rows(
            lambda j: (
                j.repository == repository and (j.job_key == ref or j.job_key.startswith(prefix))
            )
        )
        return sorted(r["job_key"] for r in found)

    def job_rows_of(self, keys: Sequence[str]) -> list[LiveRow]:
        wanted = set(keys)
        return self._rows(lambda j: j.job_key in wanted)

    def cancel_jobs(
        self,
        keys: Sequence[str],
        check: Callable[[Sequence[LiveRow]], None],
        write_history: Callable[[sa.Connection, Sequence[LiveRow]], None],
    ) -> int:
        with self._transaction_then_lock() as (conn, transaction):
            rows = self.job_rows_of(keys)
            check(rows)
            if any(r["state"] == CLAIMED for r in rows):
                raise JobStateError("a job was claimed while being cancelled; nothing changed")
            with transaction:
                write_history(conn, rows)
            for row in rows:
                del self._jobs[row["id"]], self._ids[row["job_key"]]
            return len(rows)

    def dead_job_ids(self, repository: str | None = None) -> list[int]:
        found = self._rows(lambda j: j.state == DEAD and repository in (None, j.repository))
        return sorted(r["id"] for r in found)

    def _due_now(self, job_ids: Sequence[int], state: str, retry: bool) -> int:
        with self._lock:
            jobs = self._settled()
            now = utc_naive(self._clock.now())
            changed = [jobs[i] for i in set(job_ids) if i in jobs and jobs[i].state == state]
            for job in changed:
                job.run_at = now
                if retry:
                    job.wait()
                    job.attempt = 0
            return len(changed)

    def retry_dead(self, job_ids: Sequence[int], progress: Progress | None = None) -> int:
        done = 0
        if progress is not None:
            progress(0, len(job_ids))
        for i in range(0, len(job_ids), BATCH):
            done += self._due_now(job_ids[i : i + BATCH], DEAD, retry=True)
            if progress is not None:
                progress(min(done, len(job_ids)), len(job_ids))
        return done

    def run_now(self, job_ids: Sequence[int]) -> int:
        return self._due_now(job_ids, WAITING, retry=False)

    def knows_repository(self, conn: sa.Connection, name: str) -> bool:
        return bool(self._rows(lambda j: j.repository == name))

    def repository_names(self, conn: sa.Connection) -> set[str]:
        return {r["repository"] for r in self._rows(lambda j: True)}
