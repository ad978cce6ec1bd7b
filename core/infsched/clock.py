"""The injectable clock.

Everything that reads the time for its own decisions reads it from a `Clock`,
so tests can run days in seconds.  Decisions several nodes must agree on
(lease expiry, node death) use the database's clock instead; see cluster/.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from infsched.errors import NaiveDatetimeError


@runtime_checkable
class Clock(Protocol):
    """Tells the current time as a timezone-aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


class FixedClock:
    """A clock that stands still until moved; for tests and simulations."""

    def __init__(self, start: datetime) -> None:
        self._now = require_utc(start, "start")
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = require_utc(when, "when")

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    def __repr__(self) -> str:
        return f"FixedClock({self._now.isoformat()})"


class OffsetClock:
    """Another clock shifted by a constant; models a node whose clock is off."""

    def __init__(self, offset: timedelta, base: Clock | None = None) -> None:
        self.offset = offset
        self.base: Clock = base if base is not None else SystemClock()

    def now(self) -> datetime:
        return self.base.now() + self.offset

    def __repr__(self) -> str:
        return f"OffsetClock({self.offset!r}, {self.base!r})"


def require_utc(value: datetime, name: str) -> datetime:
    """Return `value` converted to UTC; refuse a naive datetime.

    A naive datetime is ambiguous (local time? UTC?), so it never crosses a
    module boundary here: the caller is told which argument was naive.
    """
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise NaiveDatetimeError(
            f"{name} is a naive datetime ({value.isoformat()}); "
            "pass a timezone-aware datetime, e.g. datetime.now(UTC)"
        )
    return value.astimezone(UTC)


# The conversions below run for every row and job on the hot paths.  They build the
# result with datetime.combine: on Python 3.11, datetime.replace(tzinfo=...) takes
# 1.0-1.6 µs a call and combine 0.2-0.3.


def utc_naive(value: datetime) -> datetime:
    """The UTC wall time of an aware datetime, for DATETIME(6) columns that hold UTC."""
    value = require_utc(value, "value")
    return datetime.combine(value.date(), value.time())


def from_utc_naive(value: datetime) -> datetime:
    """Read back a DATETIME column that holds UTC."""
    return datetime.combine(value.date(), value.time(), UTC)


def as_utc(value: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is taken to be UTC already."""
    return from_utc_naive(value) if value.tzinfo is None else value.astimezone(UTC)
