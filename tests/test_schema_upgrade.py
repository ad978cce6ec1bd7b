"""Upgrading a database made and filled by release 0.1.0 (commit d40b5bd) to this code's schema.

The 0.1.0 code is taken from this repository's own history (`git archive`),
so a fresh clone runs these tests too, and is run in a child interpreter
without site (``-S``): this tree's editable install is then not on its path,
while the dependencies, which are the same, are.

0.1.0 had no PostgreSQL dialect, so a PostgreSQL database at the baseline
revision r0001 is made the one way it can exist: filled by this code as the
0.1.0 writer fills the others, then taken back to r0001 (what r0002 added
dropped, the version table set to r0001), as a database recorded at r0001
by Alembic would be.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from infsched.clock import SystemClock
from infsched.config import SchedulerConfig
from infsched.database import create_engine
from infsched.dburl import DatabaseUrl
from infsched.dialects import dialect_for
from infsched.engine.binding import RepositoryBinding
from infsched.errors import SchemaVersionError
from infsched.executors import JobContext, PermanentError
from infsched.management.scheduler import InfiniteScheduler
from infsched.migrations import VERSION_TABLE
from infsched.migrations.day_tables import history_tables, id_sourced, table_names
from infsched.migrations.versions.r0002_history_indexes_id_sources import HISTORY_INDEXES
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import ShardingRepository
from infsched.repositories.multi_table import MultiTableRepository
from infsched.repositories.partitioned import PartitionedRepository
from infsched.schema_versions import OLDEST_CODE_TABLE, head, release_of, schema_state, upgrade
from tests.engine_support import Reminder, wait_until
from tests.test_cli import Run, raw
from tests.test_cli import run as run  # the fixture: `infsched ARGS` in a clean environment

INFSCHED = str(Path(sys.executable).with_name("infsched"))

ROOT = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "d40b5bd"
WRITER = Path(__file__).resolve().parent / "baseline" / "write_0_1_0.py"
#: What the writer leaves per repository (tests/baseline/write_0_1_0.py's COUNTS).
WAITING, CLAIMED, NOT_FETCHED, DEAD = 4, 2, 3, 2


@pytest.fixture(scope="session")
def baseline_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory holding 0.1.0's `infsched` package."""
    target = tmp_path_factory.mktemp("infsched-0.1.0")
    made = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", BASELINE_COMMIT, "core/infsched"],
        capture_output=True,
    )
    if made.returncode != 0:
        pytest.fail(
            f"commit {BASELINE_COMMIT} (0.1.0) is not in this clone's history "
            f"(a shallow clone? `git fetch --unshallow`): {made.stderr.decode().strip()}"
        )
    archive = made.stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target / "core"


@pytest.fixture
def baseline_database(baseline_code: Path) -> Callable[[DatabaseUrl], None]:
    """Fills a database with 0.1.0's code (its tables, a node's work, waiting and claimed jobs).

    On PostgreSQL, which 0.1.0 did not know, with this code, then taken back to r0001.
    """

    def fill(url: DatabaseUrl) -> None:
        if url.scheme.dialect == "postgresql":
            write_at_baseline(url)
            return
        path = os.pathsep.join([str(baseline_code), sysconfig.get_paths()["purelib"]])
        # Only 0.1.0's built-in plugins: this tree's plugins are not importable there.
        env = {**os.environ, "PYTHONPATH": path, "INFSCHED_LOAD_PLUGINS": "none"}
        done = subprocess.run(
            [sys.executable, "-S", str(WRITER), url.sqlalchemy_url.render_as_string(False)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr

    return fill


def repositories(url: DatabaseUrl, engine: sa.Engine) -> list[ShardingRepository[Reminder, int]]:
    """This code's view of the writer's repositories."""
    backends: list[tuple[str, Any]] = [("remm", MultiTableRepository)]
    if url.scheme.dialect == "mysql":
        backends.append(("remp", PartitionedRepository))
    return [
        backend(
            RepositoryOptions(
                name=name,
                entity_type=Reminder,
                engine=engine,
                retention_days=3,
                precreate_days=1,
                clock=SystemClock(),
            )
        )
        for name, backend in backends
    ]


class TextRecorder:
    """Records the text of every entity it runs."""

    def __init__(self) -> None:
        self.texts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, job: JobContext[Reminder]) -> None:
        with self._lock:
            self.texts[f"{job.repository}:{job.entity.text}"] += 1


def node_for(
    url: DatabaseUrl,
    engine: sa.Engine,
    executor: Callable[[JobContext[Reminder]], None],
    node_id: str = "new-node",
) -> InfiniteScheduler:
    repos = repositories(url, engine)
    config = SchedulerConfig(
        database_url=url,
        node_id=node_id,
        fetch_interval=0.2,
        lookahead_window=1.0,
        heartbeat_interval=0.5,
        job_lease=5.0,
        thread_pool_size=4,
    )
    return InfiniteScheduler(
        [RepositoryBinding(r, executor=r.name) for r in repos],
        config,
        executors={r.name: executor for r in repos},
        engine=engine,
    )


def _reject_dead(job: JobContext[Reminder]) -> None:
    if job.entity.text.startswith("dead"):
        raise PermanentError("rejected for good")


def _count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def write_at_baseline(url: DatabaseUrl) -> None:
    """What tests/baseline/write_0_1_0.py leaves, written by this code, then taken back to r0001."""
    engine = create_engine(url)
    try:
        repos = repositories(url, engine)
        past = datetime.now(UTC) - timedelta(minutes=5)

        def reminders(kind: str, count: int) -> list[Reminder]:
            return [Reminder(due=past, text=f"{kind}-{i}") for i in range(count)]

        for repo in repos:
            repo.maintain()
            repo.insert_many([*reminders("ok", 5), *reminders("dead", DEAD)])
        node = node_for(url, engine, _reject_dead, node_id="old-node")
        with node:
            dead = len(repos) * DEAD
            wait_until(
                lambda: (
                    _count(engine, "SELECT COUNT(*) FROM infsched_jobs WHERE state = 'dead'")
                    == dead
                    and _count(engine, "SELECT COUNT(*) FROM infsched_jobs") == dead
                ),
                timeout=60,
                what="the dead letters",
            )
            wait_until(
                lambda: (
                    sum(
                        len(r)
                        for n, r in all_rows(engine).items()
                        if n.startswith("infsched_history")
                    )
                    >= len(repos) * (5 + DEAD)
                ),
                timeout=60,
                what="the history",
            )
            node.controls.pause("elsewhere", by="old-operator")
        idle = node_for(url, engine, _reject_dead, node_id="old-node")
        for repo in repos:
            repo.insert_many([*reminders("wait", WAITING), *reminders("claimed", CLAIMED)])
        for fetcher in idle.fetchers:
            fetcher.run_cycle()
        for repo in repos:
            assert len(idle.store.claim_due("gone-node", CLAIMED, 3.0, [repo.name])) == CLAIMED
            repo.insert_many(reminders("later", NOT_FETCHED))
        with engine.begin() as conn:
            # Back to r0001: r0003's table, r0002's history indexes and id sequences
            # (a sequence's default goes with it).
            dialect = dialect_for(engine)
            for name in history_tables(conn, dialect):
                for ix in sa.inspect(conn).get_indexes(name):
                    if tuple(ix["column_names"]) in HISTORY_INDEXES.values():
                        conn.execute(sa.text(f"DROP INDEX {ix['name']}"))
            for sourced in id_sourced(conn, dialect):
                conn.execute(sa.text(f"DROP SEQUENCE {sourced.source} CASCADE"))
            conn.execute(sa.text(f"DROP TABLE {OLDEST_CODE_TABLE}"))
            conn.execute(sa.text("DROP TABLE infsched_schedules"))  # r0003's
            # r0004's: the limits table, the jobs' flow key and the claim index by lane.
            conn.execute(sa.text("DROP TABLE infsched_limits"))
            conn.execute(sa.text("ALTER TABLE infsched_nodes DROP COLUMN database_member"))
            conn.execute(sa.text("DROP INDEX ix_infsched_jobs_claim"))
            conn.execute(sa.text("ALTER TABLE infsched_jobs DROP COLUMN flow_key"))
            conn.execute(
                sa.text(
                    "CREATE INDEX ix_infsched_jobs_claim ON infsched_jobs (state, priority, run_at)"
                )
            )
            conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = 'r0001'"))
    finally:
        engine.dispose()


#: Columns later revisions add to rows that exist (r0004: the jobs' flow key, '' for them;
#: r0005: the nodes' database member, NULL for them).
ADDED_COLUMNS = {("infsched_jobs", "flow_key"), ("infsched_nodes", "database_member")}


def all_rows(engine: sa.Engine) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every table but the id sources (a sequence is its state, not rows).

    A partitioned table's rows are read once, through it, not again through its
    partitions.  The columns later revisions add (ADDED_COLUMNS) are left out, so
    a row reads the same before and after an upgrade.
    """
    with engine.connect() as conn:
        listed = table_names(conn, dialect_for(engine))
        names = [n for n in listed if not n.endswith("_id_seq")]
        inspector = sa.inspect(conn)
        found = {}
        for name in names:
            columns = [
                c["name"]
                for c in inspector.get_columns(name)
                if (name, c["name"]) not in ADDED_COLUMNS
            ]
            found[name] = sorted(
                tuple(repr(v) for v in row)
                for row in conn.execute(sa.text(f"SELECT {', '.join(columns)} FROM {name}"))
            )
        return found


def indexes_and_defaults(engine: sa.Engine) -> dict[str, tuple[Any, ...]]:
    """Each table's indexes, id column default and columns: the upgraded and a new one must match.

    A later change to a table that comes without its revision makes them differ.
    """
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        defaults: dict[str, Any] = {}
        # PostgreSQL's inspector shows a sequence default (in the columns below).
        if engine.dialect.name == "mysql":
            # The inspector does not show a sequence default; information_schema does.
            rows = conn.execute(
                sa.text(
                    "SELECT TABLE_NAME, COLUMN_DEFAULT FROM information_schema.COLUMNS "
                    "WHERE TABLE_SCHEMA = DATABASE() AND COLUMN_NAME = 'id'"
                )
            )
            database = str(engine.url.database)
            defaults = {
                name: None if default is None else str(default).replace(database, "DB")
                for name, default in rows
            }
        return {
            name: (
                sorted(tuple(ix["column_names"]) for ix in inspector.get_indexes(name)),
                defaults.get(name),
                [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                    for c in inspector.get_columns(name)
                ],
            )
            for name in inspector.get_table_names()
        }


@pytest.fixture
def engine(every_url: DatabaseUrl) -> Iterator[sa.Engine]:
    made = create_engine(every_url)
    yield made
    made.dispose()


@pytest.fixture
def fresh_url(
    every_url: DatabaseUrl, request: pytest.FixtureRequest, tmp_path: Path
) -> DatabaseUrl:
    """An empty database of `every_url`'s kind, for the schema this code makes."""
    if every_url.scheme.server:
        factory: Callable[[], DatabaseUrl] = request.getfixturevalue(
            f"{every_url.scheme.dialect}_database_factory"
        )
        return factory()
    return DatabaseUrl(f"sqlite:///{tmp_path / 'fresh.db'}")


def test_a_0_1_0_database_upgrades_with_every_row_kept_and_a_new_node_runs_its_jobs(
    every_url: DatabaseUrl,
    engine: sa.Engine,
    baseline_database: Callable[[DatabaseUrl], None],
    fresh_url: DatabaseUrl,
    run: Callable[..., Run],
) -> None:
    baseline_database(every_url)
    # Only PostgreSQL's is recorded at r0001 (0.1.0 recorded no version): the row moves on.
    recorded = {VERSION_TABLE} if every_url.scheme.dialect == "postgresql" else set()
    before = {n: rows for n, rows in all_rows(engine).items() if n not in recorded}
    with engine.connect() as conn:
        states = Counter(conn.execute(sa.text("SELECT state FROM infsched_jobs")).scalars().all())
        assert sa.inspect(conn).has_table(VERSION_TABLE) == bool(recorded)
    repos = 2 if every_url.scheme.dialect == "mysql" else 1
    assert states == {
        "waiting": repos * WAITING,
        "claimed": repos * CLAIMED,
        "dead": repos * DEAD,
    }
    history = [n for n in before if n.startswith("infsched_history")]
    assert sum(len(before[n]) for n in history) == repos * 7
    assert [row[0] for row in before["infsched_pauses"]] == [repr("elsewhere")]
    assert before["infsched_leases"]
    assert before["infsched_nodes"]

    # This code refuses the database until it is upgraded, in one line.
    executor = TextRecorder()
    node = node_for(every_url, engine, executor)
    with pytest.raises(SchemaVersionError) as refused:
        node.start()
    message = str(refused.value)
    assert "\n" not in message
    assert "r0001 (0.1.0)" in message
    assert f"{head()} (" in message
    assert "infsched db upgrade" in message

    # --sql changes nothing.
    printed = run("db", "upgrade", "--sql", "--db", raw(every_url))
    assert printed.code == 0, printed.err
    assert "state_by_key" in printed.out
    assert VERSION_TABLE in printed.out
    assert {n: r for n, r in all_rows(engine).items() if n not in recorded} == before
    init = run("db", "init", "--db", raw(every_url))
    assert "r0001 (0.1.0)" in init.out
    assert "run `infsched db upgrade`" in init.out
    # init only adds what is missing (the empty schedules and limits tables), and alters nothing.
    shown = {n: r for n, r in all_rows(engine).items() if n not in recorded}
    assert shown == {**before, "infsched_schedules": [], "infsched_limits": []}
    current = run("db", "current", "--db", raw(every_url))
    assert "r0001 (0.1.0)" in current.out
    assert "infsched db upgrade" in current.out

    upgraded = run("db", "upgrade", "--db", raw(every_url))
    assert upgraded.code == 0, upgraded.err
    assert f"from r0001 (0.1.0) to {head()}" in upgraded.out
    after = all_rows(engine)
    for table, rows in before.items():
        assert after[table] == rows, table
    assert set(after) - set(before) == {
        VERSION_TABLE,
        OLDEST_CODE_TABLE,
        "infsched_schedules",
        "infsched_limits",
    }
    assert after[VERSION_TABLE] == [(repr(head()),)]
    with engine.connect() as conn:
        assert schema_state(conn).status == "current"
    assert "already at" in run("db", "upgrade", "--db", raw(every_url)).out

    # The upgraded schema is the one this code makes: same indexes and id defaults.
    fresh = create_engine(fresh_url)
    try:
        for repo in repositories(fresh_url, fresh):
            repo.maintain()
        node_for(fresh_url, fresh, TextRecorder()).history.repository.maintain()
        assert run("db", "init", "--db", raw(fresh_url)).code == 0
        made = indexes_and_defaults(fresh)
    finally:
        fresh.dispose()
    got = indexes_and_defaults(engine)
    assert {n: got[n] for n in made if n in got} == {n: made[n] for n in made if n in got}
    assert len(set(made) & set(got)) >= 5  # the fixed tables, history and entity days

    # A node of this code runs the waiting jobs, the gone node's claims and the unfetched rows.
    expected = Counter(
        {
            f"{name}:{kind}-{i}": 1
            for name in ["remm", "remp"][:repos]
            for kind, count in [("wait", WAITING), ("claimed", CLAIMED), ("later", NOT_FETCHED)]
            for i in range(count)
        }
    )
    with node_for(every_url, engine, executor):
        wait_until(lambda: executor.texts == expected, timeout=60, what=f"{expected}")

        def states_left() -> Counter[str]:
            with engine.connect() as conn:
                return Counter(
                    conn.execute(sa.text("SELECT state FROM infsched_jobs")).scalars().all()
                )

        # The last jobs' outcomes are recorded just after their executor returned.
        wait_until(
            lambda: states_left() == {"dead": repos * DEAD}, timeout=30, what="only dead letters"
        )
    assert executor.texts == expected


def test_an_upgrade_stopped_by_a_lock_wait_timeout_finishes_when_run_again(
    mysql_url: DatabaseUrl, baseline_database: Callable[[DatabaseUrl], None]
) -> None:
    baseline_database(mysql_url)
    engine = create_engine(mysql_url)
    impatient = create_engine(mysql_url, pool_size=1)

    @sa.event.listens_for(impatient, "connect")
    def _short_lock_waits(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET SESSION lock_wait_timeout = 1")

    try:
        before = all_rows(engine)
        days = sorted(n for n in before if n.startswith("remm_"))
        holder = engine.connect()
        try:
            # A reader's open transaction holds the metadata lock the last day's ALTER needs:
            # MariaDB commits the DDL before it one statement at a time, so the run stops halfway.
            holder.execute(sa.text(f"SELECT COUNT(*) FROM {days[-1]}"))
            with pytest.raises(sa.exc.OperationalError, match="Lock wait timeout"):
                upgrade(impatient)
        finally:
            holder.rollback()
            holder.close()
        halfway = indexes_and_defaults(engine)
        with engine.connect() as conn:
            stopped = schema_state(conn)
        assert (stopped.revision, stopped.recorded, stopped.status) == ("r0001", True, "behind")
        assert halfway[days[0]][1] is not None
        assert halfway[days[-1]][1] is None
        assert halfway["remp"][1] is None

        upgrade(impatient)
        finished = indexes_and_defaults(engine)
        with engine.connect() as conn:
            assert schema_state(conn).status == "current"
        assert all(finished[table][1] is not None for table in [*days, "remp"])
        assert ["repository", "finished_at", "id"] in [
            list(c) for c in finished["infsched_history"][0]
        ]
        after = all_rows(engine)
        assert {name: after[name] for name in before} == before
    finally:
        impatient.dispose()
        engine.dispose()


def test_code_older_than_the_database_refuses_unless_the_database_says_it_may_run(
    sqlite_url: DatabaseUrl, run: Callable[..., Run]
) -> None:
    assert run("db", "init", "--db", raw(sqlite_url)).code == 0
    engine = create_engine(sqlite_url)
    try:
        # A later release's revision, whose code no longer runs with this one's.
        with engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = 'r9999'"))
            conn.execute(sa.text(f"UPDATE {OLDEST_CODE_TABLE} SET revision = 'r9998'"))
        with pytest.raises(SchemaVersionError) as refused:
            node_for(sqlite_url, engine, TextRecorder()).start()
        message = str(refused.value)
        assert "\n" not in message
        assert "r9999" in message
        assert f"{head()} (" in message
        current = run("db", "current", "--json", "--db", raw(sqlite_url))
        assert json.loads(current.out)["status"] == "ahead"
        assert run("db", "upgrade", "--db", raw(sqlite_url)).code == 1

        # The later release marked its revisions compatible down to this code's.
        with engine.begin() as conn:
            conn.execute(
                sa.text(f"UPDATE {OLDEST_CODE_TABLE} SET revision = :head"), {"head": head()}
            )
        node = node_for(sqlite_url, engine, TextRecorder())
        node.start()
        node.stop()
    finally:
        engine.dispose()


def test_infsched_run_refuses_a_0_1_0_database_in_one_line(
    sqlite_url: DatabaseUrl,
    baseline_database: Callable[[DatabaseUrl], None],
    tmp_path: Path,
) -> None:
    baseline_database(sqlite_url)
    config = tmp_path / "node.toml"
    config.write_text(
        '[[repositories]]\nname = "sms"\nentity = "SmsEntity"\nexecutor = "sms"\n'
        '[plugins.sms]\ntransport = "console"\n'
    )
    # A real process with a deadline: a node that stopped refusing would run on, and
    # in-process that would hang the suite instead of failing this test.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INFSCHED_")}
    refused = subprocess.run(
        [INFSCHED, "run", "--config", str(config), "--db", raw(sqlite_url)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=tmp_path,
        check=False,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"error: the database schema is at r0001 (0.1.0) and this code needs {head()} "
        f"({release_of(head())}): run `infsched db upgrade`"
    ]
