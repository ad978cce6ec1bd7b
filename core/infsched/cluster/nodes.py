"""The nodes table: who is running, their heartbeats, and whether they look alive.

Each node keeps one row in ``infsched_nodes`` (node id, host, pid, version,
start time, last heartbeat, jobs in flight, running/stopping/stopped, the
database member its heartbeat went through) and beats every heartbeat_interval.
Whether a node is alive is judged against the database's clock, never a node's own:

- alive: its last heartbeat is at most two intervals old;
- suspected: it has missed two heartbeats;
- dead: it has been silent longer than job_lease, so its job leases have
  expired and other nodes run its unfinished jobs;
- stopped: it stopped cleanly.

A node id is one process at a time.  A node that starts with the id of a row
whose process still beats refuses to start; one whose previous process on
this host is gone takes the row (and that process's unfinished jobs) over.
"""

from __future__ import annotations

import enum
import os
import socket
from datetime import datetime, timedelta

import sqlalchemy as sa

from infsched.clock import from_utc_naive, utc_naive
from infsched.database import Database
from infsched.errors import InfschedError
from infsched.member_route import member_of
from infsched.schema import nodes
from infsched.version import __version__

#: Rows of nodes silent for longer than this are deleted when a node registers.
FORGET_AFTER = timedelta(days=1)


class NodeIdInUseError(InfschedError):
    """Another live process already runs under this node id."""


class NodeState(enum.Enum):
    ALIVE = "alive"
    SUSPECTED = "suspected"
    DEAD = "dead"
    STOPPED = "stopped"


def judge(phase: str, silent_for: float, heartbeat_interval: float, job_lease: float) -> NodeState:
    """A node's state from its last phase and how long it has been silent (database clock)."""
    if phase == "stopped":
        return NodeState.STOPPED
    if silent_for > job_lease:
        return NodeState.DEAD
    if silent_for > 2 * heartbeat_interval:
        return NodeState.SUSPECTED
    return NodeState.ALIVE


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NodeRegistry:
    """This node's row in ``infsched_nodes``: registration, heartbeats, phases."""

    def __init__(
        self,
        database: Database,
        node_id: str,
        *,
        heartbeat_interval: float,
        job_lease: float,
    ) -> None:
        #: Its clock is read only on SQLite (one node); MySQL/MariaDB reads its own.
        self.database = database
        self.engine = database.engine
        self.node_id = node_id
        self.heartbeat_interval = heartbeat_interval
        self.job_lease = job_lease
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._dialect = database.dialect
        self._create = self._dialect.insert_ignore(nodes, ["node_id"])

    def register(self, in_flight: int = 0) -> None:
        """Write this node's row as running; NodeIdInUseError if another process beats under it."""
        with self.engine.begin() as conn:
            now = self.database.now(conn)
            naive = utc_naive(now)
            # Rows another node holds locked are skipped: a node frozen in the middle of
            # its heartbeat's transaction kept this DELETE waiting until the lock wait
            # timed out, and the starting node exited (the stalled-node cluster test).
            forgotten = sa.select(nodes.c.node_id).where(
                nodes.c.heartbeat_at < naive - FORGET_AFTER
            )
            stale = conn.execute(self._dialect.lock_skipping_locked(forgotten)).scalars().all()
            if stale:
                conn.execute(nodes.delete().where(nodes.c.node_id.in_(stale)))
            row = conn.execute(
                sa.select(nodes).where(nodes.c.node_id == self.node_id).with_for_update()
            ).one_or_none()
            if row is not None:
                self._refuse_if_in_use(row, now)
            values = {
                "host": self.host,
                "pid": self.pid,
                "version": __version__,
                "started_at": naive,
                "heartbeat_at": naive,
                "in_flight": in_flight,
                "state": "running",
                "database_member": member_of(conn),
            }
            if row is None:
                conn.execute(self._create, [{"node_id": self.node_id, **values}])
            conn.execute(nodes.update().where(nodes.c.node_id == self.node_id).values(**values))

    def _refuse_if_in_use(self, row: sa.Row[tuple[object, ...]], now: datetime) -> None:
        mapping = row._mapping
        if mapping["state"] == "stopped":
            return
        silent = (now - from_utc_naive(mapping["heartbeat_at"])).total_seconds()
        if silent > self.job_lease:
            return
        same_process = mapping["host"] == self.host and mapping["pid"] == self.pid
        gone = mapping["host"] == self.host and not _pid_alive(int(mapping["pid"]))
        if same_process or gone:
            return
        raise NodeIdInUseError(
            f"node id {self.node_id!r} is in use by pid {mapping['pid']} on {mapping['host']} "
            f"(last heartbeat {silent:.1f} s ago); give this node another node_id, or wait "
            f"{self.job_lease:g} s (job_lease) if that process is gone"
        )

    def heartbeat(self, in_flight: int) -> None:
        """Beat: the database's time and the jobs in flight; re-register if the row vanished."""
        with self.engine.begin() as conn:
            naive = utc_naive(self.database.now(conn))
            result = conn.execute(
                nodes.update()
                .where(*self._mine())
                .values(heartbeat_at=naive, in_flight=in_flight, database_member=member_of(conn))
            )
        if result.rowcount == 0:  # deleted as long silent, or taken over: register again
            self.register(in_flight)

    def _mine(self) -> tuple[sa.ColumnElement[bool], ...]:
        return (
            nodes.c.node_id == self.node_id,
            nodes.c.host == self.host,
            nodes.c.pid == self.pid,
        )

    def mark(self, phase: str, in_flight: int = 0) -> None:
        """Record a phase: ``stopping`` while draining, ``stopped`` at a clean exit."""
        with self.engine.begin() as conn:
            naive = utc_naive(self.database.now(conn))
            conn.execute(
                nodes.update()
                .where(*self._mine())
                .values(state=phase, heartbeat_at=naive, in_flight=in_flight)
            )
