"""Each dialect reads its own database's real errors: deadlock, lock timeout, duplicate key,
missing table, lost connection (a killed session, a server shut down, a refused connection)
and PostgreSQL's serialization failure; and leaves other databases' errors alone."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import pytest
import sqlalchemy as sa

from infsched.conflict_retries import is_conflict
from infsched.dburl import DatabaseUrl
from infsched.dialects import DatabaseErrorKind, classify, dialect_for

if TYPE_CHECKING:
    from tests.cluster_harness import PrivateServer

pytest_plugins = ["tests.cluster_harness"]

Kind = DatabaseErrorKind
EngineFor = Callable[[DatabaseUrl], sa.Engine]


def raised(engine: sa.Engine, *statements: str) -> sa.exc.DBAPIError:
    """The error the last of `statements` raises (the others must succeed), in one transaction."""
    with engine.connect() as conn:
        for statement in statements[:-1]:
            conn.exec_driver_sql(statement)
        with pytest.raises(sa.exc.DBAPIError) as caught:
            conn.exec_driver_sql(statements[-1])
        conn.rollback()
    return caught.value


def kinds(engine: sa.Engine, exc: sa.exc.DBAPIError) -> tuple[Kind | None, Kind | None]:
    """What the engine's own dialect and the dialects together make of `exc`."""
    return dialect_for(engine).classify(exc), classify(exc)


def with_rows(engine: sa.Engine) -> sa.Engine:
    """`engine`, its database given a table t of two rows, ids 1 and 2."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        conn.exec_driver_sql("INSERT INTO t (id, v) VALUES (1, 0), (2, 0)")
    return engine


@attrs.frozen
class ServerSql:
    """The statements a server database's tests need, in its own SQL."""

    fixture: str  # the fixture giving a fresh database's URL
    short_lock_wait: str  # wait 1 s for a row lock
    long_lock_wait: str  # wait 10 s for a row lock
    session_id: str
    kill: str  # ends the session {id} from another one


SERVERS = {
    "mysql": ServerSql(
        "mysql_url",
        "SET SESSION innodb_lock_wait_timeout = 1",
        "SET SESSION innodb_lock_wait_timeout = 10",
        "SELECT CONNECTION_ID()",
        "KILL CONNECTION {id}",
    ),
    "postgresql": ServerSql(
        "postgresql_url",
        "SET lock_timeout = '1s'",
        "SET lock_timeout = '10s'",
        "SELECT pg_backend_pid()",
        "SELECT pg_terminate_backend({id})",
    ),
}


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> ServerSql:
    return SERVERS[request.param]


@pytest.fixture
def server_engine(
    server: ServerSql, request: pytest.FixtureRequest, engine_for: EngineFor
) -> sa.Engine:
    """A fresh database on each server database, with table t."""
    url: DatabaseUrl = request.getfixturevalue(server.fixture)
    return with_rows(engine_for(url))


@pytest.fixture
def engine(every_url: DatabaseUrl, engine_for: EngineFor) -> sa.Engine:
    return with_rows(engine_for(every_url))


def test_a_duplicate_key(engine: sa.Engine) -> None:
    exc = raised(engine, "INSERT INTO t (id, v) VALUES (1, 5)")
    assert kinds(engine, exc) == (Kind.DUPLICATE_KEY, Kind.DUPLICATE_KEY)
    assert not is_conflict(exc)


def test_a_missing_table(engine: sa.Engine) -> None:
    exc = raised(engine, "SELECT * FROM no_such_table")
    assert kinds(engine, exc) == (Kind.MISSING_TABLE, Kind.MISSING_TABLE)


def test_an_error_of_no_kind_we_tell_apart(engine: sa.Engine) -> None:
    exc = raised(engine, "SELECT * FROM t WHERE")
    assert kinds(engine, exc) == (None, None)
    assert dialect_for(engine).classify(ValueError("not a database error")) is None


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("mysql_url", "sqlite_url"),
        ("mysql_url", "postgresql_url"),
        ("postgresql_url", "sqlite_url"),
    ],
)
def test_each_dialect_reads_only_its_own_drivers_errors(
    one: str, other: str, request: pytest.FixtureRequest, engine_for: EngineFor
) -> None:
    on_one = engine_for(request.getfixturevalue(one))
    on_other = engine_for(request.getfixturevalue(other))
    one_error = raised(on_one, "SELECT * FROM no_such_table")
    other_error = raised(on_other, "SELECT * FROM no_such_table")
    assert dialect_for(on_other).classify(one_error) is None
    assert dialect_for(on_one).classify(other_error) is None


def test_a_lock_wait_timeout_is_a_conflict(server: ServerSql, server_engine: sa.Engine) -> None:
    engine = server_engine
    with engine.connect() as holder:
        holder.exec_driver_sql("SELECT v FROM t WHERE id = 1 FOR UPDATE")
        exc = raised(engine, server.short_lock_wait, "UPDATE t SET v = 1 WHERE id = 1")
        holder.rollback()
    assert kinds(engine, exc) == (Kind.LOCK_TIMEOUT, Kind.LOCK_TIMEOUT)
    assert is_conflict(exc)


def test_a_deadlock_is_a_conflict(server: ServerSql, server_engine: sa.Engine) -> None:
    engine = server_engine
    errors: list[BaseException] = []
    both_hold_one = threading.Barrier(2, timeout=10)

    def lock(first: int, second: int) -> None:
        # Each takes one row, then wants the other's: the server rolls one of them back.
        with engine.connect() as conn:
            conn.exec_driver_sql(server.long_lock_wait)
            conn.exec_driver_sql(f"UPDATE t SET v = 1 WHERE id = {first}")
            both_hold_one.wait()
            try:
                conn.exec_driver_sql(f"UPDATE t SET v = 1 WHERE id = {second}")
            except sa.exc.DBAPIError as exc:
                errors.append(exc)
            conn.rollback()

    threads = [threading.Thread(target=lock, args=pair) for pair in ((1, 2), (2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [exc] = errors
    assert isinstance(exc, sa.exc.DBAPIError)
    assert kinds(engine, exc) == (Kind.DEADLOCK, Kind.DEADLOCK)
    assert is_conflict(exc)


def test_a_killed_session_is_a_lost_connection(server: ServerSql, server_engine: sa.Engine) -> None:
    engine = server_engine
    with engine.connect() as victim:
        session = victim.exec_driver_sql(server.session_id).scalar_one()
        with engine.connect() as killer:
            killer.exec_driver_sql(server.kill.format(id=int(session)))
        with pytest.raises(sa.exc.DBAPIError) as caught:
            victim.exec_driver_sql("SELECT 1")
    assert kinds(engine, caught.value) == (Kind.LOST_CONNECTION, Kind.LOST_CONNECTION)
    assert not is_conflict(caught.value)


def test_a_postgresql_serialization_failure_is_a_conflict(
    postgresql_url: DatabaseUrl, engine_for: EngineFor
) -> None:
    engine = with_rows(engine_for(postgresql_url))
    serializable = engine.execution_options(isolation_level="SERIALIZABLE")
    with serializable.connect() as first, serializable.connect() as second:
        # Both read row 1 in their snapshots; the second writer after the first commits fails.
        first.exec_driver_sql("SELECT v FROM t WHERE id = 1")
        second.exec_driver_sql("SELECT v FROM t WHERE id = 1")
        first.exec_driver_sql("UPDATE t SET v = 1 WHERE id = 1")
        first.commit()
        with pytest.raises(sa.exc.DBAPIError) as caught:
            second.exec_driver_sql("UPDATE t SET v = 2 WHERE id = 1")
        second.rollback()
    assert kinds(engine, caught.value) == (Kind.SERIALIZATION_FAILURE, Kind.SERIALIZATION_FAILURE)
    assert is_conflict(caught.value)


@pytest.mark.parametrize("cluster_database", ["mariadb", "postgresql"], indirect=True)
def test_a_server_shut_down_is_a_lost_connection(
    private_server: PrivateServer, engine_for: EngineFor
) -> None:
    # The server of the test's own: the session it had fails, and so does a new connection.
    engine = engine_for(private_server.create_database("gone"))
    with engine.connect() as session:
        session.exec_driver_sql("SELECT 1")
        private_server.stop()
        with pytest.raises(sa.exc.DBAPIError) as broken:
            session.exec_driver_sql("SELECT 1")
    with pytest.raises(sa.exc.DBAPIError) as refused:
        engine.connect()
    for exc in (broken.value, refused.value):
        assert kinds(engine, exc) == (Kind.LOST_CONNECTION, Kind.LOST_CONNECTION), exc
        assert not is_conflict(exc)


def test_a_sqlite_write_lock_held_too_long_is_a_conflict(
    sqlite_url: DatabaseUrl, engine_for: EngineFor
) -> None:
    engine = with_rows(engine_for(sqlite_url))
    path = sqlite_url.sqlalchemy_url.database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        with engine.connect() as conn:
            # Wait 50 ms for it instead of the dialect's 30 s.
            raw = conn.connection.dbapi_connection
            assert raw is not None
            raw.cursor().execute("PRAGMA busy_timeout = 50")
            with pytest.raises(sa.exc.DBAPIError) as caught:
                conn.exec_driver_sql("INSERT INTO t (id, v) VALUES (3, 0)")
            conn.invalidate()  # not back to the pool with the short timeout
    finally:
        holder.rollback()
        holder.close()
    assert kinds(engine, caught.value) == (Kind.LOCK_TIMEOUT, Kind.LOCK_TIMEOUT)
    assert is_conflict(caught.value)
