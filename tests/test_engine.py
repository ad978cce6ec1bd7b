"""The engine's guarantees, each against MariaDB and, where it applies, SQLite."""

from __future__ import annotations

import enum
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from infsched.config import SchedulerConfig
from infsched.database import create_engine
from infsched.dburl import DatabaseUrl
from infsched.dialects import dialect_for
from infsched.engine.binding import RepositoryBinding
from infsched.engine.fetcher import Fetcher
from infsched.engine.scheduler import ExecutorLike
from infsched.entities import column, id_field, sharding_key
from infsched.executors import ExecutorSpec, JobContext
from infsched.jobstore.base import Outcome, entity_key_prefix, entity_of_key, job_key
from infsched.jobstore.tables import jobs
from infsched.management.scheduler import InfiniteScheduler
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import ShardingRepository
from infsched.repositories.multi_table import MultiTableRepository
from infsched.repositories.partitioned import PartitionedRepository
from tests.engine_support import (
    RecordingExecutor,
    RecordingSink,
    Reminder,
    repository_for,
    wait_until,
)

FAST: dict[str, Any] = {
    "fetch_interval": 0.2,
    "lookahead_window": 1.0,
    "batch_size": 100,
    "heartbeat_interval": 0.5,
    "job_lease": 5.0,
    "retry_base_delay": 0.05,
    "retry_max_delay": 0.2,
    "thread_pool_size": 4,
}


def now() -> datetime:
    return datetime.now(UTC)


def reminders(count: int, due: datetime, text: str = "hello", priority: int = 0) -> list[Reminder]:
    return [
        Reminder(due=due + timedelta(milliseconds=i), text=text, priority=priority)
        for i in range(count)
    ]


def scheduler_for(
    url: DatabaseUrl,
    repo: ShardingRepository[Reminder, int],
    executor: Any,
    node: str = "node-a",
    **overrides: Any,
) -> InfiniteScheduler:
    config = SchedulerConfig(database_url=url, node_id=node, **{**FAST, **overrides})
    return InfiniteScheduler(
        [RepositoryBinding(repo, executor="remind")], config, executors={"remind": executor}
    )


def job_rows(s: InfiniteScheduler) -> int:
    with s.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one())


def history_states(s: InfiniteScheduler) -> Counter[str]:
    start = now() - timedelta(days=2)
    return Counter(
        o.state.value
        for o in s.history.repository.find_all_by_date_range(start, now() + timedelta(days=1))
    )


def test_late_overdue_and_timely_entities_each_run_once(every_url: DatabaseUrl) -> None:
    repo = repository_for(every_url)
    repo.maintain()
    timely = repo.insert_many(reminders(30, now() + timedelta(seconds=1)))
    overdue = repo.insert_many(reminders(10, now() - timedelta(hours=1), "overdue"))
    executor = RecordingExecutor()
    with scheduler_for(every_url, repo, executor) as s:
        late = repo.insert_many(reminders(10, now() - timedelta(seconds=5), "late"))
        wait_until(lambda: executor.count() >= 50, what="50 runs")
        wait_until(lambda: job_rows(s) == 0, what="the hot table to empty")
        keys = executor.keys()
        assert len(keys) == len(set(keys)) == 50
        ran = {c.entity_id for c in executor.calls}
        assert ran == {e.id for e in timely + overdue + late}
        assert history_states(s) == Counter({"succeeded": 50})
        outcomes = list(
            s.history.repository.find_all_by_date_range(
                now() - timedelta(days=1), now() + timedelta(days=1)
            )
        )
    # No job starts before it is due, to the microsecond the history keeps.
    assert all(o.started_at is not None and o.started_at >= o.due_at for o in outcomes)
    assert all(o.finished_at >= o.started_at for o in outcomes if o.started_at)


def test_backlog_beyond_max_jobs_per_fetch_drains_without_waiting(every_url: DatabaseUrl) -> None:
    repo = repository_for(every_url)
    repo.maintain()
    repo.insert_many(reminders(300, now() - timedelta(minutes=10)))
    executor = RecordingExecutor()
    # A fetch interval of 60 s: only back-to-back cycles can move 300 entities in time.
    with scheduler_for(
        every_url,
        repo,
        executor,
        fetch_interval=60,
        lookahead_window=90,
        max_jobs_per_fetch=20,
        batch_size=10,
    ):
        wait_until(lambda: executor.count() >= 300, timeout=20, what="the backlog")
    assert len(set(executor.keys())) == 300


def test_concurrent_movers_share_the_cycles_budget_and_schedule_each_entity_once(
    mysql_url: DatabaseUrl,
) -> None:
    repo = repository_for(mysql_url)
    repo.maintain()
    entities = repo.insert_many(reminders(300, now() - timedelta(minutes=5)))
    s = scheduler_for(
        mysql_url,
        repo,
        RecordingExecutor(),
        batch_size=10,
        max_jobs_per_fetch=95,
        fetch_connections=3,
    )
    s.store.create_schema()
    fetcher = s.fetchers[0]
    assert fetcher._movers == 3
    first = fetcher.run_cycle()
    # Three movers, batches of ten, and still exactly the cycle's 95.
    assert (first.moved, first.full) == (95, True)
    cycles = [fetcher.run_cycle() for _ in range(4)]
    assert [c.moved for c in cycles] == [95, 95, 15, 0]
    assert [c.full for c in cycles] == [True, True, False, False]
    with s.engine.connect() as conn:
        keys = conn.execute(sa.select(jobs.c.entity_id)).scalars().all()
    assert sorted(keys) == sorted(str(e.id) for e in entities)


def test_a_job_key_names_its_entity_and_starts_with_its_prefix() -> None:
    due = datetime(2026, 11, 27, 9, 0, 0, 1, tzinfo=UTC)
    for entity_id in (42, "a:b", "50%_off", ""):
        key = job_key("orders", entity_id, due)
        assert entity_of_key(key) == str(entity_id)
        assert key.startswith(entity_key_prefix("orders", entity_id))
    assert entity_of_key("no colon") is None
    assert entity_of_key("one:colon") is None


def test_status_by_entity_and_repository_reads_the_live_row_through_the_key_prefix(
    mysql_url: DatabaseUrl,
) -> None:
    repo = repository_for(mysql_url)
    repo.maintain()
    stored = repo.insert_many(reminders(3, now() + timedelta(minutes=10)))
    s = scheduler_for(mysql_url, repo, RecordingExecutor(), lookahead_window=3600)
    s.store.create_schema()
    s.run_fetch_cycles()
    status = s.status(repo.name, stored[1].id)
    assert status.live is not None
    assert status.live["entity_id"] == str(stored[1].id)
    assert status.state == "waiting"
    # The prefix ends at the colon: an id that starts another's matches nothing.
    assert s.status(repo.name, str(stored[1].id)[:-1]).live is None


def test_each_batch_of_a_cycle_reads_on_from_where_the_last_one_ended(
    every_url: DatabaseUrl, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read from the retention horizon each time, a batch steps over the index entries
    # of every row marked before it in the cycle (InnoDB purges them later).
    repo = repository_for(every_url)
    repo.maintain()
    first_due = now() - timedelta(minutes=5)
    entities = repo.insert_many(reminders(35, first_due))
    s = scheduler_for(every_url, repo, RecordingExecutor(), batch_size=10, fetch_connections=1)
    s.store.create_schema()
    starts: list[datetime] = []
    lock = repo.lock_unscheduled

    def recording(conn: sa.Connection, start: datetime, end: datetime, limit: int) -> Any:
        starts.append(start)
        return lock(conn, start, end, limit)

    monkeypatch.setattr(repo, "lock_unscheduled", recording)
    assert s.fetchers[0].run_cycle().moved == 35
    due = sorted(e.due for e in entities)
    assert starts == [repo.retention_horizon(), due[9], due[19], due[29]]
    # The next cycle starts at the horizon again: an entity that lands behind it is found.
    late = repo.insert(Reminder(due=first_due - timedelta(minutes=1), text="late"))
    assert s.fetchers[0].run_cycle().moved == 1
    assert starts[4] == repo.retention_horizon()
    with s.engine.connect() as conn:
        keys = conn.execute(sa.select(jobs.c.entity_id)).scalars().all()
    assert sorted(keys) == sorted(str(e.id) for e in [*entities, late])
    s.engine.dispose()


def test_a_repository_in_another_database_is_scheduled_batch_by_batch(
    mysql_url: DatabaseUrl, mysql_database_factory: Callable[[], DatabaseUrl]
) -> None:
    # Entities in one database, the job store in another: rows cross through Python,
    # the jobs commit before the marks, and batches still read on from the cursor.
    repo = repository_for(mysql_database_factory())
    repo.maintain()
    entities = repo.insert_many(reminders(35, now() - timedelta(minutes=5)))
    executor = RecordingExecutor()
    s = scheduler_for(mysql_url, repo, executor, batch_size=10)
    s.store.create_schema()
    assert not s.fetchers[0]._shared_db
    assert s.fetchers[0].run_cycle().moved == 35
    assert s.fetchers[0].run_cycle().moved == 0
    assert repo.find_unscheduled(repo.retention_horizon(), now(), 100) == []
    with s:
        wait_until(lambda: executor.count() >= 35, what="35 runs")
    assert sorted(c.entity_id for c in executor.calls) == sorted(e.id or 0 for e in entities)
    s.engine.dispose()


def test_a_batch_rolled_back_by_a_deadlock_is_found_again_in_the_same_cycle(
    every_url: DatabaseUrl, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = repository_for(every_url)
    repo.maintain()
    entities = repo.insert_many(reminders(50, now() - timedelta(minutes=5)))
    s = scheduler_for(every_url, repo, RecordingExecutor(), batch_size=10, fetch_connections=1)
    s.store.create_schema()
    mark = repo.mark_locked
    calls = [0]

    def deadlock_on_the_second_batch(*args: Any) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise sa.exc.OperationalError("UPDATE", {}, Exception(1213, "Deadlock found"))
        mark(*args)

    monkeypatch.setattr(repo, "mark_locked", deadlock_on_the_second_batch)
    # The retried batch reads from the rolled-back batch's first key, not past its last.
    assert s.fetchers[0].run_cycle().moved == 50
    with s.engine.connect() as conn:
        keys = conn.execute(sa.select(jobs.c.entity_id)).scalars().all()
    assert sorted(keys) == sorted(str(e.id) for e in entities)
    s.engine.dispose()


def test_sqlite_fetches_on_one_connection(sqlite_url: DatabaseUrl) -> None:
    repo = repository_for(sqlite_url)
    s = scheduler_for(sqlite_url, repo, RecordingExecutor(), fetch_connections=4)
    assert s.fetchers[0]._movers == 1


def test_repeated_and_racing_fetches_schedule_each_entity_once(every_url: DatabaseUrl) -> None:
    repo = repository_for(every_url)
    repo.maintain()
    entities = repo.insert_many(reminders(250, now()))
    s = scheduler_for(every_url, repo, RecordingExecutor(), batch_size=40)
    s.store.create_schema()
    fetcher = s.fetchers[0]
    # A crash after the jobs were written but before the entities were marked.
    with s.engine.begin() as conn:
        s.store.add_jobs(conn, fetcher.new_jobs(entities[:100]))
    # Two fetchers racing, each cycling over overlapping windows.
    other = Fetcher(
        fetcher.binding,
        s.store,
        s.config,
        s.clock,
        s.metrics,
        s.controls,
        s.database,
        fetcher.repository_database,
    )
    threads = [threading.Thread(target=f.run_cycle) for f in (fetcher, other, fetcher, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s.run_fetch_cycles()
    with s.engine.connect() as conn:
        keys = conn.execute(sa.select(jobs.c.entity_id)).scalars().all()
    assert sorted(keys) == sorted(str(e.id) for e in entities)
    assert repo.find_unscheduled(repo.retention_horizon(), now() + timedelta(days=1), 10) == []
    s.engine.dispose()


def test_a_job_is_committed_before_it_counts_as_scheduled(
    every_url: DatabaseUrl, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = repository_for(every_url)
    repo.maintain()
    repo.insert_many(reminders(5, now()))
    sink = RecordingSink()
    config = SchedulerConfig(database_url=every_url, **FAST)
    s = InfiniteScheduler(
        [RepositoryBinding(repo, executor="remind")],
        config,
        executors={"remind": RecordingExecutor()},
        metrics_sinks=[sink],
    )
    s.store.create_schema()

    def crash(*args: object, **kwargs: object) -> None:
        raise sa.exc.OperationalError("UPDATE", {}, Exception("connection lost"))

    monkeypatch.setattr(repo, "mark_locked", crash)
    with pytest.raises(sa.exc.OperationalError):
        s.run_fetch_cycles()
    assert job_rows(s) == 0  # the job insert was rolled back with the failed mark
    assert sink.counters["jobs_scheduled_total"] == 0
    monkeypatch.undo()
    assert s.run_fetch_cycles() == 5
    assert job_rows(s) == 5
    assert sink.counters["jobs_scheduled_total"] == 5
    s.engine.dispose()


@pytest.mark.parametrize("policy", ["fire_once_now", "do_nothing"])
def test_misfired_jobs_run_once_or_not_at_all(every_url: DatabaseUrl, policy: str) -> None:
    repo = repository_for(every_url)
    repo.maintain()
    repo.insert_many(reminders(20, now() - timedelta(hours=2), "old"))
    repo.insert_many(reminders(5, now(), "fresh"))
    executor = RecordingExecutor()
    with scheduler_for(every_url, repo, executor, misfire_policy=policy, misfire_threshold=60) as s:
        wait_until(lambda: sum(history_states(s).values()) >= 25, what="25 outcomes")
        states = history_states(s)
    texts = Counter(c.job_key for c in executor.calls)
    assert all(n == 1 for n in texts.values())
    if policy == "fire_once_now":
        assert executor.count() == 25
        assert states == Counter({"succeeded": 25})
    else:
        assert executor.count() == 5
        assert states == Counter({"succeeded": 5, "misfired": 20})


def test_failures_retry_with_backoff_then_dead_letter(every_url: DatabaseUrl) -> None:
    repo = repository_for(every_url)
    repo.maintain()
    flaky, broken, rejected = (
        repo.insert(Reminder(due=now(), text=t)) for t in ("flaky", "broken", "rejected")
    )
    executor = RecordingExecutor()
    executor.fail_times = {"flaky": 2, "broken": 99}
    executor.permanent = {"rejected"}
    spec = ExecutorSpec(name="remind", factory=lambda _s: executor, max_attempts=3)
    config = SchedulerConfig(database_url=every_url, **FAST)
    with InfiniteScheduler(
        [RepositoryBinding(repo, executor="remind")], config, executors={"remind": spec}
    ) as s:
        wait_until(lambda: sum(history_states(s).values()) >= 7, what="7 outcomes")
        flaky_status = s.status("reminders", flaky.id)
        broken_status = s.status("reminders", broken.id)
        rejected_status = s.status("reminders", rejected.id)
    assert [o.state for o in flaky_status.outcomes] == [
        Outcome.FAILED,
        Outcome.FAILED,
        Outcome.SUCCEEDED,
    ]
    assert [o.attempt for o in flaky_status.outcomes] == [1, 2, 3]
    assert flaky_status.live is None
    assert [o.state for o in broken_status.outcomes] == [
        Outcome.FAILED,
        Outcome.FAILED,
        Outcome.DEAD,
    ]
    assert broken_status.live is not None
    assert broken_status.live["state"] == "dead"
    assert "gateway down" in (broken_status.live["last_error"] or "")
    assert [o.state for o in rejected_status.outcomes] == [Outcome.DEAD]
    assert "rejected for good" in (rejected_status.outcomes[0].error or "")


def test_a_hanging_executor_is_bounded_by_its_timeout(every_url: DatabaseUrl) -> None:
    repo = repository_for(every_url)
    repo.maintain()
    stuck = repo.insert(Reminder(due=now(), text="stuck"))
    repo.insert(Reminder(due=now(), text="fine"))
    executor = RecordingExecutor()
    executor.hang_seconds = {"stuck": 3.0}
    spec = ExecutorSpec(name="remind", factory=lambda _s: executor, max_attempts=1, timeout=0.5)
    config = SchedulerConfig(database_url=every_url, **FAST)
    with InfiniteScheduler(
        [RepositoryBinding(repo, executor="remind")], config, executors={"remind": spec}
    ) as s:
        wait_until(lambda: sum(history_states(s).values()) >= 2, timeout=10, what="2 outcomes")
        status = s.status("reminders", stuck.id)
    assert [o.state for o in status.outcomes] == [Outcome.DEAD]
    assert "longer than 0.5 s" in (status.outcomes[0].error or "")


class ClosingExecutor(RecordingExecutor):
    """Records when it was closed, and when each run ended; its close may fail."""

    def __init__(self, close_error: Exception | None = None) -> None:
        super().__init__()
        self.closed_at: list[float] = []
        self.ended_at: list[float] = []
        self.close_error = close_error

    def __call__(self, job: JobContext[Reminder]) -> None:
        try:
            super().__call__(job)
        finally:
            self.ended_at.append(time.monotonic())

    def close(self) -> None:
        self.closed_at.append(time.monotonic())
        if self.close_error is not None:
            raise self.close_error


def test_a_node_closes_the_executors_it_made_after_their_last_run_and_no_others(
    sqlite_url: DatabaseUrl, caplog: pytest.LogCaptureFixture
) -> None:
    repo = repository_for(sqlite_url)
    repo.maintain()
    repo.insert(Reminder(due=now(), text="slow"))
    made = ClosingExecutor(close_error=OSError("socket already gone"))
    given = ClosingExecutor()
    others = repository_for(sqlite_url, "others")
    others.maintain()
    others.insert(Reminder(due=now(), text="quick"))
    bindings = [
        RepositoryBinding(repo, executor="remind"),
        RepositoryBinding(others, executor="other"),
    ]
    made.hang_seconds = {"slow": 1.0}
    executors: dict[str, ExecutorLike] = {
        "remind": ExecutorSpec(name="remind", factory=lambda _s: made),
        "other": given,
    }
    config = SchedulerConfig(database_url=sqlite_url, **FAST)
    with InfiniteScheduler(bindings, config, executors=executors):
        wait_until(lambda: made.count() == given.count() == 1, what="both runs' start")
    # Closed once, after the run in flight at the stop had ended; a close that
    # fails is one line, and the node stopped all the same.
    assert len(made.ended_at) == len(made.closed_at) == 1
    assert made.closed_at[0] >= made.ended_at[0]
    assert given.closed_at == []
    [line] = [r.getMessage() for r in caplog.records if "did not close" in r.getMessage()]
    assert line == "executor remind did not close cleanly: OSError: socket already gone"


def hold_the_interpreter(seconds: float) -> None:
    """Keep every other thread of this process from running for `seconds`.

    A busy loop that keeps the GIL, as a long garbage collection does: with the
    switch interval longer than the loop, no other thread gets the GIL back
    before it ends, so the executor threads and the lease keeper stand still alike.
    """
    interval = sys.getswitchinterval()
    sys.setswitchinterval(seconds + 5)
    try:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    finally:
        sys.setswitchinterval(interval)


def test_a_run_is_not_timed_out_for_the_time_the_process_stood_still(
    sqlite_url: DatabaseUrl,
) -> None:
    repo = repository_for(sqlite_url)
    repo.maintain()
    slow = repo.insert(Reminder(due=now(), text="slow"))
    executor = RecordingExecutor()
    executor.hang_seconds = {"slow": 3.5}
    spec = ExecutorSpec(name="remind", factory=lambda _s: executor, max_attempts=1, timeout=2.0)
    config = SchedulerConfig(database_url=sqlite_url, **{**FAST, "job_lease": 10.0})
    with InfiniteScheduler(
        [RepositoryBinding(repo, executor="remind")], config, executors={"remind": spec}
    ) as s:
        wait_until(lambda: executor.count() >= 1, what="the run to start")
        # 3 s of the run's 3.5 s pass with the process standing still; it ran 0.5 s.
        hold_the_interpreter(3.0)
        wait_until(lambda: sum(history_states(s).values()) >= 1, timeout=10, what="an outcome")
        status = s.status("reminders", slow.id)
    assert [(o.state, o.error) for o in status.outcomes] == [(Outcome.SUCCEEDED, None)]


def test_higher_priority_jobs_are_claimed_first(every_url: DatabaseUrl) -> None:
    repo = repository_for(every_url)
    repo.maintain()
    repo.insert_many(reminders(20, now() - timedelta(seconds=30), "low", priority=0))
    repo.insert_many(reminders(20, now() - timedelta(seconds=10), "high", priority=5))
    executor = RecordingExecutor()
    s = scheduler_for(every_url, repo, executor, thread_pool_size=1, batch_size=10)
    s.store.create_schema()
    s.run_fetch_cycles()
    with s:
        wait_until(lambda: executor.count() >= 40, what="40 runs")
    texts = [c.job_key for c in executor.calls]
    high = {
        str(e.id)
        for e in repo.find_all_by_date_range(now() - timedelta(minutes=1), now())
        if e.text == "high"
    }
    first = [k.split(":")[1] for k in texts[:20]]
    assert set(first) == high


def test_pause_holds_for_every_node_and_resume_releases(every_url: DatabaseUrl) -> None:
    repo = repository_for(every_url)
    repo.maintain()
    executor = RecordingExecutor()
    with scheduler_for(every_url, repo, executor) as s:
        other = scheduler_for(every_url, repo, RecordingExecutor(), node="node-b")
        other.pause("reminders")
        assert s.controls.paused(fresh=True) == {"reminders"}
        repo.insert_many(reminders(5, now()))
        threading.Event().wait(2.0)
        assert executor.count() == 0
        other.resume("reminders")
        wait_until(lambda: executor.count() == 5, what="5 runs after resume")
        other.engine.dispose()


def test_two_nodes_share_the_work_and_run_each_job_once(
    mysql_url: DatabaseUrl,
) -> None:
    repo = repository_for(mysql_url)
    repo.maintain()
    repo.insert_many(reminders(1500, now() - timedelta(seconds=1)))
    a, b = RecordingExecutor(), RecordingExecutor()
    with (
        scheduler_for(mysql_url, repo, a, node="node-a", batch_size=50),
        scheduler_for(mysql_url, repo, b, node="node-b", batch_size=50),
    ):
        wait_until(lambda: a.count() + b.count() >= 1500, what="1500 runs")
    keys = a.keys() + b.keys()
    assert len(keys) == len(set(keys)) == 1500
    assert a.count() > 0
    assert b.count() > 0


def test_stop_lets_running_jobs_finish_and_releases_unstarted_ones(every_url: DatabaseUrl) -> None:
    repo = repository_for(every_url)
    repo.maintain()
    entities = repo.insert_many(reminders(6, now() - timedelta(seconds=5), "slow"))
    executor = RecordingExecutor()
    executor.hang_seconds = {"slow": 1.0}
    s = scheduler_for(every_url, repo, executor, thread_pool_size=1, batch_size=6)
    s.start()
    wait_until(lambda: executor.count() >= 1, what="the first job to start")
    s.stop(grace=5)
    assert executor.count() == 1  # the running job finished; the queued ones never started
    with repo.engine.connect() as conn:
        rows = conn.execute(sa.select(jobs.c.state, jobs.c.attempt, jobs.c.owner)).all()
    assert [tuple(r) for r in rows] == [("waiting", 0, None)] * (len(entities) - 1)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.define(kw_only=True)
class Everything:
    id: int | None = id_field()
    due: datetime = sharding_key()
    name: str = column(length=40)
    note: str | None = column(default=None)
    amount: Decimal = column(precision=14, scale=4)
    ratio: float = column()
    active: bool = column()
    color: Color = column()
    born: date = column()
    seen: datetime | None = column(default=None)
    data: dict[str, Any] = column(factory=dict)
    priority: int = column(default=0)


def test_the_snapshot_copied_in_the_database_reads_back_as_the_same_entity(
    every_url: DatabaseUrl,
) -> None:
    options = RepositoryOptions(
        name="everything", entity_type=Everything, engine=create_engine(every_url), retention_days=2
    )
    repo: ShardingRepository[Everything, int] = (
        PartitionedRepository(options)
        if every_url.scheme.dialect == "mysql"
        else MultiTableRepository(options)
    )
    repo.maintain()
    original = repo.insert(
        Everything(
            due=now(),
            name='quote " and \\ and ü',
            amount=Decimal("1234567890.1234"),
            ratio=0.1,
            active=True,
            color=Color.BLUE,
            born=date(1990, 2, 28),
            seen=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
            data={"nested": [1, "two", None], "x": 1.5},
            priority=7,
        )
    )
    received: list[Everything] = []
    config = SchedulerConfig(database_url=every_url, **FAST)
    with InfiniteScheduler(
        [RepositoryBinding(repo, executor="keep")],
        config,
        executors={"keep": lambda job: received.append(job.entity)},
    ) as s:
        wait_until(lambda: len(received) == 1, what="the job")
        wait_until(lambda: bool(s.status("everything", original.id).outcomes), what="its outcome")
        live = s.status("everything", original.id)
    assert received == [original]
    assert live.outcomes[0].job_key == job_key("everything", original.id, original.due)
    repo.engine.dispose()


def test_a_claim_that_came_back_too_late_is_released_not_run(
    mysql_url: DatabaseUrl, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Leases are reckoned from when a claim began.  Node A stalls (a frozen VM) between
    # its claim's commit and running the jobs, past their leases; node B takes them over.
    repo = repository_for(mysql_url)
    repo.maintain()
    entities = repo.insert_many(reminders(5, now() - timedelta(seconds=5)))
    lease = {"job_lease": 1.2, "heartbeat_interval": 0.3}
    ran_a, ran_b = RecordingExecutor(), RecordingExecutor()
    a = scheduler_for(mysql_url, repo, ran_a, node="node-a", **lease)
    a.store.create_schema()
    a.run_fetch_cycles()
    claim = a.store.claim_due
    stalled: list[int] = []

    def stalling(*args: Any) -> Any:
        claimed = claim(*args)
        if claimed and not stalled:
            stalled.append(len(claimed))
            time.sleep(2.5)
        return claimed

    renew = a.store.renew_leases

    def frozen_too(owner: str, job_ids: Sequence[int], seconds: float) -> int:
        return 0 if stalled else renew(owner, job_ids, seconds)  # the whole process stands still

    monkeypatch.setattr(a.store, "claim_due", stalling)
    monkeypatch.setattr(a.store, "renew_leases", frozen_too)
    with a, scheduler_for(mysql_url, repo, ran_b, node="node-b", **lease):
        wait_until(lambda: ran_a.count() + ran_b.count() >= 5, what="5 runs")
        time.sleep(3.0)  # A is past its stall: it must not run them now
    assert stalled == [5]
    keys = ran_a.keys() + ran_b.keys()
    assert len(keys) == len(set(keys)) == 5
    assert {c.entity_id for c in ran_a.calls + ran_b.calls} == {e.id for e in entities}


def test_a_claim_cut_short_by_the_database_reads_its_jobs_row_by_row(
    mysql_url: DatabaseUrl,
) -> None:
    # A claim reads its batch as one JSON document; MariaDB cuts a document longer than
    # group_concat_max_len (64 MB here; 1 MB by default) and the claim must not lose jobs.
    repo = repository_for(mysql_url)
    repo.maintain()
    entities = repo.insert_many(reminders(40, now() - timedelta(seconds=5), 'é"\\ ok'))
    engine = create_engine(mysql_url)

    @sa.event.listens_for(engine, "connect")
    def small_documents(dbapi_connection: Any, record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET SESSION group_concat_max_len = 1024")

    config = SchedulerConfig(database_url=mysql_url, **FAST)
    s = InfiniteScheduler(
        [RepositoryBinding(repo, executor="remind")],
        config,
        executors={"remind": RecordingExecutor()},
        engine=engine,
    )
    s.store.create_schema()
    s.run_fetch_cycles()
    claimed = s.store.claim_due("node-a", 100, 30.0, ["reminders"])
    by_id = {e.id: e for e in entities}
    assert {int(j.entity_id) for j in claimed} == set(by_id)
    assert len(claimed) == len(by_id)
    assert [j.run_at for j in claimed] == sorted(j.run_at for j in claimed)
    for job in claimed:
        entity = by_id[int(job.entity_id)]
        assert s.bindings["reminders"].spec.from_json(job.snapshot) == entity
        assert (job.due_at, job.attempt) == (entity.due, 1)
    engine.dispose()


@pytest.mark.parametrize(
    "micros", [0, 1_795_987_894_123_456, 1_795_987_894_999_999, 4_102_444_799_999_999, None]
)
def test_history_times_travel_as_microseconds_and_come_back_exact(
    every_url: DatabaseUrl, micros: int | None
) -> None:
    # The recorder sends started and finished times as integers (history.py); the
    # database must make the same DATETIME of them, whatever the session's time zone.
    engine = create_engine(every_url)
    with engine.connect() as conn:
        if every_url.scheme.dialect == "mysql":
            conn.exec_driver_sql("SET time_zone = '+05:00'")
        if every_url.scheme.dialect == "postgresql":
            conn.exec_driver_sql("SET TIME ZONE 'Asia/Karachi'")
        value = sa.literal(micros, sa.BigInteger())
        text = sa.cast(dialect_for(engine).datetime_from_micros(value), sa.String())
        got = conn.execute(sa.select(text)).scalar()
    expected = None if micros is None else datetime(1970, 1, 1) + timedelta(microseconds=micros)
    # As text, read back to the microsecond (PostgreSQL leaves out a fraction of .000000).
    assert (None if got is None else datetime.fromisoformat(got)) == expected
    engine.dispose()


def test_a_claim_whose_answer_was_lost_is_not_kept_alive_and_runs(every_url: DatabaseUrl) -> None:
    # The database committed a claim, then the connection broke before the node heard
    # back (an outage): the node never holds those jobs.  Its keeper renews only the
    # jobs it holds, so their leases run out, they are recovered, and they run.
    repo = repository_for(every_url)
    repo.maintain()
    entities = repo.insert_many(reminders(3, now() - timedelta(seconds=5)))
    executor = RecordingExecutor()
    s = scheduler_for(every_url, repo, executor, job_lease=1.2, heartbeat_interval=0.3)
    s.store.create_schema()
    s.run_fetch_cycles()
    s.pause("reminders")
    with s:
        lost = s.store.claim_due("node-a", 10, 1.2, ["reminders"])  # as if by node-a itself
        assert len(lost) == 3

        def states() -> list[str]:
            with s.engine.connect() as conn:
                return list(conn.execute(sa.select(jobs.c.state)).scalars())

        wait_until(lambda: states() == ["waiting"] * 3, timeout=10, what="the leases to lapse")
        s.resume("reminders")
        wait_until(lambda: executor.count() >= 3, what="3 runs")
    assert sorted(c.entity_id for c in executor.calls) == sorted(e.id or 0 for e in entities)
