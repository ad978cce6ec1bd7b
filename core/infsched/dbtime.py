"""The database's clock: what nodes compare leases and heartbeats against.

Nodes' clocks may disagree by minutes; the database has one clock.  Lease
expiry, node death and job due-ness are judged against ``UTC_TIMESTAMP(6)``
on MySQL/MariaDB.  SQLite serves one node, whose own clock is the only one.

`DatabaseClock` is the node's clock corrected by its measured offset from
the database's, so that what a node decides alone (how far ahead to fetch,
when a retry may run, the times history records) agrees with the database
even when the node's own clock is off.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

import sqlalchemy as sa

from infsched.clock import Clock, as_utc
from infsched.dialects import Dialect

log = logging.getLogger("infsched.cluster")

#: An offset smaller than this is noise (round trip, scheduling) and is not adopted.
ADOPT_CHANGE = 0.005
#: An offset larger than this is worth a line in the log.
WARN_OFFSET = 1.0


def database_now(conn: sa.Connection, dialect: Dialect, fallback: Clock) -> datetime:
    """The database's current UTC time; `fallback`'s on a database without its own clock."""
    expr = dialect.current_timestamp()
    if expr is None:
        return fallback.now()
    return as_utc(conn.execute(sa.select(expr)).scalar_one())


class DatabaseClock:
    """The node's clock plus its last measured offset from the database's clock."""

    def __init__(self, base: Clock, dialect: Dialect) -> None:
        self.base = base
        self._dialect = dialect
        self._offset = timedelta(0)
        self._logged = 0.0
        self._lock = threading.Lock()

    @property
    def offset(self) -> float:
        """Seconds the database's clock is ahead of the node's (negative: behind)."""
        with self._lock:
            return self._offset.total_seconds()

    def now(self) -> datetime:
        # No lock: reading one attribute is atomic, and workers call this twice a job.
        return self.base.now() + self._offset

    def measure(self, conn: sa.Connection) -> float:
        """Read the database's clock on `conn` and adopt the offset; returns it in seconds.

        The database's reading is compared with the middle of the round trip.
        """
        expr = self._dialect.current_timestamp()
        if expr is None:
            return 0.0
        sent_mono, sent = time.monotonic(), self.base.now()
        db = as_utc(conn.execute(sa.select(expr)).scalar_one())
        half = timedelta(seconds=(time.monotonic() - sent_mono) / 2)
        measured = db - (sent + half)
        with self._lock:
            if abs((measured - self._offset).total_seconds()) >= ADOPT_CHANGE:
                self._offset = measured
            seconds = self._offset.total_seconds()
        if abs(seconds - self._logged) >= WARN_OFFSET:
            self._logged = seconds
            if abs(seconds) < WARN_OFFSET:
                log.info("this node's clock agrees with the database's again")
                return seconds
            log.warning(
                "this node's clock is %.1f s %s the database's; the scheduler uses the "
                "database's time",
                abs(seconds),
                "behind" if seconds > 0 else "ahead of",
            )
        return seconds

    def __repr__(self) -> str:
        return f"DatabaseClock({self.base!r}, offset={self.offset:+.3f} s)"
