"""Fetcher: moves a repository's due entities into the job store.

Each cycle reads entities due before ``now + lookahead_window`` that have no
job yet, from the oldest retained day on, not just ``[now, now + lookahead]``:
an entity inserted after its due time, one that came due while no node ran,
and one beyond the last cycle's max_jobs_per_fetch are all still unscheduled,
so they are found.  Each batch becomes jobs in one transaction with the mark
on the entities (when the repository shares the job store's database), so a
crash never leaves an entity marked without a job or counted before its job
is committed; INSERT IGNORE on the unique job key makes a repeated batch
harmless.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.clock import Clock, from_utc_naive, utc_naive
from infsched.cluster.member import Lease
from infsched.cluster.outage import DatabaseOutage
from infsched.config import SchedulerConfig
from infsched.conflict_retries import retrying_conflicts
from infsched.database import Database, same_database
from infsched.engine.binding import PRIORITY_FIELD, RepositoryBinding
from infsched.engine.controls import Controls
from infsched.jobstore.base import FLOW_KEY_LENGTH, JobState, JobStore, NewJob
from infsched.metrics.recorder import MetricsRecorder
from infsched.repositories.base import EXAMPLE_IDS, LockedEntities

log = logging.getLogger("infsched.fetcher")

#: Seconds between looks at the fetch lease while another node holds it (no database access).
STANDBY_POLL = 0.05


class _Budget:
    """What is left of one cycle's max_jobs_per_fetch, shared by its movers."""

    def __init__(self, total: int) -> None:
        self._left = total
        self._lock = threading.Lock()
        #: Set when a batch came back short (nothing more is free) or failed.
        self._closed = False
        self.moved = 0

    @property
    def open(self) -> bool:
        with self._lock:
            return not self._closed and self._left > 0

    def take(self, size: int) -> int:
        """Reserve up to `size` entities for one batch; 0 when the cycle is over."""
        with self._lock:
            if self._closed:
                return 0
            taken = min(size, self._left)
            self._left -= taken
            return taken

    def settle(self, taken: int, moved: int) -> None:
        with self._lock:
            self._left += taken - moved
            self.moved += moved
            if moved < taken:
                self._closed = True


class _Cursor:
    """Where a cycle's next batch starts to read: at the last key earlier batches locked.

    The rows a batch marks leave the unscheduled stretch of the mark index,
    but InnoDB purges their old entries only later; a batch reading from the
    retention horizon stepped over every row marked so far in the cycle, and
    its locking SELECT cost three times as much (5 against 15 µs a row,
    docs/performance.md).  Each cycle still starts at the horizon, so late
    entities are found; a batch that rolls back puts the cursor back to its
    first key, so its rows are found in the same cycle.
    """

    def __init__(self, start: datetime) -> None:
        self._lock = threading.Lock()
        self._reached = start
        self._rewound: datetime | None = None

    @property
    def position(self) -> datetime:
        with self._lock:
            if self._rewound is not None:
                return min(self._reached, self._rewound)
            return self._reached

    def passed(self, last: datetime) -> None:
        """A batch locked rows up to the key `last` (inclusive: it may hold more rows)."""
        with self._lock:
            self._reached = max(self._reached, last)

    def rewind(self, first: datetime) -> None:
        """A batch from the key `first` on rolled back: its rows are unscheduled again."""
        with self._lock:
            self._rewound = first if self._rewound is None else min(self._rewound, first)


@attrs.frozen
class CycleResult:
    moved: int
    #: The cycle stopped at max_jobs_per_fetch: more may be waiting.
    full: bool


class Fetcher:
    """One repository's fetch loop."""

    def __init__(
        self,
        binding: RepositoryBinding,
        store: JobStore,
        config: SchedulerConfig,
        clock: Clock,
        metrics: MetricsRecorder,
        controls: Controls,
        database: Database,
        repository_database: Database,
    ) -> None:
        """`database` is the node's (the store's engine's); `repository_database` holds the
        binding's repository, and may be the same."""
        self.binding = binding
        self.store = store
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.controls = controls
        self._labels = {"repository": binding.name}
        self.repository_database = repository_database
        self._shared_db = same_database(binding.repository.engine, store.engine)
        self._dialect = database.dialect
        concurrent = (
            self._dialect.concurrent_writers and repository_database.dialect.concurrent_writers
        )
        self._movers = config.fetch_connections if concurrent else 1

    def new_jobs(self, entities: Sequence[Any]) -> list[NewJob]:
        return [self.binding.new_job(entity) for entity in entities]

    def _next_batch(self, cursor: _Cursor, end: datetime, limit: int) -> int:
        """Lock up to `limit` unscheduled entities, add their jobs, mark them; one transaction.

        The entities stay locked (SKIP LOCKED for other fetchers) until the jobs
        and the marks commit together, so no entity is scheduled twice and none
        is counted before its job is committed.
        """
        # The keys this batch took, once it has locked them: if it then fails (its
        # commit included), the cursor goes back to the first so they are found again.
        taken: list[datetime] = []
        try:
            if self._shared_db:
                return self._copy_batch(cursor, end, limit, taken)
            return self._add_batch(cursor, end, limit, taken)
        except BaseException:
            if taken:
                cursor.rewind(taken[0])
            raise

    def _copy_batch(self, cursor: _Cursor, end: datetime, limit: int, taken: list[datetime]) -> int:
        """One database: the rows are copied by INSERT … SELECT inside it.

        Only the ids cross the wire; PyMySQL's per-value costs stay out of it.
        """
        repo = self.binding.repository
        now = self.clock.now()
        with self.store.engine.begin() as conn:
            began = time.monotonic()
            locked = repo.lock_unscheduled(conn, cursor.position, end, limit)
            self.metrics.observe("repository_query_seconds", time.monotonic() - began, self._labels)
            if not locked:
                return 0
            taken[:] = [from_utc_naive(min(lot.first for lot in locked))]
            cursor.passed(from_utc_naive(max(lot.last for lot in locked)))
            for table, where in repo.sources(locked):
                self.store.add_jobs_from(conn, self._copy(table, where, now))
            repo.mark_locked(conn, locked, now)
        self._report_misrouted(locked)
        return sum(len(lot.ids) for lot in locked)

    def _add_batch(self, cursor: _Cursor, end: datetime, limit: int, taken: list[datetime]) -> int:
        """Two databases: the jobs commit first, then the marks.

        A crash in between leaves the entities unmarked; the next cycle offers
        the same job keys and the store ignores those still waiting (see
        docs/architecture.md).
        """
        repo = self.binding.repository
        now = self.clock.now()
        with repo.engine.begin() as conn:
            began = time.monotonic()
            # Locked and marked per table, as in _copy_batch: a row another application
            # wrote into the wrong day's table is marked where it is.
            locked = repo.lock_unscheduled(conn, cursor.position, end, limit)
            entities = repo.read_locked(conn, locked) if locked else []
            self.metrics.observe("repository_query_seconds", time.monotonic() - began, self._labels)
            if not entities:
                return 0
            taken[:] = [from_utc_naive(min(lot.first for lot in locked))]
            cursor.passed(from_utc_naive(max(lot.last for lot in locked)))
            with self.store.engine.begin() as store_conn:
                self.store.add_jobs(store_conn, self.new_jobs(entities))
            repo.mark_locked(conn, locked, now)
        self._report_misrouted(locked)
        return len(entities)

    def _report_misrouted(self, locked: Sequence[LockedEntities]) -> None:
        """Say loudly that rows were found outside their table's day (they were scheduled).

        Another application wrote them into the wrong day table (or, due before the
        retention horizon, into the oldest partition): they run, but whoever wrote
        them should hear of it, and `infsched partitions check` lists them.
        """
        for lot in locked:
            if not lot.misrouted:
                continue
            self.metrics.increment("entities_misrouted_total", len(lot.misrouted), self._labels)
            log.warning(
                "repository %s: %d entities in table %s are due outside the days it holds "
                "(written there by hand?); scheduled all the same. Ids: %s%s. "
                "`infsched partitions check` lists them",
                self.binding.name,
                len(lot.misrouted),
                lot.table.name,
                ", ".join(str(i) for i in lot.misrouted[:EXAMPLE_IDS]),
                "" if len(lot.misrouted) <= EXAMPLE_IDS else ", …",
            )

    def _copy(
        self, table: sa.Table, where: sa.ColumnElement[bool], now: datetime
    ) -> sa.Select[Any]:
        """The SELECT producing job rows (jobstore.base.COPY_COLUMNS) from entity rows."""
        spec, dialect = self.binding.spec, self._dialect
        entity_id = table.c[spec.id_column.name]
        due = table.c[spec.sharding_column.name]
        payload = dialect.json_object(
            [(c.name, dialect.json_field(table.c[c.name], c.python_type)) for c in spec.columns]
        )
        default = sa.literal(self.binding.default_priority, sa.Integer())
        has_priority = any(c.name == PRIORITY_FIELD and c.python_type is int for c in spec.columns)
        priority = sa.func.coalesce(table.c[PRIORITY_FIELD], default) if has_priority else default
        return sa.select(
            dialect.job_key(self.binding.name, entity_id, due),
            sa.literal(self.binding.name),
            sa.literal(self.binding.executor),
            sa.cast(entity_id, sa.String(191)),
            due,
            due,
            priority,
            self._flow_key(table),
            sa.literal(JobState.WAITING.value),
            sa.literal(0, sa.Integer()),
            payload,
            sa.literal(utc_naive(now), sa.DateTime()),
        ).where(where)

    def _flow_key(self, table: sa.Table) -> sa.ColumnElement[str]:
        """The jobs' flow key in SQL, to the character of `RepositoryBinding.flow_key_of`."""
        field = self.binding.flow_key
        if field is None:
            return sa.literal("", sa.String())
        text = sa.func.substr(
            sa.cast(table.c[field], sa.String(FLOW_KEY_LENGTH)), 1, FLOW_KEY_LENGTH
        )
        return sa.func.coalesce(text, sa.literal("", sa.String()))

    def run_cycle(self) -> CycleResult:
        """Move what is due within the lookahead window, up to max_jobs_per_fetch.

        The first batch goes alone: most cycles find less than one.  When it
        comes back full, the rest of the cycle runs on `fetch_connections`
        movers at once, each taking whole batches in its own transaction
        (SKIP LOCKED keeps their batches apart).  One connection leaves the
        database's other cores idle while it writes: on two cores, two movers
        schedule about half as fast again as one (docs/performance.md).
        """
        started = time.monotonic()
        end = self.clock.now() + timedelta(seconds=self.config.lookahead_window)
        cursor = _Cursor(self.binding.repository.retention_horizon())
        budget = _Budget(self.config.max_jobs_per_fetch)
        self._move(budget, cursor, end, batches=1)
        if self._movers > 1 and budget.open:
            self._move_concurrently(budget, cursor, end)
        else:
            self._move(budget, cursor, end)
        self.metrics.observe("fetch_cycle_seconds", time.monotonic() - started, self._labels)
        self.metrics.observe("fetch_cycle_entities", budget.moved, self._labels)
        return CycleResult(budget.moved, budget.moved >= self.config.max_jobs_per_fetch)

    def _move(
        self, budget: _Budget, cursor: _Cursor, end: datetime, batches: float = math.inf
    ) -> None:
        """Move batches until the budget is spent, a batch comes back short, or `batches` ran."""
        done = 0
        while done < batches and (limit := budget.take(self.config.batch_size)):
            count = 0
            try:
                count = self._batch_retrying_conflicts(cursor, end, limit)
            finally:
                budget.settle(limit, count)
            if count:
                # Counted only now: the batch's transaction has committed.
                self.metrics.increment("jobs_scheduled_total", count, self._labels)
            done += 1

    def _move_concurrently(self, budget: _Budget, cursor: _Cursor, end: datetime) -> None:
        errors: list[BaseException] = []

        def mover() -> None:
            try:
                self._move(budget, cursor, end)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=mover, name=f"infsched-fetch-{self.binding.name}-{i}")
            for i in range(self._movers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def _batch_retrying_conflicts(self, cursor: _Cursor, end: datetime, limit: int) -> int:
        """One batch; a deadlock the database broke (it rolled the batch back) is retried."""

        def again(exc: sa.exc.DBAPIError) -> None:
            log.debug("fetch batch of %s rolled back by a lock conflict, again", self._labels)

        return retrying_conflicts(lambda: self._next_batch(cursor, end, limit), on_conflict=again)

    def run(
        self,
        stop: threading.Event,
        *,
        lease: Lease | None = None,
        outage: DatabaseOutage | None = None,
    ) -> None:
        """Cycle until `stop` is set; a full cycle is followed by the next at once.

        With a `lease`, cycles run only while this node holds it (one node
        fetches a repository at a time); the others wait for it to come free.
        Each cycle starts from the retention horizon, so whoever holds the
        lease next carries on where the last holder stopped.  Database errors
        are reported to `outage` (one log line per outage, not per cycle).
        """
        watch = (outage or DatabaseOutage()).watch(f"fetcher {self.binding.name}")
        while not stop.is_set():
            if lease is not None and not lease.held():
                watch.idle()
                stop.wait(STANDBY_POLL)
                continue
            wait = self.config.fetch_interval
            try:
                if not self.controls.is_paused(self.binding.name):
                    # Everything due before this was scheduled once the cycle returns.
                    due_through = self.clock.now() + timedelta(seconds=self.config.lookahead_window)
                    result = self.run_cycle()
                    if lease is not None:
                        lease.note(
                            last_cycle_at=self.clock.now().isoformat(),
                            due_through=due_through.isoformat(),
                            moved=result.moved,
                            full=result.full,
                        )
                    if result.full:
                        wait = 0.0
                watch.ok()
            except Exception as exc:
                wait = min(wait, watch.failed(exc))
            stop.wait(wait)
