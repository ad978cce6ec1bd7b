"""Connecting to the database: the `Database` handle, engines, a clear error when it is away.

The handle is made once, where a node or a command connects (`open_database`),
and handed to every component: none of them derives the dialect or the
clock from an engine again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, OperationalError

from infsched.clock import Clock, SystemClock
from infsched.dbtime import DatabaseClock, database_now
from infsched.dburl import DatabaseUrl
from infsched.dialects import Dialect, dialect_for, registered_dialect
from infsched.errors import DatabaseUnreachableError
from infsched.member_route import MemberRoute


@attrs.frozen
class Database:
    """One database as the components use it: its engine, its dialect and its clock.

    `clock` is the node's clock, corrected by its measured offset from the
    database's (a `DatabaseClock`) where the database has a clock of its own.
    """

    engine: sa.Engine
    dialect: Dialect
    clock: Clock

    def now(self, conn: sa.Connection) -> datetime:
        """The database's current UTC time on `conn`; `clock`'s where it has no clock."""
        return database_now(conn, self.dialect, self.clock)

    def dispose(self) -> None:
        self.engine.dispose()


def _clock(dialect: Dialect, clock: Clock | None) -> Clock:
    base = clock or SystemClock()
    if dialect.current_timestamp() is None:
        return base  # SQLite serves one node, whose clock is the only one
    return base if isinstance(base, DatabaseClock) else DatabaseClock(base, dialect)


def open_database(
    url: DatabaseUrl, *, clock: Clock | None = None, pool_size: int = 10, **kwargs: Any
) -> Database:
    """Connect to `url` (lazily, as SQLAlchemy does): the handle every component is given.

    `clock` is the node's clock (the system's by default).
    """
    dialect = registered_dialect(url.scheme.dialect)
    engine = _engine(url, dialect, pool_size, kwargs)
    return Database(engine, dialect, _clock(dialect, clock))


def database_of(engine: sa.Engine, clock: Clock | None = None) -> Database:
    """The handle of an engine a caller made itself (an embedding application, a test)."""
    dialect = dialect_for(engine)
    return Database(engine, dialect, _clock(dialect, clock))


def create_engine(url: DatabaseUrl, *, pool_size: int = 10, **kwargs: Any) -> sa.Engine:
    """An Engine for `url`, set up the way the scheduler needs it (`Dialect.engine_options`)."""
    return _engine(url, registered_dialect(url.scheme.dialect), pool_size, kwargs)


def _engine(
    url: DatabaseUrl, dialect: Dialect, pool_size: int, kwargs: dict[str, Any]
) -> sa.Engine:
    defaults = dialect.engine_options(pool_size)
    options = {**defaults, **kwargs}
    connect_args = {**defaults.get("connect_args", {}), **kwargs.get("connect_args", {})}
    if connect_args:
        options["connect_args"] = connect_args
    engine = sa.create_engine(url.sqlalchemy_url, **options)
    dialect.configure_engine(engine)
    if url.endpoints:
        MemberRoute(url, dialect).install(engine)
    return engine


def same_database(a: sa.Engine, b: sa.Engine) -> bool:
    """Whether two engines reach one database, so one transaction can span both's tables."""
    return a is b or a.url == b.url


def check_reachable(engine: sa.Engine, url: DatabaseUrl, *, existing: bool = False) -> None:
    """Open one connection or raise DatabaseUnreachableError naming where (never the password).

    `existing`: the database must be there already; a read-only command passes
    it so that connecting creates nothing (SQLite would create a missing file).
    """
    if existing:
        missing = registered_dialect(url.scheme.dialect).missing_database(engine.url)
        if missing is not None:
            raise DatabaseUnreachableError(_cannot_connect(url, missing))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except (OperationalError, DBAPIError) as exc:
        reason = str(exc.orig) if exc.orig is not None else type(exc).__name__
        password = url.sqlalchemy_url.password
        if password:
            reason = reason.replace(str(password), "***")
        raise DatabaseUnreachableError(_cannot_connect(url, reason)) from None


def _cannot_connect(url: DatabaseUrl, reason: str) -> str:
    return f"cannot connect to the database at {url.where} ({url}): {reason}"


def check_each_reachable(
    engines: Iterable[tuple[sa.Engine, DatabaseUrl]], *, existing: bool = False
) -> None:
    """`check_reachable` once per distinct engine, before anything starts on any of them."""
    checked: set[int] = set()
    for engine, url in engines:
        if id(engine) not in checked:
            checked.add(id(engine))
            check_reachable(engine, url, existing=existing)


def connect_once(url: DatabaseUrl) -> None:
    """Connect to `url` once and let go: DatabaseUnreachableError when that fails."""
    engine = create_engine(url, pool_size=1)
    try:
        check_reachable(engine, url)
    finally:
        engine.dispose()
