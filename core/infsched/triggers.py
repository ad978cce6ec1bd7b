"""Recurring triggers: when a schedule fires, as pure functions of an instant and a time zone.

A `CronTrigger` matches local wall-clock times in the schedule's zone (cronsim
parses and matches the expression; this module decides what a local time that
does not exist, or exists twice, means). An `IntervalTrigger` fires every fixed
amount of elapsed time from an anchor, so DST never moves it.

The DST rules (docs/schedules.md):

- a local time skipped by a spring-forward transition fires once, at the first
  valid instant after it (the transition itself);
- a local time repeated by a fall-back transition fires once, at its first
  occurrence, unless the expression's hour field is ``*``: such a schedule runs
  every hour (or more often), and fires at every real interval, in both passes.

Every instant given and returned is timezone-aware; returned ones are in UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from cronsim import CronSim, CronSimError

from infsched.clock import require_utc
from infsched.errors import TriggerError

#: Interval triggers without a start count their intervals from here.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Longer than any fall-back transition (they are one hour, rarely two, nowhere more).
_TRANSITION_REACH = timedelta(hours=3)


def zone_named(name: str) -> ZoneInfo:
    """The IANA zone `name`; TriggerError for one the zone database does not know."""
    if not isinstance(name, str) or not name.strip():
        raise TriggerError(f"zone: {name!r} is invalid; expected an IANA zone name like UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TriggerError(
            f"zone: {name!r} is no IANA time zone (e.g. UTC, Europe/Berlin, America/New_York)"
        ) from None


def _check_cron(inst: CronTrigger, field: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise TriggerError(f"cron: {value!r} is invalid; expected a cron expression string")
    fields = len(value.split())
    if fields not in (5, 6):
        raise TriggerError(
            f"cron: {value!r} has {fields} fields; expected 5 (minute hour day month weekday) "
            "or 6 (second first)"
        )
    try:
        CronSim(value, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise TriggerError(f"cron: {value!r} is invalid: {exc}") from None


@attrs.frozen
class CronTrigger:
    """A cron expression of 5 fields, or 6 with the seconds first, matched in local time."""

    expression: str = attrs.field(validator=_check_cron)

    @property
    def follows_real_time(self) -> bool:
        """Whether a repeated local hour fires in both passes (the hour field is ``*``)."""
        parts = self.expression.split()
        return parts[-4] == "*"

    def next_after(self, instant: datetime, zone: ZoneInfo) -> datetime | None:
        """The first fire time strictly after `instant`; None when none comes in 50 years."""
        instant = require_utc(instant, "instant")
        # Local time runs monotonically but for fall-back transitions, where it goes back by
        # the transition's size: only within that much of one can a later local time be an
        # earlier instant, so only there does the search look past its first find.
        start = _wall(instant, zone) - _falls_back(instant, instant + _TRANSITION_REACH, zone)
        best: datetime | None = None
        for wall in CronSim(self.expression, start):
            if best is not None:
                reach = _falls_back(max(instant, best - _TRANSITION_REACH), best, zone)
                if wall > _wall(best, zone) + reach:
                    break
            for fire in self._instants(wall, zone):
                if fire > instant and (best is None or fire < best):
                    best = fire
        return best

    def _instants(self, wall: datetime, zone: ZoneInfo) -> list[datetime]:
        first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if _wall(first, zone) != wall:  # skipped by a spring-forward transition
            return [_transition(min(first, second), max(first, second), wall, zone)]
        return [first, second] if self.follows_real_time else [first]


def _check_every(inst: IntervalTrigger, field: attrs.Attribute[timedelta], value: object) -> None:
    if not isinstance(value, timedelta):
        raise TriggerError(f"every: {value!r} is invalid; expected a timedelta")
    if value < timedelta(seconds=1):
        raise TriggerError(f"every: {value} is invalid; expected at least 1 second")


@attrs.frozen
class IntervalTrigger:
    """Every fixed amount of elapsed time, counted from an anchor (the schedule's start)."""

    every: timedelta = attrs.field(validator=_check_every)

    def next_after(self, instant: datetime, anchor: datetime | None = None) -> datetime:
        """The first anchor + k * every strictly after `instant`."""
        instant = require_utc(instant, "instant")
        origin = EPOCH if anchor is None else require_utc(anchor, "anchor")
        if instant < origin:
            return origin
        steps = (instant - origin) // self.every + 1
        return origin + steps * self.every


Trigger = CronTrigger | IntervalTrigger


def fire_times(
    trigger: Trigger,
    zone: ZoneInfo,
    after: datetime,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Iterator[datetime]:
    """The fire times after `after`, from `start` (inclusive) to `end` (inclusive), in UTC."""
    after = require_utc(after, "after")
    if start is not None and after < start:
        after = start - timedelta(microseconds=1)  # `start` itself may fire
    while True:
        if isinstance(trigger, CronTrigger):
            found = trigger.next_after(after, zone)
        else:
            found = trigger.next_after(after, start)
        if found is None or (end is not None and found > end):
            return
        yield found
        after = found


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    """The local wall-clock time of `instant` in `zone`, naive."""
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def _falls_back(earlier: datetime, later: datetime, zone: ZoneInfo) -> timedelta:
    """How far local time goes back between two instants (zero unless a fall-back lies between)."""
    before = earlier.astimezone(zone).utcoffset()
    after = later.astimezone(zone).utcoffset()
    # A ZoneInfo always has an offset.
    assert before is not None
    assert after is not None
    return max(before - after, timedelta(0))


def _transition(low: datetime, high: datetime, wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in (low, high] whose wall time is past `wall`: where the gap ends."""
    # Transitions fall on whole seconds: halve the span down to one.
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if _wall(middle, zone) > wall:
            high = middle
        else:
            low = middle
    return high
