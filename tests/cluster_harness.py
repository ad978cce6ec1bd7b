"""Fixtures for the cluster tests: real ``infsched run`` node processes on MariaDB and PostgreSQL.

`cluster_factory` builds `infsched_bench.harness.Cluster` objects on fresh
throwaway databases (the probe plugin installed for their node processes);
every node still running when the test ends is killed.  The database is
`cluster_database`'s: MariaDB unless a test parametrizes it (indirectly) with
"postgresql".  PostgreSQL clusters run on a server of the session's own
(`session_postgresql`): three nodes with their probes open tens of
connections, and the shared server's 100 are shared by every test running.

`private_server` is a server of the test's own (its own data directory and
port), MariaDB or PostgreSQL as `cluster_database` says, that a test may shut
down and start again: stopping the shared server would break every other test
running at the same moment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pymysql
import pytest
import sqlalchemy as sa

from infsched.database import create_engine
from infsched.dburl import DatabaseUrl
from infsched.dialects import registered_dialect
from infsched_bench.harness import Cluster

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
ADMIN = shutil.which("mariadb-admin") or "/usr/bin/mariadb-admin"
POSTGRESQL_BIN = Path(os.environ.get("INFSCHED_TEST_POSTGRESQL_BIN", "/usr/lib/postgresql/15/bin"))
#: The OS user that runs a private PostgreSQL when the tests run as root (initdb refuses root).
POSTGRESQL_OS_USER = "postgres"

ClusterFactory = Callable[..., Cluster]

#: The databases a cluster test runs on (`cluster_database`'s values).
MARIADB = "mariadb"
POSTGRESQL = "postgresql"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateServer(Protocol):
    """A database server of the test's own, to stop and start at will."""

    def create_database(self, name: str) -> DatabaseUrl: ...

    def start(self, timeout: float = 60.0) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class PrivateMariaDB:
    """A MariaDB server in a directory of its own, to stop and start at will."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.datadir = base / "data"
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        for tool in (MARIADBD, INSTALL_DB, ADMIN):
            if not Path(tool).exists():
                pytest.fail(f"{tool} is needed for the database outage test (MariaDB server)")
        user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [
                INSTALL_DB,
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *user,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def url(self, database: str) -> DatabaseUrl:
        return DatabaseUrl(f"mysql+pymysql://root@127.0.0.1:{self.port}/{database}")

    def _connect(self) -> pymysql.Connection[Any]:
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=2)

    def answers(self) -> bool:
        try:
            self._connect().close()
        except pymysql.err.MySQLError:
            return False
        return True

    def start(self, timeout: float = 60.0) -> None:
        user = ["--user=root"] if os.geteuid() == 0 else []
        log = (self.base / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                MARIADBD,
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--socket={self.base / 'mysqld.sock'}",
                f"--pid-file={self.base / 'mysqld.pid'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                "--innodb-buffer-pool-size=64M",
                "--max-connections=500",
                "--skip-name-resolve",
                *user,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "the private MariaDB did not start:\n"
                    + (self.base / "server.log").read_text(errors="replace")[-3000:]
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Shut the server down the way an operator would, and wait until it is gone."""
        subprocess.run(
            [ADMIN, "--protocol=tcp", "-h127.0.0.1", f"-P{self.port}", "-uroot", "shutdown"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        if self.process is not None:
            self.process.wait(timeout=60)

    def create_database(self, name: str) -> DatabaseUrl:
        conn = self._connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        finally:
            conn.close()
        return self.url(name)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop()
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=30)


class PrivatePostgreSQL:
    """A PostgreSQL server in a directory of its own (initdb, pg_ctl), to stop and start at will.

    Trust authentication on 127.0.0.1 and a socket in its own directory.  initdb
    and the server refuse to run as root: as root they run as the ``postgres``
    OS user, in a temporary directory that user owns (not under pytest's
    tmp_path, which only root may enter); `close` stops the server by its data
    directory and removes that directory.
    """

    def __init__(self, max_connections: int = 300) -> None:
        for tool in ("initdb", "pg_ctl"):
            if not (POSTGRESQL_BIN / tool).exists():
                pytest.fail(f"{POSTGRESQL_BIN / tool} is needed for a private PostgreSQL server")
        self.base = Path(tempfile.mkdtemp(prefix="infsched-pg-"))
        self.datadir = self.base / "data"
        self.log = self.base / "server.log"
        self.port = _free_port()
        self.max_connections = max_connections
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.base, POSTGRESQL_OS_USER, POSTGRESQL_OS_USER)
            self._as_user = ["runuser", "-u", POSTGRESQL_OS_USER, "--"]
        self._started = False
        try:
            self._run(
                "initdb",
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                timeout=120,
            )
        except BaseException:
            shutil.rmtree(self.base, ignore_errors=True)
            raise
        self._admin: sa.Engine | None = None

    def _run(self, tool: str, *args: str, timeout: float) -> None:
        result = subprocess.run(
            [*self._as_user, str(POSTGRESQL_BIN / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.base,
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise AssertionError(f"{tool} failed: {result.stdout}{result.stderr}\n{log}")

    def url(self, database: str) -> DatabaseUrl:
        return DatabaseUrl(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}")

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs (postmaster.pid's first line)."""
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self, timeout: float = 60.0) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            f"-c max_connections={self.max_connections} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        self._started = True
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 10,
        )

    def stop(self) -> None:
        """Shut the server down the way an operator would (fast: sessions end), and wait."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop", timeout=70)

    def create_database(self, name: str) -> DatabaseUrl:
        if self._admin is None:
            # CREATE DATABASE cannot run inside a transaction.
            self._admin = create_engine(self.url("postgres"), pool_size=1).execution_options(
                isolation_level="AUTOCOMMIT"
            )
        registered_dialect("postgresql").create_database(self._admin, name)
        return self.url(name)

    def close(self) -> None:
        if self._admin is not None:
            self._admin.dispose()
        try:
            if self._started and self.pid is not None:
                with contextlib.suppress(AssertionError, subprocess.SubprocessError):
                    self.stop()
                pid = self.pid
                if pid is not None:  # pg_ctl could not stop it: this server's own pid
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, 9)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def session_postgresql() -> Iterator[PrivatePostgreSQL]:
    """A private PostgreSQL server for the session's PostgreSQL clusters (not stopped midway)."""
    server = PrivatePostgreSQL()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def cluster_database(request: pytest.FixtureRequest) -> str:
    """The database a cluster test runs on: MariaDB, or what the test parametrizes."""
    return str(getattr(request, "param", MARIADB))


@pytest.fixture
def database_factory(
    cluster_database: str, request: pytest.FixtureRequest
) -> Callable[[], DatabaseUrl]:
    """Fresh throwaway databases on `cluster_database`'s server."""
    if cluster_database == MARIADB:
        factory: Callable[[], DatabaseUrl] = request.getfixturevalue("mysql_database_factory")
        return factory
    server: PrivatePostgreSQL = request.getfixturevalue("session_postgresql")
    return lambda: server.create_database(f"cluster_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def cluster_factory(
    database_factory: Callable[[], DatabaseUrl], tmp_path: Path
) -> Iterator[ClusterFactory]:
    made: list[Cluster] = []

    def make(url: DatabaseUrl | None = None, **kwargs: Any) -> Cluster:
        workdir = tmp_path / f"cluster{len(made)}"
        workdir.mkdir()
        cluster = Cluster(url or database_factory(), workdir, **kwargs)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


@pytest.fixture
def private_server(
    cluster_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrivateServer]:
    """A server of the test's own on `cluster_database`, started; stopped and removed after."""
    server: PrivateServer
    if cluster_database == MARIADB:
        server = PrivateMariaDB(tmp_path_factory.mktemp("mariadb"))
    else:
        server = PrivatePostgreSQL()
    try:
        server.start()
        yield server
    finally:
        server.close()
