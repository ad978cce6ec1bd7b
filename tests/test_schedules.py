"""Schedule values: checked when made, one line naming the schedule and the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infsched.errors import ScheduleError
from infsched.schedules import CatchUp, Overlap, Schedule
from infsched.triggers import CronTrigger, IntervalTrigger

START = datetime(2026, 6, 1, tzinfo=UTC)


def refusal(**fields: Any) -> str:
    values: dict[str, Any] = {"name": "nightly", "executor": "report", "trigger": "0 3 * * *"}
    values.update(fields)
    with pytest.raises(ScheduleError) as refused:
        Schedule(**values)
    message = str(refused.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"trigger": "61 3 * * *"},
            "schedule 'nightly': cron: '61 3 * * *' is invalid: Bad minute",
        ),
        ({"trigger": "0 3 * *"}, "schedule 'nightly': cron: '0 3 * *' has 4 fields"),
        ({"zone": "Europe/Nowhere"}, "schedule 'nightly': zone: 'Europe/Nowhere' is no IANA"),
        ({"trigger": timedelta(0)}, "schedule 'nightly': every: 0:00:00 is invalid"),
        (
            {"start": START, "end": START - timedelta(days=1)},
            "schedule 'nightly': end: 2026-05-31T00:00:00+00:00 is not after start",
        ),
        ({"start": datetime(2026, 6, 1)}, "schedule 'nightly': start: "),
        ({"executor": "no such"}, "schedule 'nightly': executor: executor 'no such' is invalid"),
        ({"jitter": timedelta(seconds=-1)}, "schedule 'nightly': jitter: "),
        ({"priority": "high"}, "schedule 'nightly': priority: 'high' is invalid"),
        ({"catch_up": "all"}, "schedule 'nightly': catch_up: 'all' is invalid; expected"),
        ({"overlap": "wait"}, "schedule 'nightly': overlap: 'wait' is invalid; expected skip"),
        ({"catch_up_limit": 0}, "schedule 'nightly': catch_up_limit: 0 is invalid"),
        ({"payload": {"when": START}}, "schedule 'nightly': payload: is not JSON"),
    ],
)
def test_bad_input_is_one_line_naming_the_schedule_and_the_field(
    fields: dict[str, Any], message: str
) -> None:
    assert refusal(**fields).startswith(message)


def test_a_bad_name_is_refused() -> None:
    assert refusal(name="two words").startswith("schedule name 'two words' is invalid")


def test_the_defaults_and_the_policies() -> None:
    schedule = Schedule(name="nightly", executor="report", trigger="0 3 * * *")
    assert schedule.trigger == CronTrigger("0 3 * * *")
    assert (schedule.zone, schedule.catch_up, schedule.overlap) == (
        "UTC",
        CatchUp.FIRE_ONCE_NOW,
        Overlap.SKIP,
    )
    assert schedule.priority == 0
    assert schedule.jitter == timedelta(0)
    made = Schedule(
        name="often",
        executor="report",
        trigger=IntervalTrigger(timedelta(minutes=5)),
        catch_up="fire_all",
        catch_up_limit=10,
        overlap="queue",
    )
    assert (made.catch_up, made.overlap) == (CatchUp.FIRE_ALL, Overlap.QUEUE)


def test_the_definition_reads_back_to_an_equal_schedule() -> None:
    schedule = Schedule(
        name="nightly",
        executor="report",
        trigger="0 3 * * *",
        payload={"to": ["ops"], "n": 3},
        zone="Europe/Berlin",
        start=START,
        end=START + timedelta(days=30),
        jitter=timedelta(seconds=90),
        priority=5,
        catch_up=CatchUp.DO_NOTHING,
        overlap=Overlap.ALLOW,
    )
    definition = schedule.as_definition()
    assert definition["cron"] == "0 3 * * *"
    assert Schedule.from_definition(definition) == schedule
    interval = Schedule(name="often", executor="report", trigger=timedelta(seconds=90))
    assert interval.as_definition()["every"] == 90.0
    assert Schedule.from_definition(interval.as_definition()) == interval


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"executor": "e", "cron": "* * * * *"}, "schedules[0]: 'name' is required"),
        ({"name": "a", "cron": "* * * * *"}, "schedule 'a': executor: is required"),
        ({"name": "a", "executor": "e"}, "schedule 'a': cron or every: give exactly one"),
        (
            {"name": "a", "executor": "e", "cron": "* * * * *", "every": 5},
            "schedule 'a': cron or every: give exactly one",
        ),
        ({"name": "a", "executor": "e", "every": 0}, "schedule 'a': every: 0 is invalid"),
        (
            {"name": "a", "executor": "e", "every": 5, "zone": "Nowhere"},
            "schedule 'a': zone: 'Nowhere' is no IANA",
        ),
        (
            {"name": "a", "executor": "e", "every": 5, "cronn": "x"},
            "schedule 'a': unknown key 'cronn'; did you mean 'cron'?",
        ),
        (
            {"name": "a", "executor": "e", "every": 5, "start": "yesterday"},
            "schedule 'a': start: 'yesterday' is invalid; expected an ISO 8601",
        ),
        (
            {"name": "a", "executor": "e", "every": 5, "start": "2026-01-01T00:00:00"},
            "schedule 'a': start: datetime.datetime(2026, 1, 1, 0, 0) is invalid",
        ),
        (
            {
                "name": "a",
                "executor": "e",
                "every": 5,
                "start": "2026-01-02T00:00:00+00:00",
                "end": "2026-01-01T00:00:00+00:00",
            },
            "schedule 'a': end: 2026-01-01T00:00:00+00:00 is not after start",
        ),
    ],
)
def test_a_bad_definition_is_one_line_naming_the_schedule_and_the_key(
    raw: dict[str, Any], message: str
) -> None:
    with pytest.raises(ScheduleError) as refused:
        Schedule.from_definition(raw, "schedules[0]")
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)
