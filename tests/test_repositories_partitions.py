"""The partitioned backend on MariaDB and PostgreSQL: pruning, the catch-all, splits, adoption."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from infsched.clock import FixedClock
from infsched.errors import ConfigError
from infsched.repositories.partitioned import PartitionedRepository
from tests.repositories_support import (
    DAY,
    NOW,
    TODAY,
    Backend,
    Reminder,
    backend_fixture,
    id_of,
    reminder,
)

Repo = PartitionedRepository[Reminder, int]

backend = backend_fixture("partitioned-mysql", "partitioned-postgresql")


def database(backend: Backend) -> str:
    return backend.name.split("-")[1]


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def repo(backend: Backend, clock: FixedClock) -> Repo:
    repo = backend.make(clock=clock, retention_days=2, precreate_days=1)
    assert isinstance(repo, PartitionedRepository)
    repo.maintain()
    return repo


def names(repo: Repo) -> list[str]:
    return [p.name for p in repo.partitions()]


def test_a_one_day_range_reads_one_partition(repo: Repo) -> None:
    repo.insert_many([reminder(TODAY + i * timedelta(hours=5)) for i in range(10)])
    assert repo.explain_partitions(TODAY, TODAY + DAY) == ["p20240310"]
    assert repo.explain_partitions(NOW, NOW + timedelta(hours=1)) == ["p20240310"]
    assert repo.explain_partitions(TODAY, TODAY + 2 * DAY) == ["p20240310", "p20240311"]
    assert repo.explain_partitions(TODAY + 5 * DAY, TODAY + 6 * DAY) == ["pmax"]


def test_the_table_layout(repo: Repo) -> None:
    assert names(repo) == ["p20240308", "p20240309", "p20240310", "p20240311", "pmax"]
    uppers = [p.upper for p in repo.partitions()]
    assert uppers[:-1] == [datetime(2024, 3, d) for d in (9, 10, 11, 12)]
    assert uppers[-1] is None
    with repo.engine.connect() as conn:
        pk = sa.inspect(conn).get_pk_constraint("reminders")["constrained_columns"]
    assert pk == ["id", "due"]


def test_an_insert_far_in_the_future_goes_to_the_catch_all_and_moves_when_split(
    repo: Repo, clock: FixedClock
) -> None:
    far = datetime(2031, 6, 1, 8, 0, tzinfo=UTC)
    stored = repo.insert(reminder(far))
    assert repo.find_by_id(id_of(stored)) == stored
    assert {s.name: s.rows for s in repo.status()}["pmax"] == 1
    clock.set(far)
    report = repo.maintain()
    assert "p20310601" in report.created
    status = {s.name: s.rows for s in repo.status()}
    assert status["p20310601"] == 1
    assert status["pmax"] == 0
    assert repo.find_by_id(id_of(stored)) == stored


def test_new_days_are_only_ever_split_off_the_top(
    backend: Backend, repo: Repo, clock: FixedClock
) -> None:
    for _ in range(3):
        clock.advance(DAY)
        repo.maintain()
    # A longer retention configured later does not add partitions below the lowest one.
    longer = backend.make(clock=clock, retention_days=10, precreate_days=1)
    assert isinstance(longer, PartitionedRepository)
    report = longer.maintain()
    assert report.created == ()
    partitions = longer.partitions()
    assert names(longer)[0] == "p20240311"
    assert partitions[-1].name == "pmax"
    uppers = [p.upper for p in partitions[:-1] if p.upper is not None]
    assert len(uppers) == len(partitions) - 1
    assert all(b - a == DAY for a, b in itertools.pairwise(uppers))


def test_a_pause_longer_than_retention_leaves_only_the_window(
    repo: Repo, clock: FixedClock
) -> None:
    stored = repo.insert(reminder(NOW + DAY))
    clock.advance(10 * DAY)
    report = repo.maintain()
    # The days in between share one partition below the window, dropped in the same run.
    window = ["p20240318", "p20240319", "p20240320", "p20240321"]
    assert report.created == ("p20240317", *window)
    assert report.dropped == ("p20240308", "p20240309", "p20240310", "p20240311", "p20240317")
    assert names(repo) == [*window, "pmax"]
    assert repo.find_by_id(id_of(stored)) is None


#: Two day partitions and no catch-all, as an operator might have made the table.
WITHOUT_CATCH_ALL = {
    "mysql": [
        "CREATE TABLE reminders (id BIGINT NOT NULL, due DATETIME(6) NOT NULL, "
        "text VARCHAR(20) NOT NULL, kind VARCHAR(8) NOT NULL, count BIGINT NOT NULL, "
        "done BOOL NOT NULL, note VARCHAR(50) NULL, "
        "infsched_job_at DATETIME(6) NOT NULL DEFAULT 0, "
        "PRIMARY KEY (id, due)) PARTITION BY RANGE COLUMNS(due) ("
        "PARTITION p20240309 VALUES LESS THAN ('2024-03-10 00:00:00'), "
        "PARTITION p20240310 VALUES LESS THAN ('2024-03-11 00:00:00'))"
    ],
    "postgresql": [
        "CREATE TABLE reminders (id BIGINT NOT NULL, due TIMESTAMP(6) NOT NULL, "
        "text VARCHAR(20) NOT NULL, kind VARCHAR(8) NOT NULL, count BIGINT NOT NULL, "
        "done BOOLEAN NOT NULL, note VARCHAR(50) NULL, "
        "infsched_job_at TIMESTAMP(6) NOT NULL DEFAULT '1970-01-01 00:00:00', "
        "PRIMARY KEY (id, due)) PARTITION BY RANGE (due)",
        "CREATE TABLE reminders_p20240309 PARTITION OF reminders "
        "FOR VALUES FROM (MINVALUE) TO ('2024-03-10 00:00:00')",
        "CREATE TABLE reminders_p20240310 PARTITION OF reminders "
        "FOR VALUES FROM ('2024-03-10 00:00:00') TO ('2024-03-11 00:00:00')",
    ],
}


def test_a_table_without_catch_all_gets_one(backend: Backend, clock: FixedClock) -> None:
    with backend.engine.begin() as conn:
        for statement in WITHOUT_CATCH_ALL[database(backend)]:
            conn.exec_driver_sql(statement)
    repo = backend.make(clock=clock, retention_days=1, precreate_days=1)
    assert isinstance(repo, PartitionedRepository)
    report = repo.maintain()
    assert report.created == ("p20240311", "pmax")
    assert names(repo) == ["p20240309", "p20240310", "p20240311", "pmax"]
    repo.insert(reminder(NOW + 100 * DAY))


#: How the refusal names the partitioning it expected.
SCHEME = {"mysql": "RANGE COLUMNS `due`", "postgresql": "RANGE (due)"}


def test_a_table_that_is_not_partitioned_is_refused(backend: Backend) -> None:
    with backend.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE reminders (id BIGINT PRIMARY KEY)")
    repo = backend.make()
    expected = re.escape(f"exists but is not partitioned by {SCHEME[database(backend)]} (found: ")
    with pytest.raises(ConfigError, match=expected):
        repo.insert(reminder(NOW))


#: A partition called ``early`` below the catch-all.
FOREIGN_PARTITION = {
    "mysql": [
        "CREATE TABLE reminders (id BIGINT NOT NULL, due DATETIME(6) NOT NULL, "
        "PRIMARY KEY (id, due)) PARTITION BY RANGE COLUMNS(due) ("
        "PARTITION early VALUES LESS THAN ('2024-03-10 00:00:00'), "
        "PARTITION pmax VALUES LESS THAN (MAXVALUE))"
    ],
    "postgresql": [
        "CREATE TABLE reminders (id BIGINT NOT NULL, due TIMESTAMP(6) NOT NULL, "
        "PRIMARY KEY (id, due)) PARTITION BY RANGE (due)",
        "CREATE TABLE early PARTITION OF reminders "
        "FOR VALUES FROM (MINVALUE) TO ('2024-03-10 00:00:00')",
        "CREATE TABLE reminders_pmax PARTITION OF reminders DEFAULT",
    ],
}


def test_a_partition_not_made_by_infsched_is_refused(backend: Backend) -> None:
    with backend.engine.begin() as conn:
        for statement in FOREIGN_PARTITION[database(backend)]:
            conn.exec_driver_sql(statement)
    repo = backend.make()
    with pytest.raises(ConfigError, match="has partition 'early'"):
        repo.maintain()
