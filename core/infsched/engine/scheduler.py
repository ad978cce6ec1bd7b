"""SchedulerNode: one node's fetchers, workers and maintenance, started and stopped together.

The engine's part of `infsched.InfiniteScheduler`, which adds the operator's
methods (pause, list_jobs, cancel, ...: infsched.management.scheduler) on top;
the engine itself never reaches up into management.

    scheduler = InfiniteScheduler(
        repositories=[RepositoryBinding(sms_repo, executor="sms")],
        config=SchedulerConfig(fetch_interval=25, lookahead_window=30),
    )
    with scheduler:          # start(); stop(grace) on exit
        ...

A plain repository (not a binding) is bound to the executor of its own name;
the repositories of a config (`open_repositories`) to the executors it names,
found in the plugins they were built with unless `plugins` says otherwise.
Executors come from the `executors` argument or, by name, from the plugins.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa

from infsched.clock import Clock, SystemClock
from infsched.cluster.member import ClusterMember, Lease
from infsched.cluster.outage import DatabaseOutage
from infsched.config import SchedulerConfig, from_plugin_section
from infsched.configured_repositories import ConfiguredRepositories, ConfiguredRepository
from infsched.database import Database, database_of, open_database, same_database
from infsched.engine.binding import BoundExecutor, RepositoryBinding
from infsched.engine.controls import Controls
from infsched.engine.fetcher import Fetcher
from infsched.engine.flow import FlowControl
from infsched.engine.gauges import GaugeSampler
from infsched.engine.history import HISTORY_REPOSITORY, History, JobOutcome
from infsched.engine.outcomes import describe
from infsched.engine.retry import RetryPolicy
from infsched.engine.schedule_materializer import ScheduleMaterializer
from infsched.engine.workers import Workers
from infsched.errors import InvalidArgumentError, SchedulerStateError
from infsched.executors import BatchExecutor, Executor, ExecutorSpec
from infsched.flow_limits import Limit, LimitScope, LimitTarget
from infsched.jobstore.base import JobStore
from infsched.limit_store import LimitStore
from infsched.metrics.recorder import MetricsRecorder
from infsched.metrics.sink import MetricsSink
from infsched.plugins import PluginRegistry, open_job_store
from infsched.repositories.backend import RepositoryFactory, RepositoryOptions
from infsched.repositories.base import SchedulingSource, ShardingRepository, ShardMaintenance
from infsched.repositories.multi_table import MultiTableRepository
from infsched.repositories.partitioned import PartitionedRepository
from infsched.schedule_store import ScheduleStore
from infsched.schema_versions import check_runnable

log = logging.getLogger("infsched.scheduler")

ExecutorLike = Executor[Any] | BatchExecutor[Any] | ExecutorSpec

#: Seconds between maintenance runs (create ahead, drop past retention).
MAINTENANCE_INTERVAL = 3600.0
#: Seconds a throttled gateway's row (no limit of its own) is kept after its hold ends:
#: a gateway throttling now and then keeps one row instead of making a new one each time.
SPENT_HOLD_KEPT = 3600.0


#: The backends the history can be kept in, by name.
_HISTORY_BACKENDS: dict[str, RepositoryFactory] = {
    PartitionedRepository.backend: PartitionedRepository,
    MultiTableRepository.backend: MultiTableRepository,
}


def history_repository(
    database: Database, retention_days: int
) -> ShardingRepository[JobOutcome, int]:
    """The history repository, in the dialect's default backend (partitioned on MySQL, PostgreSQL).

    One table per day, which every database can hold, where that default is
    a plugin's backend.
    """
    options = RepositoryOptions(
        name=HISTORY_REPOSITORY,
        entity_type=JobOutcome,
        engine=database.engine,
        database=database,
        retention_days=retention_days,
        precreate_days=1,
        clock=database.clock,
        scheduled=False,
    )
    backend = database.dialect.default_repository_backend
    return _HISTORY_BACKENDS.get(backend, MultiTableRepository)(options)


def _fixed(executor: Executor[Any] | BatchExecutor[Any]) -> Any:
    """A factory that returns an executor built by the caller."""
    return lambda _section: executor


#: What a scheduler can serve: a repository (bound to the executor of its name), a binding,
#: or a repository built from config (bound to its ``executor`` at its ``priority``).
Servable = SchedulingSource[Any, Any] | RepositoryBinding | ConfiguredRepository


def _bind(item: Servable) -> RepositoryBinding:
    if isinstance(item, RepositoryBinding):
        return item
    if isinstance(item, ConfiguredRepository):
        return RepositoryBinding(
            item.repository,
            executor=item.config.executor,
            default_priority=item.config.priority,
            flow_key=item.config.flow_key,
        )
    return RepositoryBinding(item, executor=item.name)


class SchedulerNode:
    """A scheduler node serving one or more repositories: its threads and their lifecycle."""

    def __init__(
        self,
        repositories: Iterable[Servable],
        config: SchedulerConfig | None = None,
        *,
        executors: Mapping[str, ExecutorLike] | None = None,
        plugins: PluginRegistry | None = None,
        clock: Clock | None = None,
        metrics_sinks: Sequence[MetricsSink] = (),
        engine: sa.Engine | None = None,
        database: Database | None = None,
    ) -> None:
        """`database` (or `engine`, made into one) is the node's; by default one is opened
        from the config's ``database_url``, and disposed of when the node stops."""
        self.config = config or SchedulerConfig()
        #: The node's own clock; `clock` is it corrected to the database's (see infsched.dbtime).
        self.node_clock = clock or SystemClock()
        bound = [_bind(item) for item in repositories]
        self.bindings = {b.name: b for b in bound}
        if len(self.bindings) != len(bound):
            raise InvalidArgumentError("two repositories have the same name")
        self._owns_engine = engine is None and database is None
        if database is None:
            database = (
                open_database(
                    self.config.database_url,
                    clock=self.node_clock,
                    pool_size=self.config.thread_pool_size + 5,
                )
                if engine is None
                else database_of(engine, self.node_clock)
            )
        #: The node's database: its engine, its dialect, and `clock`.
        self.database = database
        self.engine = database.engine
        self.clock: Clock = database.clock
        if plugins is None and isinstance(repositories, ConfiguredRepositories):
            plugins = repositories.plugins  # the plugins the repositories were built with
        #: The configured job store (`job_store`), as its plugin's factory builds it.
        self.store: JobStore = open_job_store(plugins, self.config.job_store, database)
        self.controls = Controls(database)
        self.metrics = MetricsRecorder(metrics_sinks)
        #: One log line when database trouble starts and one when it ends, for all threads.
        self.outage = DatabaseOutage(metrics=self.metrics)
        self.history = History(
            history_repository(database, self.config.history_retention_days),
            self.config.node_id,
            database,
        )
        self._given_executors: Mapping[str, ExecutorLike] = executors or {}
        #: The plugins whose executors (and schedules) this node knows; None: only `executors`.
        self.plugins = plugins
        #: The executors a schedule's run on this node may name: those passed in, the plugins'.
        self.executor_names = frozenset(self._given_executors) | frozenset(
            plugins.executors() if plugins is not None else ()
        )
        #: The limits executors declare (their ExecutorSpec.limit), put when the node starts.
        self._executor_limits: list[Limit] = []
        #: The executors this node made from a spec's factory, closed when it stops.
        self._made: list[tuple[str, object]] = []
        self._executors = self._resolve(self._given_executors, plugins)
        #: The flow limits (infsched_limits) the claims follow and throttled runs hold.
        self.flow = FlowControl(LimitStore(database))
        #: The recurring schedules (infsched_schedules), made jobs by `materializer`.
        self.schedule_store = ScheduleStore(database)
        self.gauges = GaugeSampler(
            self.store,
            self.metrics,
            self.config.node_id,
            list(self.bindings),
            interval=self.config.heartbeat_interval,
            limits=self.flow.limits,
        )
        self.fetchers = [
            Fetcher(
                b,
                self.store,
                self.config,
                self.clock,
                self.metrics,
                self.controls,
                database,
                self._database_of(b.repository),
            )
            for b in self.bindings.values()
        ]
        self.workers = Workers(
            node_id=self.config.node_id,
            store=self.store,
            history=self.history,
            bindings=self.bindings,
            executors=self._executors,
            config=self.config,
            clock=self.clock,
            metrics=self.metrics,
            controls=self.controls,
            job_lease=self.config.job_lease,
            outage=self.outage,
            late_executor=self._late_executor,
            flow=self.flow,
        )
        self.materializer = ScheduleMaterializer(
            schedules=self.schedule_store,
            store=self.store,
            history=self.history,
            database=database,
            config=self.config,
            metrics=self.metrics,
        )
        self.member = ClusterMember(
            database=database,
            jobs=self.store,
            node_id=self.config.node_id,
            heartbeat_interval=self.config.heartbeat_interval,
            job_lease=self.config.job_lease,
            in_flight=lambda: self.workers.outstanding,
            metrics=self.metrics,
            outage=self.outage,
        )
        # One node at a time fetches a repository, and one maintains it.
        self.fetch_leases = {name: self.member.lease(f"fetch:{name}") for name in self.bindings}
        # One node at a time makes the schedules' occurrences jobs.
        self.schedules_lease = self.member.lease("schedules")
        maintained = {name: b.repository for name, b in self.bindings.items()}
        maintained[HISTORY_REPOSITORY] = self.history.repository
        self.maintenance_leases: dict[str, tuple[ShardMaintenance, Lease]] = {
            name: (repo, self.member.lease(f"maintain:{name}")) for name, repo in maintained.items()
        }
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False

    def _database_of(self, repository: SchedulingSource[Any, Any]) -> Database:
        """The database holding `repository`: the node's, or its own one's."""
        if same_database(repository.engine, self.engine):
            return self.database
        return database_of(repository.engine, self.node_clock)

    def _resolve(
        self, given: Mapping[str, ExecutorLike], plugins: PluginRegistry | None
    ) -> dict[str, BoundExecutor]:
        needed = {b.executor for b in self.bindings.values()}
        bound: dict[str, BoundExecutor] = {}
        for name in sorted(needed):
            if name not in given and plugins is None:
                raise InvalidArgumentError(
                    f"no executor {name!r}: pass it in executors= or give the plugins"
                )
            bound[name] = self._bind(name, given, plugins)
        return bound

    def _declared_limit(
        self, spec: ExecutorSpec, section_name: str, section: Mapping[str, Any]
    ) -> None:
        limit = from_plugin_section(section_name, spec.limit_for, section)
        if limit is not None:
            self._executor_limits.append(Limit(LimitTarget(LimitScope.EXECUTOR, spec.name), limit))

    def _late_executor(self, name: str) -> BoundExecutor | None:
        """The executor `name` bound when a schedule's run first needs it; None if unknown."""
        if name not in self.executor_names:
            return None
        return self._bind(name, self._given_executors, self.plugins)

    def _bind(
        self, name: str, given: Mapping[str, ExecutorLike], plugins: PluginRegistry | None
    ) -> BoundExecutor:
        item = given.get(name)
        section: Mapping[str, Any] = {}
        section_name = name
        if item is None:
            assert plugins is not None, "an executor not given comes from the plugins"
            item = plugins.executor(name)
            section_name = plugins.executors()[name].plugin
            section = self.config.plugin_section(section_name)
        if isinstance(item, ExecutorSpec):
            spec = item
            instance = from_plugin_section(section_name, spec.factory, section)
            self._made.append((name, instance))
            self._declared_limit(spec, section_name, section)
        else:
            instance = item
            spec = ExecutorSpec(name=name, factory=_fixed(item))
        retry = RetryPolicy(
            max_attempts=spec.max_attempts,
            base_delay=self.config.retry_base_delay,
            max_delay=self.config.retry_max_delay,
        )
        return BoundExecutor.bind(spec, instance, retry)

    # -- lifecycle --

    def start(self) -> None:
        """Create what is missing, join the cluster, maintain what this node leads, start threads.

        Joining registers the node, takes back what an earlier process under
        this node id left claimed, and takes the leases nobody holds.
        """
        if self._started:
            raise SchedulerStateError("this scheduler is already started")
        check_runnable(self.engine)  # a schema of another version: refuse before touching it
        self.store.create_schema()
        self.flow.declare(self.config.limits, self._executor_limits)
        self.member.join()
        self._maintain_due(force=True)
        for fetcher in self.fetchers:
            run = functools.partial(
                fetcher.run, lease=self.fetch_leases[fetcher.binding.name], outage=self.outage
            )
            self._spawn(run, f"infsched-fetch-{fetcher.binding.name}")
        self._spawn(
            functools.partial(
                self.materializer.run, lease=self.schedules_lease, outage=self.outage
            ),
            "infsched-schedules",
        )
        self._spawn(self._maintenance_loop, "infsched-maintenance")
        self._spawn(self.gauges.run, "infsched-gauges")
        self.workers.start()
        self.member.start()
        self._started = True
        log.info("scheduler node %s started: %s", self.config.node_id, ", ".join(self.bindings))

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, args=(self._stop,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, grace: float = 30.0) -> None:
        """Stop fetching, let in-flight jobs finish within `grace` seconds, release the rest."""
        if not self._started:
            return
        self._stop.set()
        self.member.mark_stopping()
        for thread in self._threads:
            thread.join(timeout=30)
        # Fetching and maintenance move to another node now, not when the leases expire.
        self.member.release_leases()
        self.workers.stop(grace)
        self._close_executors()
        self.member.stop()
        self.metrics.close()
        if self._owns_engine:
            self.engine.dispose()
        self._started = False
        log.info("scheduler node %s stopped", self.config.node_id)

    def _close_executors(self) -> None:
        """Close what this node made from a factory, once its last run ended: an SMPP
        session unbinds instead of reconnecting after the node, an HTTP pool lets go.
        Executors passed in are their owner's to close."""
        made, self._made = self._made, []
        for name, instance in made:
            close = getattr(instance, "close", None)
            if not callable(close):
                continue
            try:
                close()
            except Exception as exc:
                log.warning("executor %s did not close cleanly: %s", name, describe(exc))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- maintenance --

    def maintain(self) -> None:
        for binding in self.bindings.values():
            report = binding.repository.maintain()
            if report.created or report.dropped:
                log.info(
                    "maintenance of %s: created %s, dropped %s",
                    binding.name,
                    list(report.created),
                    list(report.dropped),
                )
        self.history.repository.maintain()

    def _maintain_due(self, *, force: bool = False) -> bool:
        """Maintain each repository whose maintenance lease this node holds, when it is due.

        Due means the lease's state (left by whichever node maintained last)
        says the last run is MAINTENANCE_INTERVAL old, or `force`.  Returns
        whether any maintenance ran.
        """
        ran = False
        for name, (repository, lease) in self.maintenance_leases.items():
            if not lease.held():
                continue
            now = self.clock.now()
            last = (lease.state or {}).get("last_run_at")
            if not force and isinstance(last, str):
                elapsed = (now - datetime.fromisoformat(last)).total_seconds()
                if 0 <= elapsed < MAINTENANCE_INTERVAL:
                    continue
            report = repository.maintain()
            if name == HISTORY_REPOSITORY:
                self._drop_spent_holds(now)
            ran = True
            lease.note(
                last_run_at=now.isoformat(),
                node=self.config.node_id,
                created=len(report.created),
                dropped=len(report.dropped),
            )
            if report.created or report.dropped:
                log.info(
                    "maintenance of %s: created %s, dropped %s",
                    name,
                    list(report.created),
                    list(report.dropped),
                )
        return ran

    def _maintenance_loop(self, stop: threading.Event) -> None:
        watch = self.outage.watch("maintenance")
        while not stop.wait(min(self.config.heartbeat_interval, MAINTENANCE_INTERVAL)):
            try:
                if self._maintain_due():
                    watch.ok()
                else:
                    watch.idle()
            except Exception as exc:
                # Not recorded as run: tried again at the next turn.
                watch.failed(exc)

    def _drop_spent_holds(self, now: datetime) -> None:
        """With the history's maintenance (one node, hourly): the cluster's throttle rows
        whose hold ended SPENT_HOLD_KEPT ago, so `infsched limits show` and the claims
        forget a gateway that throttled once."""
        dropped = self.flow.limits.drop_spent_holds(now - timedelta(seconds=SPENT_HOLD_KEPT))
        if dropped:
            log.info(
                "maintenance: dropped %d throttle holds that ended over %g s ago",
                dropped,
                SPENT_HOLD_KEPT,
            )

    def run_fetch_cycles(self) -> int:
        """Run one fetch cycle of every repository now; returns the jobs moved."""
        return sum(f.run_cycle().moved for f in self.fetchers)
