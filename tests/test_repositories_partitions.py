"""The partitioned backend on MariaDB and PostgreSQL: pruning, the catch-all, splits, adoption."""

from __future__ import annotations

import itertools
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from infsched.clock import FixedClock
from infsched.dialects import dialect_for
from infsched.errors import ConfigError
from infsched.repositories.partitioned import PartitionedRepository
from infsched.sentinel_time import EPOCH
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


def test_the_engine_reads_unscheduled_rows_off_the_job_at_index(
    backend: Backend, repo: Repo
) -> None:
    """The fetch's query (no job yet, a range of keys, in key order) reads `ix_<table>_job_at`.

    On PostgreSQL each partition has its copy of the index, named by the
    table's (`Dialect.indexes_used`), so both databases name the same one.
    """
    stored = repo.insert_many([reminder(TODAY + i * timedelta(seconds=40)) for i in range(2000)])
    with repo.engine.begin() as conn:
        repo.mark_scheduled(conn, stored[:1990], NOW)  # a real table: most rows have their job
        analyze = "ANALYZE TABLE reminders" if database(backend) == "mysql" else "ANALYZE reminders"
        conn.exec_driver_sql(analyze)
    with repo.engine.connect() as conn:
        [table] = repo.all_tables(conn)
        query = (
            sa.select(table.c.id, table.c.due)
            .where(
                table.c.infsched_job_at == EPOCH.replace(tzinfo=None),
                table.c.due >= (TODAY - 2 * DAY).replace(tzinfo=None),
                table.c.due < (NOW + timedelta(hours=1)).replace(tzinfo=None),
            )
            .order_by(table.c.due, table.c.id)
            .limit(1000)
        )
        used = dialect_for(repo.engine).indexes_used(conn, query)
    assert set(used) == {"ix_reminders_job_at"}, used


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


#: Each row's partition, as the database placed it: (partition, id, due) per row.
PLACED_ROWS = {
    "mysql": "SELECT '{partition}', id, due FROM reminders PARTITION (`{partition}`)",
    "postgresql": "SELECT c.relname, r.id, r.due FROM reminders r JOIN pg_class c "
    "ON c.oid = r.tableoid",
}


def placed_rows(backend: Backend, repo: Repo) -> list[tuple[str, int, datetime]]:
    """(partition, id, due) of every row, the partition being where the row is stored."""
    found: list[tuple[str, int, datetime]] = []
    template = PLACED_ROWS[database(backend)]
    with repo.engine.connect() as conn:
        statements = [template.format(partition=name) for name in names(repo)]
        for statement in dict.fromkeys(statements):  # PostgreSQL: one statement reads all
            found.extend(
                (str(p).removeprefix("reminders_"), i, d)
                for p, i, d in conn.execute(sa.text(statement))
            )
    return found


def wait_for_a_blocked_writer(
    backend: Backend, repo: Repo, writer_started: threading.Event
) -> None:
    """Return once a writer's insert overlaps the split that is under way.

    PostgreSQL (called after ATTACH, before the commit): an insert waits for
    a lock on the table or one of its partitions.  MariaDB (called before REORGANIZE, which commits
    by itself): a writer has started an insert since.  A guard stops a hang;
    nothing here is measured.
    """
    if database(backend) == "mysql":
        writer_started.clear()
        assert writer_started.wait(60), "no writer started an insert during the split"
        return
    waiting = sa.text(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation IN ("
        "SELECT 'reminders'::regclass UNION SELECT inhrelid FROM pg_inherits "
        "WHERE inhparent = 'reminders'::regclass)"
    )
    with repo.engine.connect() as probe:
        for _ in range(6000):
            if probe.execute(waiting).scalar_one() > 0:
                return
            probe.rollback()
            time.sleep(0.01)
    raise AssertionError("no writer waited for the split")


#: The statement of a split that writers must overlap, and whether the hook runs after it.
SPLIT = {"mysql": ("REORGANIZE PARTITION", False), "postgresql": ("ATTACH PARTITION", True)}


def test_rows_inserted_while_days_are_split_off_land_once_in_their_partition(
    backend: Backend, clock: FixedClock
) -> None:
    """Writers keep inserting into the catch-all's days while maintenance splits them off.

    Every split overlaps an insert (`wait_for_a_blocked_writer`); afterwards
    each row is stored exactly once, in the partition its key belongs to.
    """
    repo = backend.make(clock=clock, retention_days=10, precreate_days=1)
    assert isinstance(repo, PartitionedRepository)
    repo.maintain()
    stop = threading.Event()
    writer_started = threading.Event()
    stored: list[Reminder] = []
    errors: list[BaseException] = []
    overlapped: list[str] = []
    split, after = SPLIT[database(backend)]

    def write(seed: int) -> None:
        step = 0
        try:
            while not stop.is_set():
                step += 1
                # Days 2..6 ahead: in the catch-all until maintenance splits them off.
                dues = [
                    NOW + (2 + (seed + step + i) % 5) * DAY + i * timedelta(minutes=7)
                    for i in range(3)
                ]
                writer_started.set()
                stored.extend(repo.insert_many([reminder(due, f"w{seed}") for due in dues]))
        except BaseException as exc:
            errors.append(exc)

    def hook(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if split in statement:
            wait_for_a_blocked_writer(backend, repo, writer_started)
            overlapped.append(statement)

    event = "after_cursor_execute" if after else "before_cursor_execute"
    writers = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for thread in writers:
        thread.start()
    try:
        while len(stored) < 30:  # the catch-all holds rows of the days about to be split off
            time.sleep(0.01)
        sa.event.listen(repo.engine, event, hook)
        for _ in range(5):
            clock.advance(DAY)
            assert len(repo.maintain().created) == 1
    finally:
        sa.event.remove(repo.engine, event, hook)
        stop.set()
        for thread in writers:
            thread.join()
    assert errors == []
    assert len(overlapped) == 5
    placed = placed_rows(backend, repo)
    ids = [i for _, i, _ in placed]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(id_of(r) for r in stored)
    bounds: dict[str, tuple[datetime, datetime]] = {}
    lower = datetime.min
    for partition in repo.partitions():
        upper = datetime.max if partition.upper is None else partition.upper
        bounds[partition.name] = (lower, upper)
        lower = upper
    misplaced = [
        (name, due) for name, _, due in placed if not bounds[name][0] <= due < bounds[name][1]
    ]
    assert misplaced == []
    split_off = {f"p{(TODAY + k * DAY):%Y%m%d}" for k in range(2, 7)}
    assert split_off <= {name for name, _, _ in placed}


def test_a_split_that_deadlocks_with_a_fetch_is_tried_again(
    backend: Backend, clock: FixedClock
) -> None:
    """A fetch holds row locks reaching the DEFAULT partition, then marks rows of a day.

    The split waits for the DEFAULT partition, the fetch's UPDATE for the
    split's lock on the table: PostgreSQL breaks the deadlock by rolling the
    split back, and maintenance splits the day again once the fetch is done.
    """
    if database(backend) != "postgresql":
        pytest.skip(
            "MariaDB's REORGANIZE PARTITION does not take the catch-all apart from the table"
        )
    repo = backend.make(clock=clock, retention_days=2, precreate_days=1)
    assert isinstance(repo, PartitionedRepository)
    repo.maintain()
    [today] = repo.insert_many([reminder(NOW)])
    clock.advance(DAY)
    errors: list[BaseException] = []
    reports = []

    def maintain() -> None:
        try:
            reports.append(repo.maintain())
        except BaseException as exc:
            errors.append(exc)

    with repo.engine.connect() as fetch:
        # Only the split's session runs the deadlock check, so the split is the one broken.
        fetch.exec_driver_sql("SET deadlock_timeout = '60s'")
        # A fetch's claim without a lower bound: no partition is pruned, the DEFAULT one too.
        fetch.exec_driver_sql("SELECT id FROM reminders FOR UPDATE SKIP LOCKED").all()
        split = threading.Thread(target=maintain)
        split.start()
        wait_for_a_blocked_writer(backend, repo, threading.Event())
        fetch.execute(
            sa.text(
                "UPDATE reminders SET infsched_job_at = :now WHERE id = :id "
                "AND due >= :day AND due < :next"
            ),
            {
                "now": NOW.replace(tzinfo=None),
                "id": id_of(today),
                "day": TODAY.replace(tzinfo=None),
                "next": (TODAY + DAY).replace(tzinfo=None),
            },
        )
        fetch.commit()
        split.join()
    assert errors == []
    assert [r.created for r in reports] == [("p20240312",)]
    assert names(repo)[-2:] == ["p20240312", "pmax"]
