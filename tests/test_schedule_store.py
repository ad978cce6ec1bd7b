"""ScheduleStore on every database: put idempotently, list, get, pause, resume, remove."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from infsched.clock import FixedClock
from infsched.database import Database, open_database
from infsched.dburl import DatabaseUrl
from infsched.errors import ScheduleError
from infsched.schedule_store import ScheduleStore
from infsched.schedules import Overlap, Schedule
from infsched.schema import create_schema

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def database(every_url: DatabaseUrl) -> Iterator[Database]:
    made = open_database(every_url, clock=FixedClock(NOW))
    create_schema(made.engine)
    yield made
    made.dispose()


def nightly(**changes: object) -> Schedule:
    fields: dict[str, object] = {
        "name": "nightly",
        "executor": "report",
        "trigger": "30 2 * * *",
        "zone": "Europe/Berlin",
        "payload": {"to": ["ops"], "big": "x" * 70_000},
    }
    fields.update(changes)
    return Schedule(**fields)  # type: ignore[arg-type]


def test_putting_a_schedule_again_changes_nothing_and_another_definition_replaces_it(
    database: Database,
) -> None:
    store = ScheduleStore(database)
    assert store.put(nightly(), "config") == "added"
    assert store.put(nightly(), "config") == "unchanged"
    stored = store.get("nightly")
    assert stored.schedule == nightly()  # a payload past 64 KiB is kept whole
    assert (stored.source, stored.paused, stored.materialized_until) == ("config", False, None)
    assert stored.created_at.replace(tzinfo=UTC) == NOW

    assert store.pause("nightly") is True
    assert store.pause("nightly") is False
    changed = nightly(trigger=timedelta(minutes=5), overlap=Overlap.QUEUE)
    assert store.put(changed, "cli") == "replaced"
    again = store.get("nightly")
    assert again.schedule == changed
    assert (again.source, again.paused) == ("cli", True)  # replacing keeps the pause
    assert store.resume("nightly") is True
    assert store.resume("nightly") is False
    assert store.get("nightly").paused is False


def test_list_is_by_name_and_remove_takes_one(database: Database) -> None:
    store = ScheduleStore(database)
    for name in ["b", "a", "c"]:
        store.put(nightly(name=name), "api")
    assert [s.name for s in store.list()] == ["a", "b", "c"]
    store.remove("b")
    assert [s.name for s in store.list()] == ["a", "c"]
    assert store.list()[0].as_json()["cron"] == "30 2 * * *"


@pytest.mark.parametrize("action", ["get", "pause", "resume", "remove"])
def test_a_missing_schedule_is_one_line_naming_the_known_ones(
    database: Database, action: str
) -> None:
    store = ScheduleStore(database)
    store.put(nightly(), "api")
    with pytest.raises(ScheduleError) as refused:
        getattr(store, action)("nighty")
    assert str(refused.value) == "no schedule named 'nighty' (the schedules: nightly)"
