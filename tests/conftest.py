"""Shared fixtures: throwaway MariaDB databases and SQLite files.

Every test session creates its own uniquely named MariaDB databases and
drops them at the end, so two runs (or two sessions at once) never see each
other's data.  Set INFSCHED_TEST_MYSQL_URL to use another server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from infsched.database import create_engine
from infsched.dburl import DatabaseUrl

MYSQL_SERVER_URL = os.environ.get(
    "INFSCHED_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql"
)

_RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def mysql_server() -> DatabaseUrl:
    """The MariaDB server; its admin database. Tests must not write here."""
    url = DatabaseUrl(MYSQL_SERVER_URL)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # pragma: no cover - the environment is broken
        pytest.fail(f"MariaDB at {url.where} is not reachable ({exc}); `make test` starts it")
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def mysql_database_factory(mysql_server: DatabaseUrl) -> Iterator[Callable[[], DatabaseUrl]]:
    """Creates uniquely named databases on demand; drops them all when the session ends."""
    created: list[str] = []
    admin = create_engine(mysql_server)

    def make() -> DatabaseUrl:
        name = f"infsched_t_{_RUN}_{os.getpid()}_{len(created)}"
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        created.append(name)
        return mysql_server.with_database(name)

    yield make
    with admin.begin() as conn:
        for name in created:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


@pytest.fixture
def mysql_url(mysql_database_factory: Callable[[], DatabaseUrl]) -> DatabaseUrl:
    """A fresh, empty MariaDB database for one test."""
    return mysql_database_factory()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> DatabaseUrl:
    """A fresh SQLite file for one test."""
    return DatabaseUrl(f"sqlite:///{tmp_path / 'infsched.db'}")


@pytest.fixture(params=["mysql", "sqlite"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseUrl:
    """Each test using this runs once on MariaDB and once on SQLite."""
    if request.param == "mysql":
        factory: Callable[[], DatabaseUrl] = request.getfixturevalue("mysql_database_factory")
        return factory()
    return DatabaseUrl(f"sqlite:///{tmp_path / 'infsched.db'}")


@pytest.fixture
def engine_for() -> Iterator[Callable[[DatabaseUrl], sa.Engine]]:
    """Engines for URLs, disposed after the test."""
    engines: list[sa.Engine] = []

    def make(url: DatabaseUrl) -> sa.Engine:
        engine = create_engine(url)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()
