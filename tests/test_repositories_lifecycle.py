"""Tables and partitions over simulated days: created ahead, dropped past retention, adopted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from infsched.clock import FixedClock
from infsched.database import create_engine
from infsched.dburl import DatabaseUrl
from infsched.dialects import dialect_for
from infsched.errors import ConfigError
from infsched.repositories.day_sharded import DayShardedRepository
from tests.repositories_support import (
    BACKENDS,
    DAY,
    NOW,
    TODAY,
    Backend,
    Reminder,
    backend_fixture,
    reminder,
    table_names,
)

Repo = DayShardedRepository[Reminder, int]
D = TODAY.date()

backend = backend_fixture(*BACKENDS)
multi_table = backend_fixture("multi_table-mysql", "multi_table-postgresql", "multi_table-sqlite")
on_mysql = backend_fixture("multi_table-mysql", "partitioned-mysql")
#: The databases with named locks (SQLite has none: it serialises writers itself).
with_named_locks = backend_fixture(
    "multi_table-mysql", "multi_table-postgresql", "partitioned-mysql", "partitioned-postgresql"
)


def shard(backend: Backend, day: date) -> str:
    """The name of a day's table or partition."""
    return f"p{day:%Y%m%d}" if backend.is_partitioned else f"reminders_{day:%Y%m%d}"


def days(first: int, last: int) -> list[date]:
    """D+first .. D+last."""
    return [D + i * DAY for i in range(first, last + 1)]


def shards(backend: Backend, repo: Repo) -> list[str]:
    return [s.name for s in repo.status()]


def expected(backend: Backend, wanted: list[date]) -> list[str]:
    return [shard(backend, d) for d in wanted] + (["pmax"] if backend.is_partitioned else [])


def run_threads(*targets: Callable[[], Any]) -> list[BaseException]:
    """Run the targets at once; the exceptions they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(targets))

    def wrap(target: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            start.wait()
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_first_use_lays_out_the_window(backend: Backend) -> None:
    repo = backend.make(retention_days=2, precreate_days=1)
    assert repo.status() == []  # status only reads
    assert repo.count_by_date_range(TODAY, TODAY + DAY) == 0
    assert shards(backend, repo) == expected(backend, days(-2, 1))


def test_simulated_days_create_and_drop_exactly_the_right_shards(backend: Backend) -> None:
    clock = FixedClock(NOW)
    repo = backend.make(clock=clock, retention_days=2, precreate_days=1)
    report = repo.maintain()
    assert list(report.created) == expected(backend, days(-2, 1))
    assert report.dropped == ()
    by_day = {
        d: repo.insert_many([reminder(datetime.combine(d, NOW.timetz())) for _ in range(3)])
        for d in days(-2, 1)
    }

    for step in (1, 2, 3):
        clock.advance(DAY)
        report = repo.maintain()
        assert list(report.created) == [shard(backend, D + (1 + step) * DAY)]
        assert list(report.dropped) == [shard(backend, D + (-3 + step) * DAY)]
        assert shards(backend, repo) == expected(backend, days(step - 2, step + 1))
        for day, stored in by_day.items():
            kept = day >= D + (step - 2) * DAY
            assert [repo.find_by_id(e.id) for e in stored] == (stored if kept else [None] * 3)

    again = repo.maintain()
    assert (again.created, again.dropped) == ((), ())
    assert again.kept == 4


def test_a_restart_days_later_adopts_what_is_there(backend: Backend) -> None:
    first = backend.make(clock=FixedClock(NOW), retention_days=2, precreate_days=1)
    first.maintain()
    old = first.insert(reminder(NOW + DAY))
    # Another process, five days on: it must not refuse the tables of an earlier run.
    later = FixedClock(NOW + 5 * DAY)
    second = backend.make(clock=later, retention_days=2, precreate_days=1)
    new = second.insert(reminder(NOW + 5 * DAY))
    assert second.find_by_id(old.id) == old  # not dropped yet: maintenance has not run
    report = second.maintain()
    assert shard(backend, D - 2 * DAY) in report.dropped
    assert shard(backend, D + DAY) in report.dropped
    assert shards(backend, second) == expected(backend, days(3, 6))
    assert second.find_by_id(old.id) is None
    assert second.find_by_id(new.id) == new


def test_two_processes_maintaining_at_once(backend: Backend) -> None:
    clock = FixedClock(NOW)
    first = backend.make(clock=clock, retention_days=2, precreate_days=1)
    first.maintain()
    clock.advance(3 * DAY)
    other = backend.make(
        clock=clock, retention_days=2, precreate_days=1, engine=create_engine(backend.url)
    )
    reports: list[Any] = []
    errors = run_threads(
        lambda: reports.append(first.maintain()), lambda: reports.append(other.maintain())
    )
    other.engine.dispose()
    assert errors == []
    assert shards(backend, first) == expected(backend, days(1, 4))
    if (
        backend.url.scheme.dialect == "mysql"
    ):  # the named lock lets one create what the other then finds
        created = [name for r in reports for name in r.created]
        assert sorted(created) == sorted({*created})


def test_maintenance_never_fails_inserts_or_queries(backend: Backend) -> None:
    clock = FixedClock(NOW)
    maintainer = backend.make(clock=clock, retention_days=1, precreate_days=1)
    maintainer.maintain()
    writer = backend.make(retention_days=1, precreate_days=5, engine=create_engine(backend.url))
    writer.maintain()
    inserted = 0
    deadline = time.monotonic() + 1.5

    def write_and_read() -> None:
        nonlocal inserted
        while time.monotonic() < deadline:
            writer.insert_many([reminder(NOW + 4 * DAY) for _ in range(20)])
            inserted += 20
            writer.count_by_date_range(TODAY - 2 * DAY, TODAY + 5 * DAY)
            list(writer.find_all_after(TODAY - DAY, batch_size=50))

    def roll_days() -> None:
        for _ in range(3):  # drops today-1 .. today+1 while the writer reads them
            clock.advance(DAY)
            maintainer.maintain()
            time.sleep(0.1)

    errors = run_threads(write_and_read, roll_days)
    writer.engine.dispose()
    assert errors == []
    assert maintainer.count_by_date_range(TODAY + 4 * DAY, TODAY + 5 * DAY) == inserted


def test_maintenance_needs_only_the_one_connection_that_holds_its_lock(backend: Backend) -> None:
    # The original library took the lock, then asked a full pool for the DDL connection.
    engine = sa.create_engine(
        backend.url.sqlalchemy_url, pool_size=1, max_overflow=0, pool_timeout=5
    )
    try:
        repo = backend.make(engine=engine)
        report = repo.maintain()
        assert report.created
        stored = repo.insert(reminder(NOW))
        assert repo.find_by_id(stored.id) == stored
    finally:
        engine.dispose()


def test_maintenance_waits_for_another_holder_of_its_lock(with_named_locks: Backend) -> None:
    backend = with_named_locks
    repo = backend.make()
    lock = "infsched_maint_reminders"
    holder = create_engine(backend.url)
    done: list[Any] = []
    try:
        with holder.connect() as conn, dialect_for(conn).ddl_lock(conn, lock, 5):
            worker = threading.Thread(target=lambda: done.append(repo.maintain()))
            worker.start()
            time.sleep(0.4)
            assert worker.is_alive()  # waiting for the lock, not failing
        worker.join(10)
    finally:
        holder.dispose()
    assert len(done) == 1
    assert done[0].created


# -- multi-table: exact discovery, on-demand tables --


def test_lookalike_tables_are_neither_read_nor_dropped(multi_table: Backend) -> None:
    backend = multi_table
    lookalikes = [
        "remindersx20240301",  # what LIKE 'reminders_%' would take: _ matches any character
        "reminders_20240301_old",
        "reminders_2024030",
        "reminders_20241399",  # eight digits, no date
        "reminders_archive",
        "other_20240301",
    ]
    with backend.engine.begin() as conn:
        datetime_type = sa.DateTime().compile(dialect=conn.dialect)
        for name in [*lookalikes, "reminders_20240301"]:
            conn.execute(
                sa.text(f"CREATE TABLE {name} (id BIGINT PRIMARY KEY, due {datetime_type})")
            )
            conn.execute(sa.text(f"INSERT INTO {name} VALUES (1, '2024-03-10 12:00:00')"))
    repo = backend.make()
    assert shards(backend, repo) == ["reminders_20240301"]
    report = repo.maintain()
    assert report.dropped == ("reminders_20240301",)
    assert set(lookalikes) <= table_names(backend.engine)
    assert repo.find_by_id(1) is None
    assert repo.count_by_date_range(TODAY - 30 * DAY, TODAY + DAY) == 0


def test_two_processes_creating_the_same_day_table_at_once(multi_table: Backend) -> None:
    backend = multi_table
    first = backend.make()
    other = backend.make(engine=create_engine(backend.url))
    first.maintain()
    far = NOW + 30 * DAY
    errors = run_threads(
        lambda: first.insert_many([reminder(far) for _ in range(5)]),
        lambda: other.insert_many([reminder(far) for _ in range(5)]),
    )
    other.engine.dispose()
    assert errors == []
    assert first.count_by_date_range(far - DAY, far + DAY) == 10


def test_two_sessions_creating_one_table_at_once_both_succeed(every_url: DatabaseUrl) -> None:
    # The second starts while the first's CREATE TABLE is not committed yet (PostgreSQL
    # would fail it on its catalog's unique index without the dialect's lock on the name).
    engine = create_engine(every_url)
    table = sa.Table("raced", sa.MetaData(), sa.Column("id", sa.Integer(), primary_key=True))
    dialect = dialect_for(engine)
    errors: list[BaseException] = []
    try:
        with engine.connect() as first:
            dialect.create_table(first, table)

            def second() -> None:
                try:
                    with engine.begin() as conn:
                        dialect.create_table(conn, table)
                except Exception as exc:
                    errors.append(exc)

            thread = threading.Thread(target=second)
            thread.start()
            time.sleep(0.3)
            first.commit()
            thread.join(30)
        assert errors == []
        assert "raced" in table_names(engine)
    finally:
        engine.dispose()


def test_a_table_whose_mark_allows_null_is_refused_and_kept(on_mysql: Backend) -> None:
    # Tables of versions before 0.1 said "no job yet" with NULL; read as if nothing
    # were unscheduled, their rows would never run, so they are refused by name.
    first = on_mysql.make(retention_days=1, precreate_days=0)
    stored = first.insert(reminder(NOW))
    old = sorted(
        t for t in table_names(on_mysql.engine) if t.startswith("reminders") and "infsched" not in t
    )
    with on_mysql.engine.begin() as conn:
        for name in old:
            conn.exec_driver_sql(f"ALTER TABLE {name} MODIFY infsched_job_at DATETIME(6) NULL")
    again = on_mysql.make(retention_days=1, precreate_days=0)
    with pytest.raises(ConfigError, match=r"made by an older infsched: its infsched_job_at column"):
        again.maintain()
    assert first.find_by_id(stored.id) == stored
