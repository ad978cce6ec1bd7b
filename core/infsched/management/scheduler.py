"""InfiniteScheduler: a scheduler node with the operator's methods on it.

`SchedulerNode` (infsched.engine.scheduler) runs the fetchers, workers and
maintenance; this class adds `JobAdmin`'s methods (pause, resume, list_jobs,
cancel, retry, run_now, stats, status) for the node's own repositories, and
the schedules' (`add_schedule`, `schedules`, `pause_schedule`, ...) and the
flow limits' (`set_limit`, `limits`, `remove_limit`).  Before
the engine starts, it puts the declared schedules (the config's
``[[schedules]]``, the plugins' ``register_schedules``) in the database.  It is
the public `infsched.InfiniteScheduler` (docs/api.md).  The composition lives
here, above the engine, because the engine never imports management.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime

from infsched.engine.flow import declared_limits
from infsched.engine.scheduler import SchedulerNode
from infsched.engine.status import JobStatus
from infsched.flow_limits import LimitTarget
from infsched.limit_store import StoredLimit
from infsched.management.jobs import JobAdmin, JobRow, Stats
from infsched.management.limits import LimitAdmin
from infsched.management.schedule_declarations import (
    AppliedDeclarations,
    apply_declarations,
    declarations,
)
from infsched.management.schedules import ScheduleAdmin
from infsched.schedule_store import StoredSchedule
from infsched.schedules import Schedule
from infsched.schema import create_schema
from infsched.schema_versions import check_runnable


class InfiniteScheduler(SchedulerNode):
    """A scheduler node serving one or more repositories, steerable through its methods."""

    def start(self) -> None:
        """Put the declared schedules in the database, then start the node (`SchedulerNode`).

        A declared schedule whose executor this node does not know is refused
        (ScheduleError), and neither it nor any other is put.
        """
        if not self._started:  # starting twice is the engine's error to raise
            self.declare_schedules()
        super().start()

    def declare_schedules(self) -> AppliedDeclarations:
        """Put the config's and the plugins' schedules in the database; `start` does it.

        Idempotent: an equal definition changes nothing, so every node may do
        it, at the same time too.
        """
        declared = declarations(
            self.config.schedules, self.plugins.schedules() if self.plugins is not None else []
        )
        return apply_declarations(self.schedule_admin, declared)

    @functools.cached_property
    def schedule_admin(self) -> ScheduleAdmin:
        """The schedules in the node's database (its tables made if missing, as `start` would)."""
        check_runnable(self.engine)  # a schema of another version: refuse before touching it
        create_schema(self.engine)
        return ScheduleAdmin(self.database, self.executor_names)

    # -- schedules --

    def add_schedule(self, schedule: Schedule) -> str:
        """Store `schedule` (source ``api``): ``added``, ``replaced`` or ``unchanged``.

        Its executor must be one this node knows, or nothing is stored (ScheduleError).
        """
        return self.schedule_admin.add(schedule, "api")

    def schedules(self) -> list[StoredSchedule]:
        """Every schedule in the database, by name."""
        return self.schedule_admin.store.list()

    def schedule(self, name: str) -> StoredSchedule:
        """The schedule `name`; ScheduleError naming the schedules there are when none is."""
        return self.schedule_admin.get(name)

    def pause_schedule(self, name: str) -> bool:
        """Make no more jobs of `name` (on every node); False if it was paused already."""
        return self.schedule_admin.pause(name)

    def resume_schedule(self, name: str) -> bool:
        """Let `name` fire again; False if it was not paused."""
        return self.schedule_admin.resume(name)

    def remove_schedule(self, name: str) -> None:
        """Remove `name` (its jobs made already stay); ScheduleError if there is none."""
        self.schedule_admin.remove(name)

    # -- flow limits --

    @functools.cached_property
    def limit_admin(self) -> LimitAdmin:
        """The limits in the node's database (its tables made if missing, as `start` would).

        It shares the node's `LimitStore`, so this node's claims follow a change at once;
        a removed operator limit gives its target back to this node's declared limits.
        """
        check_runnable(self.engine)
        create_schema(self.engine)
        return LimitAdmin(
            self.flow.limits,
            lambda: declared_limits(self.config.limits, self._executor_limits),
        )

    def set_limit(
        self,
        target: str | LimitTarget,
        *,
        rate: float | None = None,
        per: str = "second",
        burst: int = 1,
        max_concurrent: int | None = None,
    ) -> str:
        """Limit `target` (``executor:NAME``, ``repository:NAME``, ``key:VALUE``) cluster-wide
        until `remove_limit`: ``added``, ``replaced`` or ``unchanged``.

        `rate` starts per `per` (``second`` or ``minute``), up to `burst` back to
        back, and/or at most `max_concurrent` jobs in flight.  It overrides a
        declared limit on the target; a refused one (LimitError) stores nothing.
        """
        return self.limit_admin.set(
            target, rate=rate, per=per, burst=burst, max_concurrent=max_concurrent
        )[1]

    def limits(self) -> list[StoredLimit]:
        """Every target's limit and state (throttled gateways' holds too), by target."""
        return self.limit_admin.limits()

    def remove_limit(self, target: str | LimitTarget) -> StoredLimit | None:
        """Remove `target`'s limit; the limit this node declares for it (None: none) holds
        again in its place.  LimitError if `target` has no limit."""
        return self.limit_admin.remove(target).in_force

    # -- jobs --

    @functools.cached_property
    def admin(self) -> JobAdmin:
        """List, show, cancel, retry, run-now, stats: see infsched.management.

        Built on first use from the node's own engine, history and repositories.
        """
        return JobAdmin(
            self.database,
            self.history,
            actor=self.config.node_id,
            repositories=list(self.bindings),
            bindings=lambda: list(self.bindings.values()),
            store=self.store,
        )

    def pause(self, repository: str | None = None) -> None:
        """Pause fetching and claiming, for one repository or all; holds for every node.

        A repository neither served here nor known to the database is refused.
        """
        self.admin.names.require_scope(repository)
        self.controls.pause(repository, by=self.config.node_id)

    def resume(self, repository: str | None = None) -> None:
        self.admin.names.require_scope(repository)
        self.controls.resume(repository)

    def list_jobs(
        self,
        *,
        state: str | None = None,
        repository: str | None = None,
        due_before: datetime | None = None,
        limit: int = 100,
    ) -> list[JobRow]:
        """Jobs waiting, running or dead, soonest due first."""
        return self.admin.list_jobs(
            state=state, repository=repository, due_before=due_before, limit=limit
        )

    def cancel(self, job_keys: Sequence[str], repository: str | None = None) -> int:
        """Cancel waiting or dead jobs (recorded as cancelled); a running one raises.

        With `repository`, entity ids too; one with no job yet never gets one.
        """
        return self.admin.cancel(job_keys, repository)

    def retry(self, job_keys: Sequence[str] = (), *, repository: str | None = None) -> int:
        """Dead letters (these, these entities' of `repository`, or all of it) due now."""
        return self.admin.retry(job_keys, repository=repository)

    def run_now(self, job_keys: Sequence[str], repository: str | None = None) -> int:
        """Make waiting jobs due now; with `repository`, entity ids too (see JobAdmin.run_now)."""
        return self.admin.run_now(job_keys, repository)

    def stats(self, lag_minutes: float = 5.0) -> Stats:
        return self.admin.stats(lag_minutes)

    def status(self, repository: str, entity_id: object) -> JobStatus:
        """The entity's live job row, if any, and every recorded outcome in retention.

        An entity with no job yet has state ``pending`` and its due time in `pending_due`.
        """
        found = self.admin.show(str(entity_id), repository)
        return found[0] if found else JobStatus(repository, str(entity_id), None, ())
