"""Connecting to the database: engines, and a clear error when it is not there."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, OperationalError

from infsched.dburl import DatabaseUrl
from infsched.dialects import dialect_for
from infsched.errors import DatabaseUnreachableError
from infsched.mysql_decoders import conversions


def create_engine(url: DatabaseUrl, *, pool_size: int = 10, **kwargs: Any) -> sa.Engine:
    """An Engine for `url`, set up the way the scheduler needs it.

    MySQL sessions run in UTC with READ COMMITTED: claims with SKIP LOCKED
    then take no gap locks, and DATETIME values are read as the UTC they hold.
    """
    if url.is_sqlite:
        engine = sa.create_engine(url.sqlalchemy_url, **kwargs)
        # Transactions that hold the write lock from their start: dialects/sqlite.py.
        dialect_for(engine).configure_engine(engine)
        return engine
    connect_args: dict[str, Any] = {
        # UTC sessions; and room for a fetch batch's ids in one JSON_ARRAYAGG, which
        # MariaDB cuts at group_concat_max_len (1 MB by default).
        "init_command": "SET time_zone = '+00:00', group_concat_max_len = 67108864",
        "connect_timeout": 10,
        "conv": conversions(),
    }
    connect_args.update(kwargs.pop("connect_args", {}))
    return sa.create_engine(
        url.sqlalchemy_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=3600,
        isolation_level="READ COMMITTED",
        connect_args=connect_args,
        **kwargs,
    )


def same_database(a: sa.Engine, b: sa.Engine) -> bool:
    """Whether two engines reach one database, so one transaction can span both's tables."""
    return a is b or a.url == b.url


def check_reachable(engine: sa.Engine, url: DatabaseUrl, *, existing: bool = False) -> None:
    """Open one connection or raise DatabaseUnreachableError naming where (never the password).

    `existing`: the database must be there already; a read-only command passes
    it so that connecting creates nothing (SQLite would create a missing file).
    """
    if existing:
        missing = dialect_for(engine).missing_database(engine.url)
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


def probe(url: DatabaseUrl) -> None:
    """Connect to `url` once and let go: DatabaseUnreachableError when that fails."""
    engine = create_engine(url, pool_size=1)
    try:
        check_reachable(engine, url)
    finally:
        engine.dispose()
