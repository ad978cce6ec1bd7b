"""Fixtures for the cluster tests: real ``infsched run`` node processes on MariaDB.

`cluster_factory` builds `infsched_bench.harness.Cluster` objects on fresh
throwaway databases (the probe plugin installed for their node processes);
every node still running when the test ends is killed.

`private_mariadb` is a MariaDB server of the test's own (its own data
directory and port) that a test may shut down and start again: stopping the
shared server would break every other test running at the same moment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from infsched.dburl import DatabaseUrl
from infsched_bench.harness import Cluster

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
ADMIN = shutil.which("mariadb-admin") or "/usr/bin/mariadb-admin"

ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def cluster_factory(
    mysql_database_factory: Callable[[], DatabaseUrl], tmp_path: Path
) -> Iterator[ClusterFactory]:
    made: list[Cluster] = []

    def make(url: DatabaseUrl | None = None, **kwargs: Any) -> Cluster:
        workdir = tmp_path / f"cluster{len(made)}"
        workdir.mkdir()
        cluster = Cluster(url or mysql_database_factory(), workdir, **kwargs)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@pytest.fixture
def private_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariaDB]:
    server = PrivateMariaDB(tmp_path_factory.mktemp("mariadb"))
    server.start()
    yield server
    server.close()
