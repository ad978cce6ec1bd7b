"""A real MariaDB Galera Cluster on loopback, of the caller's own: started, killed, stopped.

Each member has its own directory (data, socket, pid file, error log, the
option file it runs with) and its own four ports: SQL, group communication,
IST and SST.  The first member bootstraps the cluster (``--wsrep-new-cluster``)
and the others join it by state transfer (rsync).  A member is ready when its
``wsrep_local_state_comment`` is ``Synced`` and it sees the whole cluster.

The cluster never touches another server: `close` stops only the processes it
started, by their pids, and removes its directory.  The tests start one for
the Galera cases; ``infsched bench --stage galera`` starts one beside the
single server it compares it with.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pymysql

from infsched.errors import InfschedError

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
PROVIDER = Path("/usr/lib/galera/libgalera_smm.so")
#: What a Galera cluster needs from Debian: the server, the provider, rsync for state transfer.
PACKAGES = ("mariadb-server", "galera-4", "rsync")
#: The OS user members run as when the caller is root: rsync's state transfer, started as
#: root, would drop to ``nobody`` and could not write the joiner's data directory.
OS_USER = "mysql"


class GaleraUnavailableError(InfschedError, RuntimeError):
    """This machine lacks what a Galera cluster needs (`PACKAGES`), or a member did not start."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing_tools() -> list[str]:
    """The programs and files a cluster needs that this machine lacks."""
    needed = [Path(MARIADBD), Path(INSTALL_DB), PROVIDER]
    missing = [str(path) for path in needed if not path.exists()]
    if shutil.which("rsync") is None:
        missing.append("rsync")
    return missing


@attrs.frozen
class MemberPorts:
    sql: int
    group: int
    ist: int
    sst: int


@attrs.define
class Member:
    """One mariadbd of the cluster."""

    name: str
    base: Path
    ports: MemberPorts
    process: subprocess.Popen[bytes] | None = None

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def option_file(self) -> Path:
        return self.base / "my.cnf"

    @property
    def log(self) -> Path:
        return self.base / "error.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def url(self, database: str) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.ports.sql}/{database}"

    def connect(self, database: str | None = None, timeout: float = 2.0) -> Any:
        return pymysql.connect(
            host="127.0.0.1",
            port=self.ports.sql,
            user="root",
            database=database,
            connect_timeout=int(max(1, timeout)),
            read_timeout=int(max(1, timeout * 5)),
        )

    def status(self) -> dict[str, str]:
        """This member's ``wsrep_%`` status variables."""
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute("SHOW GLOBAL STATUS LIKE 'wsrep_%'")
                return {str(k): str(v) for k, v in cursor.fetchall()}
        finally:
            conn.close()

    def synced(self, size: int) -> bool:
        try:
            status = self.status()
        except pymysql.err.MySQLError:
            return False
        return (
            status.get("wsrep_local_state_comment") == "Synced"
            and status.get("wsrep_cluster_status") == "Primary"
            and int(status.get("wsrep_cluster_size", "0")) == size
        )

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def server_options(member: Member) -> dict[str, object]:
    """The ``[mysqld]`` options of one server in `member`'s directory, replication aside:
    small enough that three fit this machine (24 GiB, 2 cores) beside the shared one."""
    return {
        "datadir": member.datadir,
        "socket": member.base / "mysqld.sock",
        "pid-file": member.base / "mysqld.pid",
        "log-error": member.log,
        "port": member.ports.sql,
        "bind-address": "127.0.0.1",
        "skip-name-resolve": "ON",
        "max_connections": 500,
        "binlog_format": "ROW",
        "default_storage_engine": "InnoDB",
        "innodb_autoinc_lock_mode": 2,
        "innodb_buffer_pool_size": "128M",
        "innodb_log_file_size": "48M",
        "innodb_flush_log_at_trx_commit": 2,
        "performance_schema": "OFF",
    }


class GaleraCluster:
    """A Galera cluster of `size` members on loopback, in a temporary directory of its own."""

    def __init__(self, size: int = 3, *, name: str = "infsched", base: Path | None = None) -> None:
        missing = missing_tools()
        if missing:
            raise GaleraUnavailableError(
                f"a Galera cluster needs {', '.join(missing)} "
                f"(Debian packages {' '.join(PACKAGES)}; `make test` installs them)"
            )
        self.name = name
        self._own_base = base is None
        self.base = base or Path(tempfile.mkdtemp(prefix="infsched-galera-"))
        self.members = [
            Member(
                f"m{i + 1}",
                self.base / f"m{i + 1}",
                MemberPorts(_free_port(), _free_port(), _free_port(), _free_port()),
            )
            for i in range(size)
        ]
        for member in self.members:
            member.base.mkdir(parents=True, exist_ok=True)
            member.option_file.write_text(self._options(member))
        if os.geteuid() == 0:
            self.base.chmod(0o755)  # mkdtemp's 0700 would keep the members' user out
            for path in [self.base, *self.base.rglob("*")]:
                shutil.chown(path, OS_USER, OS_USER)

    @property
    def size(self) -> int:
        return len(self.members)

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def _options(self, member: Member) -> str:
        lines = {**server_options(member), **self._replication(member)}
        body = "\n".join(f"{key}={value}" for key, value in lines.items())
        return f"[mysqld]\n{body}\n"

    def _replication(self, member: Member) -> dict[str, object]:
        cluster = ",".join(f"127.0.0.1:{m.ports.group}" for m in self.members)
        provider_options = ";".join(
            [
                f"gmcast.listen_addr=tcp://127.0.0.1:{member.ports.group}",
                f"ist.recv_addr=127.0.0.1:{member.ports.ist}",
                "gcache.size=32M",
                # A SIGKILLed member is declared gone after this (5 s by default), so the
                # rest re-form a primary component quickly.
                "evs.suspect_timeout=PT3S",
                "evs.inactive_timeout=PT6S",
            ]
        )
        return {
            "wsrep_on": "ON",
            "wsrep_provider": PROVIDER,
            "wsrep_cluster_name": self.name,
            "wsrep_cluster_address": f"gcomm://{cluster}",
            "wsrep_node_address": f"127.0.0.1:{member.ports.group}",
            "wsrep_node_name": member.name,
            "wsrep_provider_options": f'"{provider_options}"',
            "wsrep_sst_receive_address": f"127.0.0.1:{member.ports.sst}",
            "wsrep_sst_method": "rsync",
            "wsrep_slave_threads": 2,
        }

    def _install(self, member: Member) -> None:
        if (member.datadir / "mysql").exists():
            return
        user = [f"--user={OS_USER}"] if os.geteuid() == 0 else []
        result = subprocess.run(
            [
                INSTALL_DB,
                f"--defaults-file={member.option_file}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                # wsrep off while installing: the system tables are made locally.
                "--wsrep-on=OFF",
                *user,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if result.returncode != 0:
            raise GaleraUnavailableError(
                f"mariadb-install-db failed for {member.name}: {result.stdout}{result.stderr}"
            )

    def start_member(self, name: str, *, bootstrap: bool = False, timeout: float = 120.0) -> None:
        """Start member `name` and wait until it is synced with the members running."""
        member = self.member(name)
        assert not member.running, f"{name} runs already"
        self._install(member)
        user = [f"--user={OS_USER}"] if os.geteuid() == 0 else []
        new_cluster = ["--wsrep-new-cluster"] if bootstrap else []
        with member.log.open("ab") as log:
            # A session of its own: a signal to the caller's process group leaves it alone.
            member.process = subprocess.Popen(
                [MARIADBD, f"--defaults-file={member.option_file}", *user, *new_cluster],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        size = sum(1 for m in self.members if m.running)
        self._wait(member, size, timeout)

    def _ready(self, member: Member, size: int) -> bool:
        return member.synced(size)

    def _wait(self, member: Member, size: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready(member, size):
            if not member.running or time.monotonic() > deadline:
                raise GaleraUnavailableError(
                    f"MariaDB {member.name} did not get ready (a cluster of {size}):\n"
                    + member.log_tail()
                )
            time.sleep(0.2)

    def start(self, timeout: float = 120.0) -> None:
        """Bootstrap the first member, then join the others one at a time."""
        first, *rest = self.members
        self.start_member(first.name, bootstrap=True, timeout=timeout)
        for member in rest:
            self.start_member(member.name, timeout=timeout)

    def kill(self, name: str) -> None:
        """SIGKILL member `name`: a crash, with no shutdown of any kind."""
        member = self.member(name)
        if member.running:
            os.kill(member.pid, signal.SIGKILL)
            assert member.process is not None
            member.process.wait(timeout=30)

    def wait_size(self, size: int, timeout: float = 60.0) -> float:
        """Wait until every running member is synced in a cluster of `size`; seconds waited."""
        started = time.monotonic()
        for member in self.members:
            if member.running:
                self._wait(member, size, timeout - (time.monotonic() - started))
        return time.monotonic() - started

    def running(self) -> list[Member]:
        return [m for m in self.members if m.running]

    def urls(self, database: str, order: Sequence[str] | None = None) -> list[str]:
        """Every member's URL of `database`, in `order` of member names (default: m1, m2, …)."""
        members = [self.member(n) for n in order] if order else self.members
        return [m.url(database) for m in members]

    def create_database(self, name: str) -> None:
        """CREATE DATABASE on a running member (DDL replicates to all)."""
        conn = self.running()[0].connect(timeout=10)
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
        finally:
            conn.close()

    def stop_member(self, name: str, timeout: float = 60.0) -> None:
        member = self.member(name)
        if not member.running:
            return
        assert member.process is not None
        member.process.terminate()
        try:
            member.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            member.process.kill()
            member.process.wait(timeout=30)

    def close(self) -> None:
        """Stop every member this cluster started (by pid), then remove its directory."""
        for member in reversed(self.members):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self.stop_member(member.name)
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> GaleraCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StandaloneMariaDB(GaleraCluster):
    """One plain MariaDB server laid out as a member is, without replication.

    For comparisons on this machine: several independent primaries, each a
    database of its own (docs/scaling.md).  Its one member is ``primary``.
    """

    def __init__(self, *, base: Path | None = None) -> None:
        super().__init__(1, name="standalone", base=base)
        self.members[0].name = "primary"

    def _replication(self, member: Member) -> dict[str, object]:
        return {"wsrep_on": "OFF"}

    def _ready(self, member: Member, size: int) -> bool:
        try:
            member.connect().close()
        except pymysql.err.MySQLError:
            return False
        return True

    def start(self, timeout: float = 120.0) -> None:
        self.start_member("primary", timeout=timeout)
