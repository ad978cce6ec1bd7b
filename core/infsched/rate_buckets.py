"""RateBucket: one limited target's allowance during one claim, by the generic cell rate algorithm.

A target's state is one number kept in its row, the *theoretical arrival
time* (TAT): when the next start would be due if starts came exactly at the
rate.  A claim turns that into start slots: the k-th job it takes may start
at ``max(now, TAT - tolerance)``, and each slot moves TAT on by one interval
``1 / rate``.  The tolerance ``(burst - 1) / rate`` lets up to `burst` jobs
start back to back after an idle spell.  In any window of W seconds at most
``burst + W * rate`` slots fall, whichever nodes took them.

A claim takes slots up to `horizon` seconds ahead of now: a node holds those
jobs until their slot (engine/pacer.py).  A node that dies with slots taken
leaves the target short by at most one horizon of starts.

Concurrency caps are counted, not kept: the jobs in flight under a target are
the claimed rows the claim counts while it holds the target's row.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from infsched.flow_limits import FlowLimit

#: Microseconds in a second: times here are integer microseconds since the epoch,
#: as the limits table keeps them, so no database ever rounds them.
MICROS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Microseconds after the claim's clock within which a slot is no slot (the job
#: starts at once): what a rate far above the claims' pace gives every job.
AT_ONCE = 1000


def micros(value: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (the limits table's times)."""
    return (value - _EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime | None:
    """The limits table's microseconds as an aware datetime; None for 0 (never)."""
    return None if value <= 0 else _EPOCH + timedelta(microseconds=value)


class RateBucket:
    """A target's limits as one claim draws on them (a claim holds the target's row)."""

    def __init__(
        self,
        limit: FlowLimit,
        *,
        tat: int,
        held_until: int,
        in_flight: int,
        now: int,
        horizon: float,
    ) -> None:
        self.limit = limit
        self.now = now
        self._held = held_until > now
        self._in_flight = in_flight
        rate = limit.rate
        self._interval = 0 if rate is None else MICROS / rate
        self._tolerance = (limit.burst - 1) * self._interval
        # A TAT behind now means the target sat idle: it restarts from now.
        self.tat: float = max(float(tat), float(now))
        self._horizon = int(horizon * MICROS)
        #: Jobs the claim set aside under the target so far; `take` then gives them slots.
        self.reserved = 0
        #: Jobs given their slot.
        self.taken = 0

    def reserve(self, count: int) -> None:
        """Set aside `count` jobs of what the target allows this claim."""
        self.reserved += count

    def allowance(self) -> int | None:
        """How many more jobs this claim may take under the target; None: no bound."""
        if self._held:
            return 0
        found: int | None = None
        if self.limit.max_concurrent is not None:
            found = max(0, self.limit.max_concurrent - self._in_flight - self.reserved)
        if self.limit.rate is not None:
            # Slots s_i = max(now, tat + i·T - tolerance) at or before now + horizon.
            room = self.now + self._horizon + self._tolerance - self.tat
            slots = 0 if room < 0 else math.floor(room / self._interval) + 1
            slots = max(0, slots - self.reserved)
            found = slots if found is None else min(found, slots)
        return found

    def slot(self) -> int | None:
        """`take`, or None for a slot within AT_ONCE of now (the job starts at once)."""
        at = self.take()
        return None if at - self.now <= AT_ONCE else at

    def take(self) -> int:
        """Give one reserved job its slot: the microsecond its start may come at."""
        self.taken += 1
        if self.limit.rate is None:
            return self.now
        slot = max(float(self.now), self.tat - self._tolerance)
        self.tat = max(self.tat, slot) + self._interval
        return math.ceil(slot)
