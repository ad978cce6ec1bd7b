"""ScheduleMaterializer: each schedule's occurrences within the lookahead window become jobs.

One node at a time materializes (it holds the ``schedules`` lease), every
fetch_interval.  For up to SCHEDULES_PER_TRANSACTION schedules at a time, one
transaction locks their rows, adds a job for each occurrence up to now +
lookahead_window, records the missed ones, and moves their
`materialized_until` on; the row locks and that mark make each occurrence a
job at most once, even if two nodes were ever to materialize at the same
moment.  (A transaction per schedule made a cycle of 200 schedules take 0.7 s
on a quiet database and seconds on a busy one, and their runs came late.)
With the SQL job store the jobs are added in the same transaction: an
occurrence is a job exactly when the mark says so.  (A store keeping its jobs
elsewhere adds them first; a crash before the commit then adds them again,
and its idempotent insert by job key must drop them.)

An occurrence whose run is due more than misfire_threshold ago when it is
first seen (no node ran for a while) is missed, and the schedule's catch-up
policy says what becomes of it:

- ``fire_once_now``: the newest missed one is made a job (it runs at once,
  unless the next one is late too by the time it is claimed: ScheduleGate);
- ``do_nothing``: none is;
- ``fire_all``: the newest `catch_up_limit` are.

Every other missed occurrence is recorded in history as misfired (at most
MAX_MISFIRE_ROWS per schedule and cycle; the metric counts them all).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import attrs

from infsched.cluster.member import Lease
from infsched.cluster.outage import DatabaseOutage
from infsched.config import SchedulerConfig
from infsched.conflict_retries import retrying_conflicts
from infsched.database import Database
from infsched.engine.history import History, JobOutcome
from infsched.jobstore.base import JobStore, NewJob, Outcome, job_key
from infsched.metrics.recorder import MetricsRecorder
from infsched.schedule_store import ScheduleStore
from infsched.schedules import SCHEDULE_REPOSITORY, CatchUp, RunRules, Schedule, ScheduledRun

log = logging.getLogger("infsched.schedules")

#: Missed occurrences of one schedule recorded in history one by one per cycle, at most.
MAX_MISFIRE_ROWS = 1000
#: Seconds between looks at the schedules lease while another node holds it.
STANDBY_POLL = 0.05
#: Schedules materialized in one transaction, at most.
SCHEDULES_PER_TRANSACTION = 50


@attrs.frozen
class OccurrencePlan:
    """What one materializing of a schedule does."""

    #: The jobs to add: missed occurrences the catch-up policy runs, then the coming ones.
    jobs: list[NewJob]
    #: Missed occurrences not run, recorded as misfired (the first MAX_MISFIRE_ROWS).
    misfired: list[datetime]
    #: How many missed occurrences are not run, recorded or not.
    misfired_count: int
    #: Missed occurrences that are made jobs (part of `jobs`).
    caught_up: int


def plan_occurrences(
    schedule: Schedule,
    after: datetime,
    now: datetime,
    horizon: datetime,
    threshold: timedelta,
) -> OccurrencePlan:
    """The occurrences of `schedule` after `after` and up to `horizon`, sorted into jobs and misses.

    An occurrence is missed when its run is due before now - `threshold`.
    """
    late_before = now - threshold
    # How many of the newest missed occurrences are run.
    keep = {
        CatchUp.FIRE_ONCE_NOW: 1,
        CatchUp.DO_NOTHING: 0,
        CatchUp.FIRE_ALL: schedule.catch_up_limit,
    }[schedule.catch_up]
    kept: deque[datetime] = deque()
    misfired: list[datetime] = []
    misfired_count = 0
    coming: list[datetime] = []
    occurrences: Iterator[datetime] = schedule.fire_times_after(after)
    following: datetime | None = None
    for occurrence in occurrences:
        if occurrence > horizon:
            following = occurrence
            break
        if coming or schedule.run_at(occurrence) >= late_before:
            coming.append(occurrence)
            continue
        kept.append(occurrence)
        if len(kept) > keep:
            dropped = kept.popleft()
            misfired_count += 1
            if len(misfired) < MAX_MISFIRE_ROWS:
                misfired.append(dropped)
    made = [*kept, *coming]
    jobs: list[NewJob] = []
    for i, occurrence in enumerate(made):
        nxt = made[i + 1] if i + 1 < len(made) else following
        rules = RunRules(
            catch_up=schedule.catch_up,
            overlap=schedule.overlap,
            next_run_at=None if nxt is None else schedule.run_at(nxt),
        )
        run = ScheduledRun(schedule=schedule.name, occurrence=occurrence, payload=schedule.payload)
        jobs.append(
            NewJob(
                job_key=job_key(SCHEDULE_REPOSITORY, schedule.name, occurrence),
                repository=SCHEDULE_REPOSITORY,
                executor=schedule.executor,
                entity_id=schedule.name,
                due_at=schedule.run_at(occurrence),
                priority=schedule.priority,
                payload=rules.snapshot(run),
            )
        )
    return OccurrencePlan(jobs, misfired, misfired_count, len(kept))


class ScheduleMaterializer:
    """Makes schedules' occurrences jobs, on the node that holds the schedules lease."""

    def __init__(
        self,
        *,
        schedules: ScheduleStore,
        store: JobStore,
        history: History,
        database: Database,
        config: SchedulerConfig,
        metrics: MetricsRecorder,
    ) -> None:
        self._schedules = schedules
        self._store = store
        self._history = history
        self._database = database
        self._config = config
        self._metrics = metrics

    def run(
        self,
        stop: threading.Event,
        *,
        lease: Lease | None = None,
        outage: DatabaseOutage | None = None,
    ) -> None:
        """Materialize every fetch_interval until `stop` is set, while this node holds `lease`."""
        watch = (outage or DatabaseOutage()).watch("schedules")
        while not stop.is_set():
            if lease is not None and not lease.held():
                watch.idle()
                stop.wait(STANDBY_POLL)
                continue
            wait = self._config.fetch_interval
            try:
                self.cycle()
                watch.ok()
            except Exception as exc:
                wait = min(wait, watch.failed(exc))
            stop.wait(wait)

    def cycle(self) -> int:
        """Occurrences up to now + lookahead_window become jobs; returns how many were added."""
        now = self._database.clock.now()
        horizon = now + timedelta(seconds=self._config.lookahead_window)
        names = self._schedules.wanting(horizon)
        step = SCHEDULES_PER_TRANSACTION
        return sum(
            self._materialize(names[i : i + step], now, horizon) for i in range(0, len(names), step)
        )

    def _materialize(self, names: Sequence[str], now: datetime, horizon: datetime) -> int:
        threshold = timedelta(seconds=self._config.misfire_threshold)

        def transaction() -> dict[str, OccurrencePlan]:
            plans: dict[str, OccurrencePlan] = {}
            missed: list[JobOutcome] = []
            with self._database.engine.begin() as conn:
                # Those removed or paused since they were listed are left out.
                for stored in self._schedules.lock(conn, names):
                    after = stored.materialized_until or stored.created_at
                    if after >= horizon:
                        continue  # another node got here first
                    plan = plan_occurrences(stored.schedule, after, now, horizon, threshold)
                    plans[stored.name] = plan
                    missed += self._missed(stored.schedule, plan.misfired, now)
                new_jobs = [job for plan in plans.values() for job in plan.jobs]
                if new_jobs:
                    self._store.add_jobs(conn, new_jobs)
                if missed:
                    self._history.record(conn, missed)
                self._schedules.advance(conn, list(plans), horizon)
            return plans

        plans = retrying_conflicts(transaction)
        for name, plan in plans.items():
            self._count(name, plan)
        return sum(len(plan.jobs) for plan in plans.values())

    def _count(self, name: str, plan: OccurrencePlan) -> None:
        labels = {"schedule": name}
        if plan.jobs:
            self._metrics.increment(
                "schedule_occurrences_materialized_total", len(plan.jobs), labels
            )
        if plan.misfired_count:
            self._metrics.increment(
                "schedule_occurrences_misfired_total", plan.misfired_count, labels
            )
            log.warning(
                "schedule %s: %d occurrences missed while no node ran are not run, %d are",
                name,
                plan.misfired_count,
                plan.caught_up,
            )

    def _missed(
        self, schedule: Schedule, occurrences: list[datetime], now: datetime
    ) -> list[JobOutcome]:
        why = f"misfired: missed while no node ran (catch_up {schedule.catch_up.value})"
        return [
            JobOutcome(
                finished_at=now,
                job_key=job_key(SCHEDULE_REPOSITORY, schedule.name, occurrence),
                repository=SCHEDULE_REPOSITORY,
                entity_id=schedule.name,
                executor=schedule.executor,
                state=Outcome.MISFIRED,
                attempt=0,
                due_at=schedule.run_at(occurrence),
                node=self._history.node,
                error=why,
            )
            for occurrence in occurrences
        ]
