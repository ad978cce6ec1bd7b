"""Other applications writing entity rows with plain SQL (docs/integrating.md).

The writer is tests/raw_sql_writer.py in a process of its own, importing
nothing from infsched: what it gets right or wrong, the engine sees only in
the tables.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from infsched.clock import FixedClock, OffsetClock
from infsched.config import SchedulerConfig
from infsched.database import create_engine
from infsched.dburl import DatabaseUrl
from infsched.engine.binding import RepositoryBinding
from infsched.jobstore.tables import jobs
from infsched.management.scheduler import InfiniteScheduler
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.day_sharded import DATABASE_IDS_MAX, DayShardedRepository
from infsched.repositories.ids import FIRST_GENERATED_ID, IdGenerator
from infsched.repositories.multi_table import MultiTableRepository
from infsched.repositories.partitioned import PartitionedRepository
from tests.engine_support import RecordingExecutor, RecordingSink, Reminder, wait_until
from tests.test_engine import FAST

WRITER = Path(__file__).with_name("raw_sql_writer.py")


@attrs.frozen
class Case:
    backend: str
    database: str


CASES = [
    Case("multi_table", "sqlite"),
    Case("multi_table", "mysql"),
    Case("multi_table", "postgresql"),
    Case("partitioned", "mysql"),
    Case("partitioned", "postgresql"),
]


@pytest.fixture(params=CASES, ids=lambda c: f"{c.backend}-{c.database}")
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def url(case: Case, request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseUrl:
    if case.database != "sqlite":
        return request.getfixturevalue(f"{case.database}_url")  # type: ignore[no-any-return]
    return DatabaseUrl(f"sqlite:///{tmp_path / 'site.db'}")


def build(
    case: Case, url: DatabaseUrl, engine: sa.Engine, **overrides: Any
) -> DayShardedRepository[Reminder, int]:
    settings: dict[str, Any] = {"retention_days": 3, "precreate_days": 1, **overrides}
    options = RepositoryOptions(name="reminders", entity_type=Reminder, engine=engine, **settings)
    if case.backend == "partitioned":
        return PartitionedRepository(options)
    return MultiTableRepository(options)


def now() -> datetime:
    return datetime.now(UTC)


def write(url: DatabaseUrl, backend: str, groups: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Run the plain-SQL writer in a process of its own; the ids it wrote, by label."""
    if url.scheme.dialect == "mysql":
        u = url.sqlalchemy_url
        database: dict[str, Any] = {
            "mysql": {
                "host": u.host,
                "port": u.port or 3306,
                "user": u.username,
                "password": u.password or "",
                "database": u.database,
            }
        }
    elif url.scheme.dialect == "postgresql":
        u = url.sqlalchemy_url
        database = {
            "postgresql": f"host={u.host} port={u.port or 5432} user={u.username} "
            f"dbname={u.database}"
        }
    else:
        database = {"sqlite": url.sqlalchemy_url.database}
    plan = {"database": database, "backend": backend, "table": "reminders", "groups": groups}
    done = subprocess.run(
        [sys.executable, str(WRITER)],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def group(
    label: str, due: datetime, count: int, table_day: datetime | None = None
) -> dict[str, Any]:
    return {
        "label": label,
        "due": due.isoformat(),
        "count": count,
        "table_day": None if table_day is None else f"{table_day:%Y-%m-%d}",
    }


def node(
    url: DatabaseUrl,
    repo: DayShardedRepository[Reminder, int],
    executor: RecordingExecutor,
    sink: RecordingSink,
) -> InfiniteScheduler:
    """An in-process scheduler node with its job store at `url`."""
    return InfiniteScheduler(
        [RepositoryBinding(repo, executor="remind")],
        SchedulerConfig(database_url=url, node_id="node-a", **FAST),
        executors={"remind": executor},
        metrics_sinks=[sink],
    )


def waiting_jobs(engine: sa.Engine) -> dict[int, datetime]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(jobs.c.entity_id, jobs.c.due_at)).all()
    return {int(entity_id): due for entity_id, due in rows}


def test_rows_written_with_plain_sql_each_run_once_or_are_reported(
    case: Case, url: DatabaseUrl, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(url)
    repo = build(case, url, engine)
    repo.maintain()  # what a node does at its start
    start = now()
    today = start
    tomorrow, yesterday = start + timedelta(days=1), start - timedelta(days=1)
    far = start + timedelta(days=3)  # beyond precreate_days=1: no table yet
    groups = [
        group("timely", start + timedelta(seconds=2), 10),
        group("overdue", start - timedelta(hours=1), 10),
        group("far_future", far, 5),
    ]
    if case.backend == "multi_table":
        # The silent miss: due today, written into tomorrow's table; and the
        # other way round, yesterday's rows written into today's table.
        groups.append(group("misrouted", start + timedelta(seconds=1), 20, table_day=tomorrow))
        groups.append(group("misrouted", yesterday, 5, table_day=today))
    else:
        # The server routes by key; plain SQL can still write a row due before the
        # retention horizon, which lands in the oldest partition.
        groups.append(group("misrouted", repo.retention_horizon() - timedelta(hours=1), 5))
    written = write(url, case.backend, groups)
    misrouted = written["misrouted"]

    sink = RecordingSink()
    executor = RecordingExecutor()
    scheduler = node(url, repo, executor, sink)
    caplog.set_level(logging.WARNING, logger="infsched.fetcher")
    with scheduler:
        late = write(url, case.backend, [group("late", now() - timedelta(seconds=5), 10)])
        written.update(late)
        expected = {
            i for label in ("timely", "overdue", "misrouted", "late") for i in written[label]
        }
        wait_until(lambda: executor.count() >= len(expected), what=f"{len(expected)} runs")
        time.sleep(1.0)  # time for a second run of anything, if there were one
        ran = Counter(c.entity_id for c in executor.calls)
        fetcher = scheduler.fetchers[0]
    # Every timely, overdue, late and misrouted row ran, and ran once.
    assert set(ran) == expected
    assert set(ran.values()) == {1}
    # Every id came from the database's source, below the generator's ids, none twice.
    every = [i for ids in written.values() for i in ids]
    assert len(every) == len(set(every))
    assert all(1 <= i <= DATABASE_IDS_MAX for i in every)

    # The misrouted rows were reported: the metric, one WARNING naming them.
    assert sink.counters["entities_misrouted_total"] == len(misrouted)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    reported = [w for w in warnings if "due outside the days it holds" in w]
    assert reported, warnings
    assert all("repository reminders" in w for w in reported)
    assert any(str(misrouted[0]) in w for w in reported)
    # ... and `check` lists them (found and run, still in the wrong table).
    problems = repo.check()
    kinds = Counter(p.kind for p in problems)
    if case.backend == "multi_table":
        assert kinds == Counter({"misrouted": 2})
        by_table = {p.shard: p for p in problems}
        wrong = by_table[repo.table_name(tomorrow.date())]  # type: ignore[attr-defined]
        assert (wrong.rows, wrong.unscheduled) == (20, 0)
        assert set(wrong.example_ids) <= set(misrouted)
        assert by_table[repo.table_name(today.date())].rows == 5  # type: ignore[attr-defined]
    else:
        assert kinds == Counter({"before_horizon": 1})
        assert problems[0].rows == 5
        assert set(problems[0].example_ids) == set(misrouted)

    # The far-future rows did not run, and their table (made by the writer as the
    # doc says; partitioned: the catch-all) is read once they are due.
    assert not set(written["far_future"]) & set(ran)
    fetcher.clock = FixedClock(far + timedelta(seconds=1))
    fetcher.run_cycle()
    scheduled = waiting_jobs(scheduler.engine)
    assert set(scheduled) == set(written["far_future"])
    assert min(scheduled.values()) == far.replace(tzinfo=None)
    scheduler.engine.dispose()
    engine.dispose()


def test_the_database_ids_and_generated_ids_cannot_meet(every_url: DatabaseUrl) -> None:
    # The generator's smallest id, whatever the clock says (from the epoch on), is 2^40.
    epoch_ms = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    assert IdGenerator(node=0, now_ms=lambda: epoch_ms).next_id() == FIRST_GENERATED_ID
    assert IdGenerator(node=1023, now_ms=lambda: epoch_ms + 1).next_id() > FIRST_GENERATED_ID
    engine = create_engine(every_url)
    options = RepositoryOptions(name="reminders", entity_type=Reminder, engine=engine)
    repo: DayShardedRepository[Reminder, int] = (
        PartitionedRepository(options)
        if every_url.scheme.dialect == "mysql"
        else MultiTableRepository(options)
    )
    repo.maintain()
    stored = repo.insert_many([Reminder(due=now(), text="by insert_many")])[0]
    assert stored.id is not None
    assert stored.id >= FIRST_GENERATED_ID
    source = repo.id_source
    assert source == "reminders_id_seq"
    # The database's source stops at 2^40 - 1: it refuses to go on rather than meet them.
    with engine.begin() as conn:
        if every_url.scheme.dialect == "postgresql":
            assert conn.exec_driver_sql(
                f"SELECT max_value, cycle FROM pg_sequences WHERE sequencename = '{source}'"
            ).one() == (DATABASE_IDS_MAX, False)
            conn.exec_driver_sql(f"SELECT setval('{source}', {DATABASE_IDS_MAX})")
        elif every_url.scheme.dialect == "mysql":
            assert conn.exec_driver_sql(
                f"SELECT maximum_value, cycle_option FROM {source}"
            ).one() == (
                DATABASE_IDS_MAX,
                0,
            )
            conn.exec_driver_sql(f"SELECT SETVAL({source}, {DATABASE_IDS_MAX})")
        else:
            conn.exec_driver_sql(f"UPDATE {source} SET next_id = {DATABASE_IDS_MAX + 1}")
    beyond = {
        "mysql": f"SELECT NEXT VALUE FOR {source}",
        "postgresql": f"SELECT nextval('{source}')",
    }.get(every_url.scheme.dialect, f"UPDATE {source} SET next_id = next_id + 1")
    with engine.begin() as conn, pytest.raises(sa.exc.DBAPIError):
        conn.exec_driver_sql(beyond)
    assert repo.find_by_id(stored.id) == stored
    engine.dispose()


@pytest.mark.parametrize("server", ["mysql_url", "postgresql_url"])
def test_maintenance_gives_an_older_table_its_id_default(
    server: str, request: pytest.FixtureRequest
) -> None:
    engine = create_engine(request.getfixturevalue(server))
    options = RepositoryOptions(name="reminders", entity_type=Reminder, engine=engine)
    repo: MultiTableRepository[Reminder, int] = MultiTableRepository(options)
    repo.maintain()
    table = repo.table_name(now().date())
    with engine.begin() as conn:  # as a table made by a release before sequences
        conn.exec_driver_sql(f"ALTER TABLE {table} ALTER COLUMN id DROP DEFAULT")
    problems = repo.check()
    assert [(p.kind, p.shard) for p in problems] == [("id_source", "reminders_id_seq")]
    assert table in problems[0].message
    # The new release's process starting:
    upgraded: MultiTableRepository[Reminder, int] = MultiTableRepository(options)
    upgraded.maintain()
    assert upgraded.check() == []
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO {table} (due, text, priority) VALUES (:due, 'x', 0)"),
            {"due": now().replace(tzinfo=None)},
        )
        new_id = conn.exec_driver_sql(f"SELECT MAX(id) FROM {table}").scalar_one()
    assert 1 <= new_id <= DATABASE_IDS_MAX
    engine.dispose()


def test_find_unscheduled_and_mark_scheduled_take_a_row_from_the_wrong_day_table(
    every_url: DatabaseUrl,
) -> None:
    engine = create_engine(every_url)
    repo = build(
        Case("multi_table", "mysql" if every_url.scheme.dialect == "mysql" else "sqlite"),
        every_url,
        engine,
    )
    repo.maintain()
    due = now()
    (wrong,) = write(
        every_url, "multi_table", [group("misrouted", due, 1, table_day=due + timedelta(days=1))]
    ).values()
    horizon, end = repo.retention_horizon(), due + timedelta(seconds=1)
    found = repo.find_unscheduled(horizon, end, 10)
    assert [e.id for e in found] == wrong
    with engine.begin() as conn:
        repo.mark_scheduled(conn, found, due)
    assert repo.find_unscheduled(horizon, end, 10) == []
    engine.dispose()


def test_a_row_beyond_precreate_days_runs_once_the_writer_made_its_table(
    case: Case, url: DatabaseUrl
) -> None:
    # The repository's clock runs three days behind, so that the days laid out end
    # the day before yesterday and "now" is a day with no table yet, as a row due in
    # three days would be; the writer makes the table as docs/integrating.md says.
    engine = create_engine(url)
    repo = build(case, url, engine, retention_days=5, clock=OffsetClock(timedelta(days=-3)))
    repo.maintain()
    if isinstance(repo, MultiTableRepository):
        with engine.connect() as conn:
            assert now().date() not in repo.existing_days(conn)
    written = write(url, case.backend, [group("far_future", now() + timedelta(seconds=1), 5)])
    executor = RecordingExecutor()
    with node(url, repo, executor, RecordingSink()) as scheduler:
        wait_until(lambda: executor.count() >= 5, what="5 runs")
        time.sleep(0.5)
    assert sorted(c.entity_id for c in executor.calls) == sorted(written["far_future"])
    assert repo.check() == []
    scheduler.engine.dispose()
    engine.dispose()


def test_a_repository_in_another_database_marks_misrouted_rows_where_they_are(
    every_url: DatabaseUrl, tmp_path: Path
) -> None:
    # Entities in their own SQLite file, the job store elsewhere: rows cross through
    # Python, and a row in the wrong day table must be marked in that table, or the
    # next cycles would offer it again.
    entities_url = DatabaseUrl(f"sqlite:///{tmp_path / 'entities.db'}")
    entities_engine = create_engine(entities_url)
    repo = build(Case("multi_table", "sqlite"), entities_url, entities_engine)
    repo.maintain()
    due = now() - timedelta(seconds=1)
    written = write(
        entities_url,
        "multi_table",
        [group("misrouted", due, 3, table_day=due + timedelta(days=1)), group("timely", due, 2)],
    )
    sink = RecordingSink()
    scheduler = node(every_url, repo, RecordingExecutor(), sink)
    scheduler.store.create_schema()
    fetcher = scheduler.fetchers[0]
    assert not fetcher._shared_db
    assert fetcher.run_cycle().moved == 5
    assert fetcher.run_cycle().moved == 0
    assert set(waiting_jobs(scheduler.engine)) == {*written["misrouted"], *written["timely"]}
    assert sink.counters["entities_misrouted_total"] == 3
    scheduler.engine.dispose()
    entities_engine.dispose()
