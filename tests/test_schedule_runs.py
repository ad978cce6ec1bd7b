"""Schedules' occurrences become jobs and run: the plan, catch-up, overlap, on every database."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from infsched.clock import Clock
from infsched.config import SchedulerConfig
from infsched.dburl import DatabaseUrl
from infsched.engine.history import JobOutcome
from infsched.engine.schedule_materializer import (
    MAX_MISFIRE_ROWS,
    SCHEDULES_PER_TRANSACTION,
    plan_occurrences,
)
from infsched.executors import JobContext
from infsched.jobstore.base import job_key
from infsched.jobstore.tables import jobs
from infsched.management.scheduler import InfiniteScheduler
from infsched.schedules import SCHEDULE_REPOSITORY, RunRules, Schedule, ScheduledRun
from infsched.schema import schedules as schedules_table
from tests.engine_support import RecordingSink, wait_until

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
SECOND = timedelta(seconds=1)

FAST: dict[str, Any] = {
    "fetch_interval": 0.2,
    "lookahead_window": 1.0,
    "heartbeat_interval": 0.5,
    "job_lease": 5.0,
    "thread_pool_size": 4,
    "misfire_threshold": 2.0,
}


def every_second(name: str = "tick", **changes: Any) -> Schedule:
    return Schedule(**{"name": name, "executor": "tick", "trigger": SECOND, **changes})


# -- the plan (no database) --


@pytest.mark.parametrize(
    ("catch_up", "limit", "caught_up", "misfired"),
    [("fire_once_now", 100, 1, 8), ("do_nothing", 100, 0, 9), ("fire_all", 3, 3, 6)],
)
def test_missed_occurrences_follow_the_catch_up_policy(
    catch_up: str, limit: int, caught_up: int, misfired: int
) -> None:
    # Down from T0 to T0 + 12 s; threshold 2 s: T0+1..T0+9 are missed, T0+10.. are not.
    schedule = every_second(catch_up=catch_up, catch_up_limit=limit, start=T0)
    now = T0 + 12 * SECOND
    plan = plan_occurrences(schedule, T0, now, now + 3 * SECOND, 2 * SECOND)
    assert (plan.caught_up, plan.misfired_count) == (caught_up, misfired)
    assert plan.misfired == [T0 + i * SECOND for i in range(1, misfired + 1)]
    due = [job.due_at for job in plan.jobs]
    # The newest missed ones are run, then every coming one up to the horizon.
    assert due == [T0 + i * SECOND for i in range(10 - caught_up, 16)]
    assert len({job.job_key for job in plan.jobs}) == len(plan.jobs)


def test_each_run_carries_its_rules_and_when_the_next_occurrence_runs() -> None:
    schedule = every_second(start=T0, jitter=timedelta(milliseconds=500))
    plan = plan_occurrences(schedule, T0, T0, T0 + 3 * SECOND, 2 * SECOND)
    occurrences = [T0 + i * SECOND for i in (1, 2, 3)]
    assert [j.job_key for j in plan.jobs] == [
        job_key(SCHEDULE_REPOSITORY, "tick", o) for o in occurrences
    ]
    assert [j.due_at for j in plan.jobs] == [schedule.run_at(o) for o in occurrences]
    rules = [RunRules.from_snapshot(json.loads(j.payload)) for j in plan.jobs]
    # The last one's next occurrence lies beyond the horizon: it is known all the same.
    assert [r.next_run_at for r in rules] == [
        schedule.run_at(o) for o in [*occurrences[1:], T0 + 4 * SECOND]
    ]
    run = ScheduledRun.from_snapshot(json.loads(plan.jobs[0].payload))
    assert run == ScheduledRun("tick", occurrences[0], None)


def test_a_long_downtime_records_a_bounded_number_of_misfires_and_counts_them_all() -> None:
    schedule = every_second(catch_up="do_nothing", start=T0)
    now = T0 + timedelta(hours=1)
    plan = plan_occurrences(schedule, T0, now, now, 2 * SECOND)
    assert len(plan.misfired) == MAX_MISFIRE_ROWS
    assert plan.misfired_count == 3600 - 3  # T0+1 s .. now-3 s; now-2 s is not missed
    assert plan.jobs[0].due_at == now - 2 * SECOND


# -- on the databases --


class Runs:
    """Records each run's (occurrence, start, end); can sleep to make runs overlap."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.runs: list[tuple[datetime, float, float]] = []
        #: How late each run started, by its occurrence.
        self.lateness: dict[datetime, timedelta] = {}

    def __call__(self, job: JobContext[Any]) -> None:
        started = time.monotonic()
        begun = datetime.now(UTC)
        time.sleep(self.seconds)
        run = job.entity
        assert isinstance(run, ScheduledRun)
        with self.lock:
            self.lateness[run.occurrence] = begun - run.occurrence
            self.runs.append((run.occurrence, started, time.monotonic()))

    def occurrences(self) -> list[datetime]:
        with self.lock:
            return [o for o, _, _ in self.runs]


def node(
    url: DatabaseUrl,
    runs: Runs,
    name: str = "node-a",
    sink: RecordingSink | None = None,
    clock: Clock | None = None,
    **overrides: Any,
) -> InfiniteScheduler:
    config = SchedulerConfig(database_url=url, node_id=name, **{**FAST, **overrides})
    return InfiniteScheduler(
        [], config, executors={"tick": runs}, metrics_sinks=[sink or RecordingSink()], clock=clock
    )


class HeldClock:
    """The system's clock, which a test can hold at one instant for a while."""

    def __init__(self) -> None:
        self._held: datetime | None = None

    def now(self) -> datetime:
        return self._held or datetime.now(UTC)

    @contextmanager
    def held_at(self, when: datetime) -> Iterator[datetime]:
        self._held = when
        try:
            yield when
        finally:
            self._held = None


def outcomes(s: InfiniteScheduler) -> list[JobOutcome]:
    now = datetime.now(UTC)
    # Up to a minute ahead: a node's clock held ahead (HeldClock) dates its outcomes so.
    found = s.history.repository.find_all_by_date_range(
        now - timedelta(days=1), now + timedelta(minutes=1)
    )
    return [o for o in found if o.repository == SCHEDULE_REPOSITORY]


@pytest.fixture
def started() -> Iterator[list[InfiniteScheduler]]:
    """Nodes a test starts; stopped at the end whatever happens."""
    nodes: list[InfiniteScheduler] = []
    yield nodes
    for n in nodes:
        n.stop(grace=5)


def test_each_occurrence_runs_once_on_two_nodes(
    every_url: DatabaseUrl, started: list[InfiniteScheduler]
) -> None:
    runs = Runs()
    a, b = node(every_url, runs, "node-a"), node(every_url, runs, "node-b")
    a.store.create_schema()
    a.add_schedule(every_second())
    for n in (a, b):
        n.start()
        started.append(n)
    wait_until(lambda: len(runs.occurrences()) >= 5, timeout=20)
    a.pause_schedule("tick")
    time.sleep(FAST["lookahead_window"] + 1.5)  # what was made a job already runs out
    seen = runs.occurrences()
    assert len(seen) == len(set(seen)), Counter(seen).most_common(3)
    steps = {b - a for a, b in zip(sorted(seen), sorted(seen)[1:], strict=False)}
    assert steps == {SECOND}  # none missed in between
    succeeded = [o for o in outcomes(a) if o.state.value == "succeeded"]
    assert sorted(o.entity_id for o in succeeded) == ["tick"] * len(seen)


def job_count(n: InfiniteScheduler) -> int:
    with n.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one())


def downtime(n: InfiniteScheduler, name: str, seconds: float) -> datetime:
    """As if no node had run `name` for the last `seconds`; when that began."""
    since = datetime.now(UTC) - timedelta(seconds=seconds)
    with n.engine.begin() as conn:
        conn.execute(
            sa.update(schedules_table)
            .where(schedules_table.c.name == name)
            .values(materialized_until=since)
        )
    return since


@pytest.mark.parametrize(
    ("catch_up", "runs_at_once"), [("fire_once_now", 1), ("do_nothing", 0), ("fire_all", 5)]
)
def test_catch_up_after_downtime(
    every_url: DatabaseUrl, started: list[InfiniteScheduler], catch_up: str, runs_at_once: int
) -> None:
    runs, sink, clock = Runs(), RecordingSink(), HeldClock()
    n = node(every_url, runs, sink=sink, clock=clock, misfire_threshold=5.0)
    n.store.create_schema()
    n.add_schedule(every_second(catch_up=catch_up, catch_up_limit=5, overlap="allow"))
    since = downtime(n, "tick", 30)
    # The first cycle after the downtime, its clock held half-way between two occurrences,
    # so that which occurrences it finds missed (due before its now less the threshold) is
    # plain however long the cycle takes.  Held 2 s ahead: a fire_once_now run is made
    # due at the cycle's now and misfires if claimed once the next occurrence is late
    # too, half a second after that; by then the node must be up and claiming.
    ahead = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=500_000)
    with clock.held_at(ahead) as cycle_now:
        cut = cycle_now - timedelta(seconds=5)
        n.materializer.cycle()
    with n.engine.connect() as conn:
        due = [
            d.replace(tzinfo=UTC)
            for d in conn.execute(sa.select(jobs.c.due_at).order_by(jobs.c.due_at)).scalars()
        ]
    caught_up = [d for d in due if d < cut]
    assert len(caught_up) == runs_at_once
    misfired = {o.due_at.replace(tzinfo=UTC) for o in outcomes(n) if o.state.value == "misfired"}
    # Missed: one a second from the downtime to the cut; those not run are recorded.
    missed = int((cut - since).total_seconds())
    assert len(misfired) + runs_at_once in range(missed - 1, missed + 2)
    assert max(misfired) < min(caught_up or [cut])  # the newest missed ones are those run
    assert sink.counters["schedule_occurrences_misfired_total"] == len(misfired)
    assert sink.counters["schedule_occurrences_materialized_total"] == len(due)
    n.start()
    started.append(n)
    wait_until(lambda: len(runs.occurrences()) >= runs_at_once + 3, timeout=20)
    n.pause_schedule("tick")
    time.sleep(FAST["lookahead_window"] + 1.5)
    ran = runs.occurrences()
    assert set(caught_up) <= set(ran)
    assert not misfired & set(ran)
    assert [o for o in ran if o < cut] == sorted(caught_up)
    assert len(set(ran)) == len(ran)


@pytest.mark.parametrize("overlap", ["skip", "queue"])
def test_a_slow_schedule_skips_or_queues_what_comes_due_while_it_runs(
    any_url: DatabaseUrl, started: list[InfiniteScheduler], overlap: str
) -> None:
    runs = Runs(seconds=1.6)  # every second, each run takes 1.6 s
    sinks = RecordingSink(), RecordingSink()
    a, b = node(any_url, runs, "node-a", sinks[0]), node(any_url, runs, "node-b", sinks[1])
    a.store.create_schema()
    a.add_schedule(every_second(overlap=overlap))
    for n in (a, b):
        n.start()
        started.append(n)
    wait_until(lambda: len(runs.occurrences()) >= 2, timeout=30)
    a.pause_schedule("tick")
    wait_until(lambda: job_count(a) == 0, timeout=20)  # the ones made already run out
    with runs.lock:
        spans = sorted((start, end) for _, start, end in runs.runs)
    # Never two at once: each run starts after the one before it ended.
    assert all(later[0] >= earlier[1] - 0.05 for earlier, later in itertools.pairwise(spans))
    skipped = [o for o in outcomes(a) if o.state.value == "skipped"]
    assert skipped
    counted = sum(s.counters["schedule_occurrences_skipped_total"] for s in sinks)
    assert counted == len(skipped)
    if overlap == "queue":
        # The queued run starts as soon as the one before it ends.
        gaps = [later[0] - earlier[1] for earlier, later in itertools.pairwise(spans)]
        assert min(gaps) < 0.5


def test_two_materializers_at_once_make_each_occurrence_of_many_schedules_one_job(
    every_url: DatabaseUrl,
) -> None:
    # More schedules than one transaction takes, the last transaction a partial one.
    count = 2 * SCHEDULES_PER_TRANSACTION + 7
    runs = Runs()
    a, b = node(every_url, runs, "node-a"), node(every_url, runs, "node-b")
    a.store.create_schema()
    names = [f"s{i:03d}" for i in range(count)]
    for name in names:
        a.add_schedule(every_second(name, overlap="allow"))
    paused = names[SCHEDULES_PER_TRANSACTION]
    a.pause_schedule(paused)
    made: list[int] = []
    errors: list[BaseException] = []

    def cycle(n: InfiniteScheduler) -> None:
        try:
            made.append(n.materializer.cycle())
        except BaseException as exc:
            errors.append(exc)

    # As if two nodes both thought they held the schedules lease.
    threads = [threading.Thread(target=cycle, args=(n,)) for n in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    with a.engine.connect() as conn:
        rows = conn.execute(sa.select(jobs.c.job_key, jobs.c.entity_id)).all()
    keys = Counter(key for key, _ in rows)
    assert keys.most_common(1)[0][1] == 1
    assert sum(made) == len(rows)
    expected = set()
    for stored in a.schedules():
        if stored.name == paused:
            assert stored.materialized_until is None
            continue
        assert stored.materialized_until is not None
        for occurrence in stored.schedule.fire_times_after(stored.created_at):
            if occurrence > stored.materialized_until:
                break
            expected.add(job_key(SCHEDULE_REPOSITORY, stored.name, occurrence))
    assert set(keys) == expected
    assert {entity for _, entity in rows} == set(names) - {paused}
    for n in (a, b):
        n.engine.dispose()


@pytest.mark.parametrize(
    ("catch_up", "ran"), [("fire_once_now", 1), ("do_nothing", 0), ("fire_all", 6)]
)
def test_runs_made_before_a_downtime_follow_the_catch_up_policy_when_claimed(
    every_url: DatabaseUrl, started: list[InfiniteScheduler], catch_up: str, ran: int
) -> None:
    # A materializer made six runs 40 s ago, then every node went down. The schedule ended
    # with them, so only the runs in the job table are late: the gate alone decides them.
    runs = Runs()
    n = node(every_url, runs, misfire_threshold=5.0)
    n.store.create_schema()
    made_at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=40)
    schedule = every_second(
        catch_up=catch_up, overlap="allow", start=made_at, end=made_at + 6 * SECOND
    )
    n.add_schedule(schedule)
    plan = plan_occurrences(schedule, made_at, made_at, made_at + 6 * SECOND, 5 * SECOND)
    assert len(plan.jobs) == 6
    with n.engine.begin() as conn:
        n.store.add_jobs(conn, plan.jobs)
        conn.execute(
            sa.update(schedules_table)
            .where(schedules_table.c.name == "tick")
            .values(materialized_until=made_at + 6 * SECOND)
        )
    n.start()
    started.append(n)
    wait_until(lambda: job_count(n) == 0, timeout=20)
    occurrences = [made_at + i * SECOND for i in range(1, 7)]
    # fire_once_now: the newest only; fire_all: all of them, oldest first; do_nothing: none.
    assert runs.occurrences() == occurrences[len(occurrences) - ran :]
    misfired = sorted(
        o.due_at.replace(tzinfo=UTC) for o in outcomes(n) if o.state.value == "misfired"
    )
    assert misfired == occurrences[: len(occurrences) - ran]
