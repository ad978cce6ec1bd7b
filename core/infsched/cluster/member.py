"""ClusterMember: this node's heartbeat and the named leases it holds or waits for.

One thread ("infsched-heartbeat") does, three times per heartbeat_interval:

- renew the leases this node holds, and try to take those it wants and
  nobody holds (or whose holder let them expire);
- every heartbeat_interval, beat in ``infsched_nodes`` (with the jobs in
  flight) and measure the node clock's offset from the database's.

Leases last 1.5 heartbeat intervals of database time.  A holder renews every
third of an interval, so it has four chances before its lease runs out; a
waiting node tries as often, so a dead holder's lease is taken over at most
1.5 + 1/3 heartbeat intervals after the holder's last renewal: within two.

Whether this node may act under a lease (`Lease.held`) is decided on the
node's monotonic clock: a grant is good for its duration counted from
before the statement was sent, so the node stops acting no later than the
database lets the lease expire, whatever the node's wall clock says.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from infsched.cluster.leases import LeaseStore, State
from infsched.cluster.nodes import NodeRegistry
from infsched.cluster.outage import DatabaseOutage
from infsched.database import Database
from infsched.dbtime import DatabaseClock
from infsched.jobstore.base import JobStore
from infsched.metrics.recorder import MetricsRecorder

log = logging.getLogger("infsched.cluster")

#: A lease lasts this many heartbeat intervals of database time.
LEASE_INTERVALS = 1.5
#: Leases are renewed (or tried for) this many times per heartbeat interval.
TICKS_PER_HEARTBEAT = 3


class Lease:
    """A named lease this node wants; `held()` tells whether it may act under it now."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self.seconds = seconds
        self._lock = threading.Lock()
        self._valid_until = 0.0
        self._wanted = True
        self._state: dict[str, Any] | None = None
        self._unsaved = False

    def held(self) -> bool:
        with self._lock:
            return time.monotonic() < self._valid_until

    @property
    def state(self) -> Mapping[str, Any] | None:
        """The lease's state: the previous holder's when taken over, then what this node noted."""
        with self._lock:
            return None if self._state is None else dict(self._state)

    def note(self, **values: Any) -> None:
        """Update the lease's state; it is written with the next renewal."""
        with self._lock:
            self._state = {**(self._state or {}), **values}
            self._unsaved = True

    def _to_save(self) -> State | None:
        with self._lock:
            return dict(self._state or {}) if self._unsaved else None

    def _granted(self, sent: float, held: bool, saved: bool, state: State | None) -> bool:
        """Record a grant; True when the lease was not held before (taken over)."""
        with self._lock:
            taken = held and time.monotonic() >= self._valid_until
            self._valid_until = sent + self.seconds if held else 0.0
            if saved:
                self._unsaved = False
            if taken:
                self._state = dict(state) if state is not None else None
                self._unsaved = False
            return taken

    def _drop(self) -> bool:
        """Forget the grant; True if it was held."""
        with self._lock:
            was = time.monotonic() < self._valid_until
            self._valid_until = 0.0
            return was


class ClusterMember:
    """Registers this node, beats, and keeps its leases, on one background thread."""

    def __init__(
        self,
        *,
        database: Database,
        jobs: JobStore,
        node_id: str,
        heartbeat_interval: float,
        job_lease: float,
        in_flight: Callable[[], int],
        metrics: MetricsRecorder,
        outage: DatabaseOutage,
    ) -> None:
        self.engine = database.engine
        #: Where this node id's earlier process left jobs claimed (`join` takes them back).
        self.jobs = jobs
        self.node_id = node_id
        self.heartbeat_interval = heartbeat_interval
        self.clock = database.clock
        self._in_flight = in_flight
        self.metrics = metrics
        self._watch = outage.watch("heartbeat")
        self.registry = NodeRegistry(
            database, node_id, heartbeat_interval=heartbeat_interval, job_lease=job_lease
        )
        self.store = LeaseStore(database)
        self.lease_seconds = LEASE_INTERVALS * heartbeat_interval
        self._leases: dict[str, Lease] = {}
        self._leasing = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_beat = 0.0

    def lease(self, name: str) -> Lease:
        """The lease `name`, wanted from now on (taken at the next tick when free)."""
        if name not in self._leases:
            self._leases[name] = Lease(name, self.lease_seconds)
        return self._leases[name]

    @property
    def leases(self) -> list[Lease]:
        return list(self._leases.values())

    # -- lifecycle --

    def join(self) -> int:
        """Register, take back an earlier process's unfinished jobs, and tick once.

        Runs in the caller's thread, so a database that is not there fails the
        start.  Returns the jobs taken back.
        """
        self.registry.register()
        reclaimed = self.jobs.reclaim_own(self.node_id)
        if reclaimed:
            log.warning(
                "node %s: %d jobs claimed by this node id's previous process wait again",
                self.node_id,
                reclaimed,
            )
            self.metrics.increment("jobs_recovered_total", reclaimed)
        self.tick()
        return reclaimed

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="infsched-heartbeat", daemon=True)
        self._thread.start()

    def release_leases(self) -> None:
        """Stop taking leases and give up the held ones, so other nodes take over at once."""
        self._leasing = False
        for lease in self._leases.values():
            if lease._drop():
                try:
                    self.store.release(lease.name, self.node_id)
                except sa.exc.DBAPIError as exc:
                    self._watch.failed(exc)
                    return

    def stop(self) -> None:
        """Release leases, stop beating, and mark this node stopped."""
        self.release_leases()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.registry.mark("stopped", self._in_flight())
        except sa.exc.DBAPIError as exc:
            log.warning("node %s: could not mark itself stopped: %s", self.node_id, exc)

    def mark_stopping(self) -> None:
        try:
            self.registry.mark("stopping", self._in_flight())
        except sa.exc.DBAPIError as exc:
            self._watch.failed(exc)

    # -- the thread --

    def _run(self) -> None:
        period = self.heartbeat_interval / TICKS_PER_HEARTBEAT
        while not self._stop.wait(period):
            try:
                self.tick()
            except Exception as exc:  # never let the heartbeat die
                self._watch.failed(exc)

    def tick(self) -> None:
        """Keep the leases, then beat if one is due; one outage report for the lot."""
        failed: BaseException | None = None
        for lease in list(self._leases.values()) if self._leasing else []:
            try:
                self._keep(lease)
            except sa.exc.DBAPIError as exc:
                failed = exc
                break
        now = time.monotonic()
        if failed is None and now >= self._next_beat:
            # A steady cadence: a late tick does not push every later beat back
            # by up to a tick, which would leave little slack before "suspected".
            on_cadence = self._next_beat + self.heartbeat_interval
            self._next_beat = on_cadence if on_cadence > now else now + self.heartbeat_interval
            try:
                self._beat()
            except sa.exc.DBAPIError as exc:
                failed = exc
                self._next_beat = 0.0
        if failed is not None:
            self._watch.failed(failed)
        else:
            self._watch.ok()

    def _keep(self, lease: Lease) -> None:
        was_held = lease.held()
        sent = time.monotonic()
        state = lease._to_save() if was_held else None
        grant = self.store.acquire(lease.name, self.node_id, self.lease_seconds, state=state)
        if grant.skipped:
            return  # tried again at the next tick; a held grant stays good until it runs out
        if lease._granted(sent, grant.held, state is not None, grant.state):
            previous = grant.previous_owner
            log.info(
                "node %s took lease %s%s",
                self.node_id,
                lease.name,
                f" over from {previous}" if previous and previous != self.node_id else "",
            )
            self.metrics.increment("leases_taken_total", 1, {"lease": lease.name})
        elif was_held and not grant.held:
            log.warning("node %s lost lease %s to another node", self.node_id, lease.name)

    def _beat(self) -> None:
        self.registry.heartbeat(self._in_flight())
        if isinstance(self.clock, DatabaseClock):
            with self.engine.connect() as conn:
                offset = self.clock.measure(conn)
            self.metrics.set_gauge("clock_offset_seconds", offset)
