"""Each dialect reads its own database's real errors: deadlock, lock timeout, duplicate key,
missing table, lost connection; and leaves other databases' errors alone."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from infsched.cluster.outage import is_conflict
from infsched.dburl import DatabaseUrl
from infsched.dialects import DatabaseErrorKind, classify, dialect_for

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


@pytest.fixture
def engine(any_url: DatabaseUrl, engine_for: EngineFor) -> sa.Engine:
    return with_rows(engine_for(any_url))


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


def test_each_dialect_reads_only_its_own_drivers_errors(
    mysql_url: DatabaseUrl, sqlite_url: DatabaseUrl, engine_for: EngineFor
) -> None:
    on_mysql, on_sqlite = engine_for(mysql_url), engine_for(sqlite_url)
    mysql_error = raised(on_mysql, "SELECT * FROM no_such_table")
    sqlite_error = raised(on_sqlite, "SELECT * FROM no_such_table")
    assert dialect_for(on_sqlite).classify(mysql_error) is None
    assert dialect_for(on_mysql).classify(sqlite_error) is None


def test_a_mysql_lock_wait_timeout_is_a_conflict(
    mysql_url: DatabaseUrl, engine_for: EngineFor
) -> None:
    engine = with_rows(engine_for(mysql_url))
    with engine.connect() as holder:
        holder.exec_driver_sql("SELECT v FROM t WHERE id = 1 FOR UPDATE")
        exc = raised(
            engine,
            "SET SESSION innodb_lock_wait_timeout = 1",
            "UPDATE t SET v = 1 WHERE id = 1",
        )
        holder.rollback()
    assert kinds(engine, exc) == (Kind.LOCK_TIMEOUT, Kind.LOCK_TIMEOUT)
    assert is_conflict(exc)


def test_a_mysql_deadlock_is_a_conflict(mysql_url: DatabaseUrl, engine_for: EngineFor) -> None:
    engine = with_rows(engine_for(mysql_url))
    errors: list[BaseException] = []
    both_hold_one = threading.Barrier(2, timeout=10)

    def lock(first: int, second: int) -> None:
        # Each takes one row, then wants the other's: InnoDB rolls one of them back.
        with engine.connect() as conn:
            conn.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 10")
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


def test_a_killed_mysql_session_is_a_lost_connection(
    mysql_url: DatabaseUrl, engine_for: EngineFor
) -> None:
    engine = engine_for(mysql_url)
    with engine.connect() as victim:
        session = victim.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
        with engine.connect() as killer:
            killer.exec_driver_sql(f"KILL CONNECTION {int(session)}")
        with pytest.raises(sa.exc.DBAPIError) as caught:
            victim.exec_driver_sql("SELECT 1")
    assert kinds(engine, caught.value) == (Kind.LOST_CONNECTION, Kind.LOST_CONNECTION)
    assert not is_conflict(caught.value)


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
