"""Cron and interval triggers, and the DST rules, with an injected clock (no database).

Both transitions of 2026 in two zones: Europe/Berlin springs forward on 03-29 (02:00 -> 03:00)
and falls back on 10-25 (03:00 -> 02:00); America/New_York on 03-08 (02:00 -> 03:00) and
11-01 (02:00 -> 01:00).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from infsched.clock import FixedClock
from infsched.errors import TriggerError
from infsched.schedules import Schedule
from infsched.triggers import CronTrigger, IntervalTrigger, zone_named

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def local(zone: ZoneInfo, year: int, month: int, day: int, *clock: int, fold: int = 0) -> datetime:
    hour, minute = clock
    return datetime(year, month, day, hour, minute, tzinfo=zone, fold=fold)


def times(schedule: Schedule, clock: FixedClock, count: int) -> list[str]:
    """The next fire times as the zone's wall clock shows them, with the offset."""
    return [t.strftime("%m-%d %H:%M:%S%z") for t in schedule.next_fire_times(clock.now(), count)]


def cron(expression: str, zone: ZoneInfo) -> Schedule:
    return Schedule(name="s", executor="e", trigger=expression, zone=str(zone))


def clock_at(zone: ZoneInfo, *parts: int, fold: int = 0) -> FixedClock:
    return FixedClock(local(zone, *parts, fold=fold).astimezone(UTC))


# -- spring forward: a local time that does not exist runs once, at the first valid instant --


@pytest.mark.parametrize(
    ("zone", "day"), [(BERLIN, (2026, 3, 29)), (NEW_YORK, (2026, 3, 8))], ids=["Berlin", "NY"]
)
def test_a_daily_time_skipped_by_spring_forward_runs_once_when_the_clock_jumps(
    zone: ZoneInfo, day: tuple[int, int, int]
) -> None:
    clock = clock_at(zone, *day, 0, 0)
    fires = cron("30 2 * * *", zone).next_fire_times(clock.now(), 3)
    jump = local(zone, *day, 3, 0)
    assert fires[0] == jump
    assert fires[0].utcoffset() == jump.utcoffset()
    assert [f.strftime("%d %H:%M") for f in fires[1:]] == [
        f"{day[2] + 1:02d} 02:30",
        f"{day[2] + 2:02d} 02:30",
    ]
    # The run at the jump is that day's only one: the next after it is tomorrow's.
    clock.set(fires[0].astimezone(UTC))
    assert cron("30 2 * * *", zone).next_fire_times(clock.now(), 1) == [fires[1]]


@pytest.mark.parametrize(
    ("zone", "day", "before", "after"),
    [
        (BERLIN, (2026, 3, 29), "+0100", "+0200"),
        (NEW_YORK, (2026, 3, 8), "-0500", "-0400"),
    ],
    ids=["Berlin", "NY"],
)
def test_a_sub_hourly_schedule_runs_at_every_real_interval_through_spring_forward(
    zone: ZoneInfo, day: tuple[int, int, int], before: str, after: str
) -> None:
    clock = clock_at(zone, *day, 1, 20)
    assert times(cron("*/15 * * * *", zone), clock, 4) == [
        f"{day[1]:02d}-{day[2]:02d} 01:30:00{before}",
        f"{day[1]:02d}-{day[2]:02d} 01:45:00{before}",
        f"{day[1]:02d}-{day[2]:02d} 03:00:00{after}",
        f"{day[1]:02d}-{day[2]:02d} 03:15:00{after}",
    ]


def test_every_local_time_inside_the_gap_collapses_into_one_run_at_the_jump() -> None:
    clock = clock_at(BERLIN, 2026, 3, 29, 1, 50)
    assert times(cron("*/15 2 * * *", BERLIN), clock, 2) == [
        "03-29 03:00:00+0200",
        "03-30 02:00:00+0200",
    ]


# -- fall back: a repeated local time runs once (daily or coarser) or at every real interval --


@pytest.mark.parametrize(
    ("zone", "day", "at", "summer", "winter"),
    [
        (BERLIN, (2026, 10, 25), (2, 30), "+0200", "+0100"),
        (NEW_YORK, (2026, 11, 1), (1, 30), "-0400", "-0500"),
    ],
    ids=["Berlin", "NY"],
)
def test_a_daily_time_repeated_by_fall_back_runs_once_at_its_first_occurrence(
    zone: ZoneInfo,
    day: tuple[int, int, int],
    at: tuple[int, int],
    summer: str,
    winter: str,
) -> None:
    schedule = cron(f"{at[1]} {at[0]} * * *", zone)
    clock = clock_at(zone, *day, 0, 0)
    stamp = f"{at[0]:02d}:{at[1]:02d}:00"
    assert times(schedule, clock, 2) == [
        f"{day[1]:02d}-{day[2]:02d} {stamp}{summer}",
        f"{day[1]:02d}-{day[2] + 1:02d} {stamp}{winter}",
    ]
    # From inside the repeated hour's second pass, the next run is tomorrow's.
    clock.set(local(zone, *day, at[0], 0, fold=1).astimezone(UTC))
    assert times(schedule, clock, 1) == [f"{day[1]:02d}-{day[2] + 1:02d} {stamp}{winter}"]


@pytest.mark.parametrize(
    ("zone", "day", "hour", "summer", "winter"),
    [
        (BERLIN, (2026, 10, 25), 2, "+0200", "+0100"),
        (NEW_YORK, (2026, 11, 1), 1, "-0400", "-0500"),
    ],
    ids=["Berlin", "NY"],
)
def test_a_sub_hourly_schedule_runs_in_both_passes_of_the_repeated_hour(
    zone: ZoneInfo, day: tuple[int, int, int], hour: int, summer: str, winter: str
) -> None:
    schedule = cron("*/30 * * * *", zone)
    clock = clock_at(zone, *day, hour - 1, 50)
    on = f"{day[1]:02d}-{day[2]:02d}"
    assert times(schedule, clock, 5) == [
        f"{on} {hour:02d}:00:00{summer}",
        f"{on} {hour:02d}:30:00{summer}",
        f"{on} {hour:02d}:00:00{winter}",
        f"{on} {hour:02d}:30:00{winter}",
        f"{on} {hour + 1:02d}:00:00{winter}",
    ]
    # Same-zone subtraction compares wall clocks: in UTC, each step is 30 real minutes.
    fires = [f.astimezone(UTC) for f in schedule.next_fire_times(clock.now(), 5)]
    assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(fires))


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK], ids=["Berlin", "NY"])
@pytest.mark.parametrize(
    "start", [(2026, 3, 28, 22, 0), (2026, 10, 24, 22, 0), (2026, 10, 31, 22, 0)]
)
def test_an_every_minute_schedule_fires_each_real_minute_once_across_a_transition(
    zone: ZoneInfo, start: tuple[int, int, int, int, int]
) -> None:
    first = datetime(*start, tzinfo=UTC)
    fires = Schedule(name="s", executor="e", trigger="* * * * *", zone=str(zone))
    got = fires.next_fire_times(first, 8 * 60)
    assert [g.astimezone(UTC) for g in got] == [
        first + timedelta(minutes=i + 1) for i in range(8 * 60)
    ]


def test_six_fields_put_the_seconds_first_and_follow_the_same_rules() -> None:
    clock = clock_at(NEW_YORK, 2026, 3, 7, 12, 0)
    assert times(cron("15 30 2 * * *", NEW_YORK), clock, 2) == [
        "03-08 03:00:00-0400",
        "03-09 02:30:15-0400",
    ]
    clock = clock_at(BERLIN, 2026, 1, 1, 0, 0)
    assert times(cron("*/20 * * * * *", BERLIN), clock, 3) == [
        "01-01 00:00:20+0100",
        "01-01 00:00:40+0100",
        "01-01 00:01:00+0100",
    ]


def test_a_cron_schedule_in_utc_by_default() -> None:
    schedule = Schedule(name="s", executor="e", trigger="0 9 * * 1")
    assert schedule.next_fire_times(datetime(2026, 3, 4, tzinfo=UTC), 2) == [
        datetime(2026, 3, 9, 9, tzinfo=UTC),
        datetime(2026, 3, 16, 9, tzinfo=UTC),
    ]


# -- intervals: elapsed time from the start, which DST does not move --


def test_an_interval_counts_elapsed_time_from_its_start_across_fall_back() -> None:
    start = local(BERLIN, 2026, 10, 25, 1, 0)
    schedule = Schedule(
        name="s", executor="e", trigger=timedelta(minutes=40), zone="Europe/Berlin", start=start
    )
    assert times(schedule, FixedClock(start.astimezone(UTC)), 4) == [
        "10-25 01:40:00+0200",
        "10-25 02:20:00+0200",
        "10-25 02:00:00+0100",
        "10-25 02:40:00+0100",
    ]


def test_the_start_fires_and_nothing_fires_after_the_end() -> None:
    start = datetime(2026, 5, 1, 12, tzinfo=UTC)
    schedule = Schedule(
        name="s",
        executor="e",
        trigger=timedelta(hours=1),
        start=start,
        end=start + timedelta(hours=2),
    )
    early = start - timedelta(days=3)
    assert schedule.next_fire_times(early, 10) == [start + timedelta(hours=h) for h in range(3)]
    crontab = Schedule(name="c", executor="e", trigger="0 0 * * *", start=start)
    assert crontab.next_fire_times(early, 1) == [datetime(2026, 5, 2, tzinfo=UTC)]


def test_an_interval_without_a_start_counts_from_the_epoch() -> None:
    trigger = IntervalTrigger(timedelta(minutes=15))
    assert trigger.next_after(datetime(2026, 1, 1, 10, 7, tzinfo=UTC)) == datetime(
        2026, 1, 1, 10, 15, tzinfo=UTC
    )
    assert trigger.next_after(datetime(2026, 1, 1, 10, 15, tzinfo=UTC)) == datetime(
        2026, 1, 1, 10, 30, tzinfo=UTC
    )


def test_jitter_delays_each_run_by_the_same_amount_on_every_node() -> None:
    schedule = Schedule(name="s", executor="e", trigger="* * * * *", jitter=timedelta(seconds=30))
    occurrences = schedule.next_fire_times(datetime(2026, 1, 1, tzinfo=UTC), 50)
    delays = [schedule.run_at(o) - o for o in occurrences]
    assert all(timedelta(0) <= d <= timedelta(seconds=30) for d in delays)
    assert len(set(delays)) > 10  # spread, not one fixed delay
    again = Schedule(name="s", executor="e", trigger="* * * * *", jitter=timedelta(seconds=30))
    assert [again.run_at(o) - o for o in occurrences] == delays
    plain = Schedule(name="s", executor="e", trigger="* * * * *")
    assert plain.run_at(occurrences[0]) == occurrences[0]


# -- bad triggers: one line naming the field --


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("61 * * * *", "Bad minute"),
        ("* * * *", "has 4 fields"),
        ("* * * * * * *", "has 7 fields"),
        ("0 0 31 2 *", "Bad day-of-month"),
    ],
)
def test_a_bad_cron_expression_is_refused_in_one_line(expression: str, says: str) -> None:
    with pytest.raises(TriggerError) as refused:
        CronTrigger(expression)
    assert says in str(refused.value)
    assert str(refused.value).startswith("cron: ")
    assert "\n" not in str(refused.value)


def test_an_interval_below_a_second_and_an_unknown_zone_are_refused() -> None:
    with pytest.raises(TriggerError, match=r"^every: 0:00:00 is invalid"):
        IntervalTrigger(timedelta(0))
    with pytest.raises(TriggerError, match=r"^zone: 'Mars/Olympus' is no IANA time zone"):
        zone_named("Mars/Olympus")
