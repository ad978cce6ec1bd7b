"""GaugeSampler: the gauges no single event updates, sampled every few seconds.

- ``jobs_backlog{repository}``: waiting jobs whose run time has passed, read
  from the job table, so it is the cluster's backlog (every node reports the
  same value: aggregate with ``max``);
- ``jobs_in_flight{repository}``: jobs claimed by this node;
- ``dead_letters{repository}``: dead letters in the job table (cluster-wide);
- ``node_heartbeat_age_seconds{node}``: every node's heartbeat age, so a
  dead node is reported by the live ones;
- ``limit_rate{target}``, ``limit_max_concurrent{target}``: each flow limit in
  force (0: none of that kind), and ``jobs_held_back{target}``: the due jobs
  waiting in lanes under it, across the cluster (`JobStore.count_lanes`, one
  more grouped query, made only while some target has a limit);
- ``process_resident_memory_bytes`` and ``process_cpu_seconds_total``.

One grouped query over the hot job table per sample (two with limits); "now"
is the database's clock, the one claims compare run times with.  A
repository with no rows is reported as 0, never left at its last value, and
so is a target whose limit was removed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from infsched.clock import utc_naive
from infsched.cluster.rows import read_nodes
from infsched.jobstore.base import JobState, JobStore
from infsched.limit_store import LimitStore
from infsched.metrics.process_memory import resident_mb
from infsched.metrics.recorder import MetricsRecorder

log = logging.getLogger("infsched.metrics")


#: A sample taking t seconds is followed by at least DUTY_FACTOR * t seconds of rest.
DUTY_FACTOR = 100.0
#: Samples whose durations decide the rest: the shortest of them counts, so one slow
#: sample (a lock wait, a loaded machine, the first connection) does not push the
#: next one a minute out, while a large table, slow every time, still does.
RECENT_SAMPLES = 3


def rest_after(recent: Sequence[float], interval: float) -> float:
    """Seconds to wait after a sample, given the last samples' durations (newest last)."""
    if len(recent) < RECENT_SAMPLES:
        return interval
    return max(interval, DUTY_FACTOR * min(list(recent)[-RECENT_SAMPLES:]))


class GaugeSampler:
    """Samples the job-table and process gauges of one node."""

    def __init__(
        self,
        store: JobStore,
        metrics: MetricsRecorder,
        node_id: str,
        repositories: Sequence[str],
        interval: float = 5.0,
        limits: LimitStore | None = None,
    ) -> None:
        self.store = store
        #: The flow limits, for the limit gauges (None: no limit gauges).
        self.limits = limits
        #: The targets the limit gauges were last reported for: one removed since reads 0.
        self._targets: set[str] = set()
        self.metrics = metrics
        self.node_id = node_id
        self.repositories = list(repositories)
        self.interval = interval
        #: CPU seconds already counted; from 0, so the counter is the process's total.
        self._cpu = 0.0
        self._failing = False

    def read(self) -> dict[str, dict[tuple[str, str], float]]:
        """{gauge name: {(label, value): gauge value}}, read in one connection.

        The job gauges for this node's repositories (one grouped query), and
        every node's heartbeat age by the database's clock; a node that
        stopped cleanly is not late, so its age reads 0.
        """
        counts: dict[str, dict[tuple[str, str], float]] = {
            name: {("repository", r): 0 for r in self.repositories}
            for name in ("jobs_backlog", "jobs_in_flight", "dead_letters")
        }
        with self.store.engine.connect() as conn:
            at = self.store.db_now(conn)
            found = self.store.count_jobs(
                conn, utc_naive(at), owner=self.node_id, repositories=self.repositories
            )
            counts["node_heartbeat_age_seconds"] = {
                ("node", n.node_id): 0.0 if n.state == "stopped" else n.heartbeat_age
                for n in read_nodes(conn, at)
            }
            if self.limits is not None:
                counts.update(self._limit_gauges(conn, utc_naive(at)))
        for c in found:
            key = ("repository", c.repository)
            if c.state == JobState.WAITING.value:
                counts["jobs_backlog"][key] = c.due
            elif c.state == JobState.CLAIMED.value:
                counts["jobs_in_flight"][key] = c.owned
            elif c.state == JobState.DEAD.value:
                counts["dead_letters"][key] = c.total
        return counts

    def _limit_gauges(
        self, conn: sa.Connection, now: datetime
    ) -> dict[str, dict[tuple[str, str], float]]:
        assert self.limits is not None
        stored = self.limits.all(conn)
        gauges: dict[str, dict[tuple[str, str], float]] = {
            name: dict.fromkeys((("target", t) for t in self._targets), 0.0)
            for name in ("limit_rate", "limit_max_concurrent", "jobs_held_back")
        }
        targets = {s.target.id for s in stored}
        held_back = dict.fromkeys(targets, 0)
        for lane in self.store.count_lanes(conn, now, targets=targets):
            for target in lane.lane.targets():
                if target in held_back:
                    held_back[target] += lane.due
        for s in stored:
            key = ("target", s.target.id)
            gauges["limit_rate"][key] = s.limit.rate or 0.0
            gauges["limit_max_concurrent"][key] = s.limit.max_concurrent or 0
            gauges["jobs_held_back"][key] = held_back[s.target.id]
        self._targets = targets
        return gauges

    def sample(self) -> None:
        """Record every gauge once; a database error skips the database's gauges this time."""
        try:
            counts = self.read()
        except sa.exc.DBAPIError as exc:
            if not self._failing:
                log.warning("job gauges not sampled (database error): %s", exc.orig or exc)
            self._failing = True
        else:
            self._failing = False
            for name, values in counts.items():
                for (label, label_value), value in values.items():
                    self.metrics.set_gauge(name, value, {label: label_value})
        self.metrics.set_gauge("process_resident_memory_bytes", resident_mb() * 2**20)
        cpu = time.process_time()
        self.metrics.increment("process_cpu_seconds_total", max(cpu - self._cpu, 0.0))
        self._cpu = cpu

    def run(self, stop: threading.Event) -> None:
        """Sample until `stop` is set, every `interval` seconds or less often.

        The job gauges count the whole hot table; when it is large (a backlog
        of 100,000 due jobs took 0.2 s to count) the wait after a sample grows
        to DUTY_FACTOR times the recent samples' shortest duration
        (`rest_after`), so that counting never takes more than about 1 % of
        the time of the database it measures.
        """
        recent: deque[float] = deque(maxlen=RECENT_SAMPLES)
        while not stop.is_set():
            began = time.monotonic()
            self.sample()
            recent.append(time.monotonic() - began)
            stop.wait(rest_after(recent, self.interval))
