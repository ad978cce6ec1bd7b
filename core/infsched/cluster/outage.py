"""DatabaseOutage: one node's view of database trouble, shared by all its threads.

Every thread that talks to the database (fetchers, claimer, recorder, lease
keeper, heartbeat, maintenance) reports each attempt to its `OutageWatch`.
The node logs one error when the first of them fails and one line when the
last failing one succeeds again, however many threads and jobs are affected:
not a stack trace per job.  A thread that stops trying (a fetcher that lost
its lease) withdraws instead of holding the outage open.

A lock conflict (a deadlock the database broke by rolling one transaction
back, a lock wait timeout, SQLite's "database is locked") is no outage: the
database asks for the transaction to be tried again, which the thread does
at once.  Conflicts are counted (``db_conflicts_total``, by component and
kind: a deadlock, a serialization failure, a lock timeout, a Galera certification
conflict), not logged; the thread waits a random 10-30 ms first, so that two writers
that collided do not collide again.

An exception that is not a database error is a bug somewhere; it is logged
with its traceback once per thread and kind, and the thread carries on.

`OutageWatch.failed` returns how long the thread should wait before it
tries again.
"""

from __future__ import annotations

import logging
import random
import threading
import time

import sqlalchemy as sa

from infsched.dialects import classify
from infsched.metrics.recorder import MetricsRecorder

log = logging.getLogger("infsched.database")

#: Seconds a thread waits after an outage error, and after a lock conflict.
RETRY_OUTAGE = 1.0
RETRY_CONFLICT = 0.02


def describe_error(exc: BaseException) -> str:
    """The first line of a database error (the driver's message), or of any exception."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class DatabaseOutage:
    """Tracks which of a node's threads are failing to reach the database."""

    def __init__(
        self, logger: logging.Logger | None = None, metrics: MetricsRecorder | None = None
    ) -> None:
        self._log = logger or log
        self._metrics = metrics
        self._lock = threading.Lock()
        self._failing: set[str] = set()
        self._since = 0.0
        self._unexpected: set[tuple[str, type[BaseException]]] = set()
        #: Outages seen so far (each logged once when it started).
        self.count = 0
        #: Lock conflicts retried so far.
        self.conflicts = 0

    def watch(self, component: str) -> OutageWatch:
        return OutageWatch(self, component)

    @property
    def down(self) -> bool:
        with self._lock:
            return bool(self._failing)

    def failed(self, component: str, exc: BaseException) -> float:
        """Report a failed attempt; returns the seconds to wait before the next one."""
        kind = classify(exc)
        if kind is not None and kind.is_conflict:
            self.conflicts += 1
            if self._metrics is not None:
                self._metrics.increment(
                    "db_conflicts_total", 1, {"component": component, "kind": kind.value}
                )
            return RETRY_CONFLICT * random.uniform(0.5, 1.5)  # jitter: see conflict_retries
        if not isinstance(exc, sa.exc.DBAPIError):
            key = (component, type(exc))
            with self._lock:
                first = key not in self._unexpected
                self._unexpected.add(key)
            if first:
                self._log.error(
                    "%s: unexpected %s, carrying on (logged once)",
                    component,
                    type(exc).__name__,
                    exc_info=exc,
                )
            return RETRY_OUTAGE
        with self._lock:
            starting = not self._failing
            self._failing.add(component)
            if starting:
                self._since = time.monotonic()
                self.count += 1
        if starting:
            self._log.error(
                "database unavailable (%s, noticed by the %s); this node keeps running, "
                "retries every second and keeps finished jobs' outcomes in memory",
                describe_error(exc),
                component,
            )
        return RETRY_OUTAGE

    def ok(self, component: str) -> None:
        self._leave(component, reached=True)

    def idle(self, component: str) -> None:
        self._leave(component, reached=False)

    def _leave(self, component: str, *, reached: bool) -> None:
        with self._lock:
            if component not in self._failing:
                return
            self._failing.discard(component)
            ended = not self._failing
            lasted = time.monotonic() - self._since
        if ended:
            how = "reachable again" if reached else "no longer in use by a failing thread"
            self._log.warning("database %s after %.1f s of outage", how, lasted)


class OutageWatch:
    """One thread's reporter: `failed` after an error, `ok` after a success."""

    def __init__(self, outage: DatabaseOutage, component: str) -> None:
        self.outage = outage
        self.component = component

    def failed(self, exc: BaseException) -> float:
        """Report a failed attempt; returns the seconds to wait before the next one."""
        return self.outage.failed(self.component, exc)

    def ok(self) -> None:
        self.outage.ok(self.component)

    def idle(self) -> None:
        """This thread stopped using the database (it will report again when it resumes)."""
        self.outage.idle(self.component)
