"""Shared fixtures: throwaway MariaDB and PostgreSQL databases and SQLite files.

Every test session creates its own uniquely named MariaDB and PostgreSQL
databases and drops them at the end, so two runs (or two sessions at once)
never see each other's data.  Set INFSCHED_TEST_MYSQL_URL or
INFSCHED_TEST_POSTGRESQL_URL to use another server.
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
POSTGRESQL_SERVER_URL = os.environ.get(
    "INFSCHED_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
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


@pytest.fixture(scope="session")
def postgresql_database_factory() -> Iterator[Callable[[], DatabaseUrl]]:
    """Creates uniquely named PostgreSQL databases on demand; drops them all at the end."""
    server = DatabaseUrl(POSTGRESQL_SERVER_URL)
    # CREATE DATABASE cannot run inside a transaction.
    admin = create_engine(server).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # pragma: no cover - the environment is broken
        pytest.fail(f"PostgreSQL at {server.where} is not reachable ({exc}); `make test` starts it")
    created: list[str] = []

    def make() -> DatabaseUrl:
        name = f"infsched_t_{_RUN}_{os.getpid()}_{len(created)}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return server.with_database(name)

    yield make
    with admin.connect() as conn:
        for name in created:
            # FORCE: a test's engine that was not disposed must not keep its database.
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.engine.dispose()


@pytest.fixture
def postgresql_url(postgresql_database_factory: Callable[[], DatabaseUrl]) -> DatabaseUrl:
    """A fresh, empty PostgreSQL database for one test."""
    return postgresql_database_factory()


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


@pytest.fixture(params=["mysql", "postgresql", "sqlite"])
def every_url(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseUrl:
    """Each test using this runs on MariaDB, PostgreSQL and SQLite.

    The suites that work on PostgreSQL use it; those that do not yet keep `any_url`.
    """
    if request.param == "sqlite":
        return DatabaseUrl(f"sqlite:///{tmp_path / 'infsched.db'}")
    factory: Callable[[], DatabaseUrl] = request.getfixturevalue(
        f"{request.param}_database_factory"
    )
    return factory()


@pytest.fixture(params=["mysql", "postgresql"])
def server_url(request: pytest.FixtureRequest) -> DatabaseUrl:
    """Each test using this runs on MariaDB and on PostgreSQL: the databases with row locks."""
    factory: Callable[[], DatabaseUrl] = request.getfixturevalue(
        f"{request.param}_database_factory"
    )
    return factory()


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
