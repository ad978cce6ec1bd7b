"""The injectable clock: system, fixed, offset, and the UTC rules."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from infsched.clock import (
    Clock,
    FixedClock,
    OffsetClock,
    SystemClock,
    from_utc_naive,
    require_utc,
    utc_naive,
)

START = datetime(2024, 1, 31, 23, 59, 59, 999999, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


def test_every_clock_satisfies_the_protocol() -> None:
    for clock in (SystemClock(), FixedClock(START), OffsetClock(timedelta(0))):
        assert isinstance(clock, Clock)


def test_system_clock_tells_aware_utc_time() -> None:
    before = datetime.now(UTC)
    now = SystemClock().now()
    after = datetime.now(UTC)
    assert now.tzinfo is UTC
    assert before <= now <= after


def test_fixed_clock_stands_still_until_moved() -> None:
    clock = FixedClock(START)
    assert clock.now() == START
    assert clock.now() == START
    assert clock.advance(timedelta(microseconds=1)) == datetime(2024, 2, 1, tzinfo=UTC)
    assert clock.now() == datetime(2024, 2, 1, tzinfo=UTC)
    clock.set(datetime(2024, 5, 1, 12, tzinfo=PLUS_TWO))
    assert clock.now() == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert clock.now().tzinfo is UTC


def test_fixed_clock_converts_its_start_to_utc() -> None:
    clock = FixedClock(datetime(2024, 1, 1, 1, 0, tzinfo=PLUS_TWO))
    assert clock.now() == datetime(2023, 12, 31, 23, 0, tzinfo=UTC)
    assert clock.now().tzinfo is UTC
    assert repr(clock) == "FixedClock(2023-12-31T23:00:00+00:00)"


def test_fixed_clock_refuses_naive_times_naming_the_argument() -> None:
    with pytest.raises(ValueError, match=r"^start is a naive datetime \(2024-01-01T00:00:00\)"):
        FixedClock(datetime(2024, 1, 1))
    clock = FixedClock(START)
    with pytest.raises(ValueError, match=r"^when is a naive datetime"):
        clock.set(datetime(2024, 1, 1))
    assert clock.now() == START


def test_fixed_clock_advances_from_many_threads_add_up() -> None:
    clock = FixedClock(START)

    def tick() -> None:
        for _ in range(1000):
            clock.advance(timedelta(seconds=1))

    threads = [threading.Thread(target=tick) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clock.now() == START + timedelta(seconds=8000)


def test_offset_clock_follows_its_base_at_a_constant_distance() -> None:
    base = FixedClock(START)
    late = OffsetClock(timedelta(seconds=-90), base)
    assert late.now() == START - timedelta(seconds=90)
    base.advance(timedelta(hours=1))
    assert late.now() == START + timedelta(hours=1, seconds=-90)
    assert repr(late) == f"OffsetClock({timedelta(seconds=-90)!r}, {base!r})"


def test_offset_clock_defaults_to_the_system_clock() -> None:
    clock = OffsetClock(timedelta(days=1))
    assert isinstance(clock.base, SystemClock)
    expected = datetime.now(UTC) + timedelta(days=1)
    assert abs(clock.now() - expected) < timedelta(seconds=5)


def test_require_utc_converts_aware_times_and_refuses_others() -> None:
    converted = require_utc(datetime(2024, 7, 1, 2, 0, tzinfo=PLUS_TWO), "due")
    assert converted == datetime(2024, 7, 1, 0, 0, tzinfo=UTC)
    assert converted.tzinfo is UTC
    with pytest.raises(ValueError, match=r"^due is a naive datetime"):
        require_utc(datetime(2024, 7, 1), "due")
    with pytest.raises(TypeError, match=r"^due must be a datetime, got str"):
        require_utc("2024-07-01T00:00:00Z", "due")  # type: ignore[arg-type]


def test_utc_naive_and_back_round_trip() -> None:
    aware = datetime(2024, 7, 1, 2, 0, 0, 5, tzinfo=PLUS_TWO)
    naive = utc_naive(aware)
    assert naive == datetime(2024, 7, 1, 0, 0, 0, 5)
    assert naive.tzinfo is None
    assert from_utc_naive(naive) == aware
    with pytest.raises(ValueError, match="naive datetime"):
        utc_naive(naive)
