"""JobAdmin: list, show, cancel, retry and run jobs now; statistics, nodes and pauses.

    admin = JobAdmin(engine, history)
    admin.list_jobs(state="dead", repository="sms")
    admin.retry(repository="sms", progress=lambda done, total: ...)
    admin.cancel(["sms:42:20250101T120000.000000Z"])

Every change is one transaction per batch, guarded by the job's state in
its WHERE clause, so a job that a node claims meanwhile is never changed
under it: the operation fails with `JobStateError` instead.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.clock import require_utc, utc_naive
from infsched.cluster.rows import NodeRow, read_nodes
from infsched.config import DEFAULT_JOB_STORE
from infsched.database import Database
from infsched.engine.controls import Controls
from infsched.engine.history import History, JobOutcome
from infsched.engine.status import JobStatus, job_status
from infsched.errors import InfschedError, InvalidArgumentError
from infsched.jobstore.base import (
    JobNotFoundError,
    JobRow,
    JobState,
    JobStateError,
    JobStore,
    LiveRow,
    Outcome,
    Progress,
    entity_of_key,
)
from infsched.management.entity_jobs import Bindings, EntityJobs, FoundEntity
from infsched.management.history import HistoryReader, quantile
from infsched.management.repository_names import RepositoryNames
from infsched.plugins import open_job_store
from infsched.schedule_store import ScheduleStore
from infsched.schedules import SCHEDULE_REPOSITORY

#: The states a job can be in.
STATES = tuple(s.value for s in JobState)

__all__ = [
    "STATES",
    "JobAdmin",
    "JobNotFoundError",
    "JobRow",
    "JobStateError",
    "Progress",
    "RepositoryStats",
    "Stats",
]

_WAITING, _CLAIMED, _DEAD = JobState.WAITING.value, JobState.CLAIMED.value, JobState.DEAD.value
_FAILED_OUTCOMES = (Outcome.FAILED.value, Outcome.DEAD.value)


@attrs.frozen
class RepositoryStats:
    """One repository's jobs now, and its outcomes over the last minute and hour."""

    repository: str
    waiting: int = 0
    #: Waiting jobs whose run time has passed: the backlog.
    due: int = 0
    claimed: int = 0
    dead: int = 0
    executed_last_minute: int = 0
    failed_last_minute: int = 0
    executed_last_hour: int = 0
    failed_last_hour: int = 0
    #: Start minus due time over the lag window, in seconds; None without runs.
    lag_p50: float | None = None
    lag_p99: float | None = None
    lag_samples: int = 0

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class Stats:
    at: datetime
    lag_minutes: float
    paused: tuple[str, ...]
    repositories: tuple[RepositoryStats, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "lag_minutes": self.lag_minutes,
            "paused": list(self.paused),
            "repositories": [r.as_json() for r in self.repositories],
        }


class JobAdmin:
    """Operations on one database's jobs, for the CLI and the Python API.

    `store` is the cluster's job store; without one, the built-in ``sql`` on `database`.
    """

    def __init__(
        self,
        database: Database,
        history: History,
        *,
        actor: str = "admin",
        repositories: Collection[str] = (),
        bindings: Bindings | None = None,
        store: JobStore | None = None,
    ) -> None:
        self.database = database
        self.engine = engine = database.engine
        self.history = history
        self.clock = database.clock
        #: Who acts: recorded as the node of cancelled outcomes and as who paused.
        self.actor = actor
        self.store = store or open_job_store(None, DEFAULT_JOB_STORE, database)
        self.controls = Controls(database, ttl=0.0)
        self.reader = HistoryReader(history.repository.name)
        #: The names `repositories` (the configured ones) and the database know.
        self.names = RepositoryNames(engine, self.store, repositories)
        #: Entities of the `bindings` repositories that have no job yet.
        self.entities = EntityJobs(self.store, history, bindings or tuple, self.clock, actor)

    def now(self) -> datetime:
        """The database's clock (the one claims compare run times with)."""
        with self.engine.connect() as conn:
            return self.store.db_now(conn)

    # -- reading jobs --

    def list_jobs(
        self,
        *,
        state: str | None = None,
        repository: str | None = None,
        due_before: datetime | None = None,
        limit: int = 100,
        schedule: str | None = None,
    ) -> list[JobRow]:
        """Jobs of the job store, soonest due first; `due_before` must be timezone-aware.

        `schedule` lists one schedule's runs (repository ``@schedules``, entity its name).
        """
        if state is not None and state not in STATES:
            raise JobStateError(f"state {state!r} is invalid; expected {', '.join(STATES)}")
        if schedule is not None:
            return self._schedule_jobs(schedule, state, due_before, limit)
        if repository is not None:
            self.names.require(repository)
        return self.store.list_jobs(
            state=state, repository=repository, due_before=due_before, limit=limit
        )

    def _schedule_jobs(
        self, name: str, state: str | None, due_before: datetime | None, limit: int
    ) -> list[JobRow]:
        # A schedule has few live jobs (those made ahead, a run in flight, dead letters):
        # its entity's rows, found by the job key's prefix, are filtered here.
        rows = [JobRow.from_row(r) for r in self.store.entity_job_rows(name, SCHEDULE_REPOSITORY)]
        if not rows:
            ScheduleStore(self.database).get(name)  # an unknown name: the schedules there are
        before = None if due_before is None else require_utc(due_before, "due_before")
        chosen = [
            r
            for r in rows
            if (state is None or r.state == state) and (before is None or r.due_at < before)
        ]
        return sorted(chosen, key=lambda r: (r.due_at, r.job_key))[:limit]

    def show(self, ref: str, repository: str | None = None) -> list[JobStatus]:
        """A job by key, or an entity's jobs by entity id: live row and recorded outcomes."""
        now = self.clock.now()
        live = self.store.job_row(ref)
        horizon = self.history.repository.retention_horizon()
        # History has no job_key index (one less per outcome written); a key names
        # its entity, whose index finds the outcomes, and the key picks among them.
        named = entity_of_key(ref)
        outcomes = (
            sorted(
                (
                    o
                    for o in self.history.repository.find_all_by_column(
                        "entity_id", named, horizon, now + timedelta(days=1)
                    )
                    if o.job_key == ref
                ),
                key=lambda o: (o.finished_at, o.id or 0),
            )
            if named is not None
            else []
        )
        if live is not None or outcomes:
            name = live["repository"] if live is not None else outcomes[0].repository
            entity_id = live["entity_id"] if live is not None else outcomes[0].entity_id
            if repository is None or repository == name:
                found = dict(live) if live is not None else None
                return [JobStatus(name, entity_id, found, tuple(outcomes))]
        statuses = {
            s.repository: s for s in job_status(self.store, self.history, ref, repository, now=now)
        }
        # An entity a fetch cycle has not reached yet is only in its repository.
        for entity in self.entities.find(ref, repository):
            if entity.pending:
                known = statuses.get(entity.repository)
                statuses[entity.repository] = (
                    attrs.evolve(known, pending_due=entity.due_at)
                    if known is not None
                    else JobStatus(entity.repository, entity.entity_id, None, (), entity.due_at)
                )
        if not statuses and repository is not None:
            self.names.require(repository)
        return [statuses[name] for name in sorted(statuses)]

    # -- what a command's KEY|ENTITY_ID arguments name --

    def _targets(self, refs: Sequence[str], repository: str) -> tuple[list[str], list[FoundEntity]]:
        """The job keys, and the entities with no job yet, that `refs` name in `repository`.

        Each ref is a job key of the repository, or an entity id: its jobs in
        the job table, else the entity in the repository if it has no job yet.
        Anything else raises, before anything changes.
        """
        self.names.require(repository)
        keys: list[str] = []
        pending: list[FoundEntity] = []
        for ref in dict.fromkeys(refs):
            live = self._live_keys(ref, repository)
            if not live:
                found = self.entities.find(ref, repository)
                if found and found[0].pending:
                    pending.append(found[0])
                    continue
                # Marked meanwhile by a fetch cycle? Its job committed no later than the mark.
                live = self._live_keys(ref, repository) if found else []
                if not live:
                    raise self._no_job(ref, repository, bool(found))
            keys.extend([ref] if ref in live else live)
        return keys, pending

    def _live_keys(self, ref: str, repository: str) -> list[str]:
        """The keys of the jobs `ref` names in `repository`: its own key, or an entity's."""
        return self.store.keys_of(ref, repository)

    def _no_job(self, ref: str, repository: str, entity_exists: bool) -> InfschedError:
        if entity_exists:
            return JobStateError(
                f"{repository} entity {ref} has no waiting or dead job: its job has finished "
                f"or was cancelled (`infsched jobs show {ref} --repo {repository}` says which)"
            )
        if repository in self.entities.configured():
            return JobNotFoundError(
                f"no job with key or entity id {ref!r} in {repository}, "
                "and the repository has no entity of that id"
            )
        return JobNotFoundError(
            f"no job with key or entity id {ref!r} in {repository}; its entities were not "
            f"looked up: the config names no repository {repository}"
        )

    # -- changing jobs --

    @staticmethod
    def _require_all(keys: Sequence[str], rows: Sequence[LiveRow]) -> None:
        missing = set(keys) - {r["job_key"] for r in rows}
        if missing:
            raise JobNotFoundError(
                f"no job with key {sorted(missing)[0]!r}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + "; `infsched jobs list` shows the jobs there are"
            )

    @staticmethod
    def _refuse(rows: Sequence[LiveRow], allowed: Sequence[str], operation: str, hint: str) -> None:
        for row in rows:
            if row["state"] not in allowed:
                where = f" on node {row['owner']}" if row["state"] == _CLAIMED else ""
                raise JobStateError(
                    f"job {row['job_key']} is {row['state']}{where} (attempt {row['attempt']}); "
                    f"{operation} applies only to {' or '.join(allowed)} jobs{hint}"
                )

    def cancel(self, keys: Sequence[str], repository: str | None = None) -> int:
        """Remove waiting or dead jobs and record them as cancelled, all in one transaction.

        A running (claimed) job cannot be cancelled: JobStateError, and nothing changes.
        With `repository`, `keys` may be entity ids too: an entity's jobs, or,
        for an entity with no job yet, its job is never created (see
        `EntityJobs.cancel`).  Returns the jobs and entities cancelled.
        """
        if not keys:
            return 0
        if repository is None:
            return self._cancel_jobs(keys)
        job_keys, pending = self._targets(keys, repository)
        done = self._cancel_jobs(job_keys) if job_keys else 0
        for entity in pending:
            if self.entities.cancel(entity):
                done += 1
            else:  # a fetch cycle created its job meanwhile: that job is cancelled
                done += self._cancel_jobs([entity.binding.new_job(entity.entity).job_key])
        return done

    def _cancel_jobs(self, keys: Sequence[str]) -> int:
        finished = self.clock.now()

        def check(rows: Sequence[LiveRow]) -> None:
            self._require_all(keys, rows)
            self._refuse(
                rows,
                (_WAITING, _DEAD),
                "cancel",
                "; a running job finishes or fails on its own (pause its repository to stop "
                "new runs)",
            )

        def write_history(conn: sa.Connection, rows: Sequence[LiveRow]) -> None:
            self.history.repository.insert_many(
                [self._cancelled(row, finished) for row in rows], conn=conn
            )

        return self.store.cancel_jobs(keys, check, write_history)

    def _cancelled(self, row: LiveRow, finished: datetime) -> JobOutcome:
        return JobOutcome(
            finished_at=finished,
            job_key=row["job_key"],
            repository=row["repository"],
            entity_id=row["entity_id"],
            executor=row["executor"],
            state=Outcome.CANCELLED,
            attempt=row["attempt"],
            due_at=row["due_at"].replace(tzinfo=UTC),
            started_at=None,
            node=self.actor,
            error=row["last_error"],
        )

    def retry(
        self,
        keys: Sequence[str] = (),
        *,
        repository: str | None = None,
        all_dead: bool = False,
        progress: Progress | None = None,
    ) -> int:
        """Dead letters back to waiting, due now, with their attempts reset.

        By key (each must be dead), by entity id within `repository` (its
        dead jobs), or every dead letter of `repository`, or with `all_dead`
        every dead letter; one transaction per BATCH jobs.
        """
        if all_dead == bool(keys or repository is not None):
            raise InvalidArgumentError(
                "retry takes job keys or entity ids (with a repository), or a repository, "
                "or all_dead=True"
            )
        if keys and repository is not None:
            keys, pending = self._targets(keys, repository)
            if pending:
                first = pending[0]
                raise JobStateError(
                    f"{first.repository} entity {first.entity_id} has no job yet (due "
                    f"{first.due_at.isoformat()}); retry applies only to dead jobs"
                )
        if keys:
            rows = self._rows(keys)
            self._refuse(rows, (_DEAD,), "retry", "")
            ids = [r["id"] for r in rows]
        else:
            if repository is not None:
                self.names.require(repository)
            ids = self.store.dead_job_ids(repository)
        return self.store.retry_dead(ids, progress)

    def run_now(self, keys: Sequence[str], repository: str | None = None) -> int:
        """Make waiting jobs due now (the next claim takes them, ahead of their due time).

        With `repository`, `keys` may be entity ids too: an entity's waiting
        job, or, for an entity with no job yet, its job is created due now
        (see `EntityJobs.run_now`).  Returns the jobs made due now.
        """
        if not keys:
            return 0
        if repository is None:
            return self._run_jobs_now(keys)
        job_keys, pending = self._targets(keys, repository)
        done = self._run_jobs_now(job_keys) if job_keys else 0
        for entity in pending:
            if self.entities.run_now(entity) is not None:
                done += 1
            else:  # a fetch cycle created its job meanwhile: that job is made due now
                done += self._run_jobs_now([entity.binding.new_job(entity.entity).job_key])
        return done

    def _run_jobs_now(self, keys: Sequence[str]) -> int:
        rows = self._rows(keys)
        self._refuse(rows, (_WAITING,), "run-now", "")
        return self.store.run_now([r["id"] for r in rows])

    def _rows(self, keys: Sequence[str]) -> list[LiveRow]:
        """The live rows of the jobs `keys`; JobNotFoundError if one has none."""
        rows = self.store.job_rows_of(keys)
        self._require_all(keys, rows)
        return rows

    # -- pauses --

    def pause(self, repository: str | None = None) -> frozenset[str]:
        """Pause one repository, or all (None or ``*``); returns the paused scopes.

        A name neither configured nor known to the database is refused
        (UnknownRepositoryError naming those there are): a typo paused nothing.
        """
        self.names.require_scope(repository)
        self.controls.pause(repository, by=self.actor)
        return self.controls.paused(fresh=True)

    def resume(self, repository: str | None = None) -> frozenset[str]:
        """Lift one repository's pause, or the global one (None); returns the paused scopes.

        Resuming the global pause leaves repositories paused on their own paused.
        """
        self.names.require_scope(repository)
        self.controls.resume(repository)
        return self.controls.paused(fresh=True)

    def paused(self) -> frozenset[str]:
        return self.controls.paused(fresh=True)

    # -- cluster --

    def nodes(self) -> list[NodeRow]:
        with self.engine.connect() as conn:
            return read_nodes(conn, self.store.db_now(conn))

    def stats(self, lag_minutes: float = 5.0) -> Stats:
        """Jobs per repository and state; outcomes over the last minute and hour; lag quantiles."""
        with self.engine.connect() as conn:
            at = self.store.db_now(conn)
            now = utc_naive(at)
            counts = self.store.count_jobs(conn, now)
            outcomes = self.reader.outcome_counts(
                conn, now - timedelta(hours=1), now - timedelta(minutes=1), now
            )
            lags = self.reader.lags(conn, now - timedelta(minutes=lag_minutes), now)
        per: dict[str, dict[str, Any]] = {}
        for c in counts:
            values = per.setdefault(c.repository, {})
            values[c.state] = c.total
            if c.state == _WAITING:
                values["due"] = c.due
        for o in outcomes:
            values = per.setdefault(o.repository, {})
            kind = "executed" if o.state == Outcome.SUCCEEDED.value else None
            if o.state in _FAILED_OUTCOMES:
                kind = "failed"
            if kind is not None:
                values[f"{kind}_last_hour"] = values.get(f"{kind}_last_hour", 0) + o.total
                values[f"{kind}_last_minute"] = values.get(f"{kind}_last_minute", 0) + o.recent
        for repository, samples in lags.items():
            values = per.setdefault(repository, {})
            values.update(
                lag_p50=quantile(samples, 0.5),
                lag_p99=quantile(samples, 0.99),
                lag_samples=len(samples),
            )
        return Stats(
            at=at,
            lag_minutes=lag_minutes,
            paused=tuple(sorted(self.paused())),
            repositories=tuple(RepositoryStats(name, **per[name]) for name in sorted(per)),
        )
