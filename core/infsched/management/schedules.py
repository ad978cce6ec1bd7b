"""ScheduleAdmin: what ``infsched schedules`` and the Python API do with schedules.

On top of `ScheduleStore` (which keeps them), it checks that a schedule's
executor exists before anything is stored, reads definitions given as JSON
(``--json``, ``--file``) with one-line errors, and works out when each
schedule fires next, in its own zone.  The executors it accepts are the ones
the caller knows: the loaded plugins' (a command), or those plus the ones
passed to the node (``InfiniteScheduler(executors=…)``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from infsched.database import Database
from infsched.errors import ScheduleError
from infsched.management.schedule_outcomes import LastOutcome, ScheduleOutcomes
from infsched.schedule_store import Put, ScheduleStore, StoredSchedule
from infsched.schedules import Schedule

#: The most fire times `next_fire_times` lists.
MAX_NEXT = 1000


def require_executors(schedules: Sequence[Schedule], known: Collection[str]) -> None:
    """Refuse the first schedule whose executor is not among `known`, naming both."""
    for schedule in schedules:
        if schedule.executor not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise ScheduleError(
                f"schedule {schedule.name!r}: executor: no executor named "
                f"{schedule.executor!r} is registered (known: {listed})"
            )


def require_distinct(schedules: Sequence[Schedule], where: str) -> None:
    """Refuse two schedules of one batch with the same name (which one would win?)."""
    names = [s.name for s in schedules]
    for name in names:
        if names.count(name) > 1:
            raise ScheduleError(f"{where}: two schedules are named {name!r}")


def schedules_from_json(text: str, where: str) -> list[Schedule]:
    """The schedules a JSON text defines: one definition object, or a list of them."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScheduleError(f"{where}: not JSON ({exc})") from None
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise ScheduleError(f"{where}: no schedule definitions (an empty list)")
    found = [Schedule.from_definition(item, f"{where}[{i}]") for i, item in enumerate(items)]
    require_distinct(found, where)
    return found


@attrs.frozen
class ScheduleView:
    """A stored schedule, its next occurrence after now (None: none is left), its last outcome."""

    stored: StoredSchedule
    #: In the schedule's zone.
    next_fire: datetime | None
    #: The newest outcome in the history (None: none within `LAST_OUTCOME_LOOKBACK`).
    last: LastOutcome | None = None

    @property
    def name(self) -> str:
        return self.stored.name

    def as_json(self) -> dict[str, Any]:
        """The stored schedule's JSON, its times with their UTC offset, and `next_fire`."""
        stored = self.stored
        return {
            **stored.as_json(),
            "materialized_until": _utc_text(stored.materialized_until),
            "created_at": _utc_text(stored.created_at),
            "updated_at": _utc_text(stored.updated_at),
            "next_fire": None if self.next_fire is None else self.next_fire.isoformat(),
            "last_outcome": None
            if self.last is None
            else {"state": self.last.state, "finished_at": _utc_text(self.last.finished_at)},
        }


def _utc_text(value: datetime | None) -> str | None:
    """ISO 8601 with the offset; the database's naive times are UTC."""
    if value is None:
        return None
    return (value.replace(tzinfo=UTC) if value.utcoffset() is None else value).isoformat()


class ScheduleAdmin:
    """Add (checked), list, show, pause, resume and remove one database's schedules."""

    def __init__(self, database: Database, executors: Collection[str]) -> None:
        self.store = ScheduleStore(database)
        self.engine = database.engine
        self.outcomes = ScheduleOutcomes()
        self.clock = database.clock
        #: The executor names a schedule may use.
        self.executors = frozenset(executors)

    def add(self, schedule: Schedule, source: str) -> Put:
        """Store `schedule` (added, replaced or unchanged); an unknown executor stores nothing."""
        return self.add_all([schedule], source)[0][1]

    def add_all(self, schedules: Sequence[Schedule], source: str) -> list[tuple[str, Put]]:
        """Store each of `schedules`, all checked before the first is stored."""
        require_distinct(schedules, "schedules")
        require_executors(schedules, self.executors)
        return [(s.name, self.store.put(s, source)) for s in schedules]

    def get(self, name: str) -> StoredSchedule:
        return self.store.get(name)

    def list_schedules(self) -> list[ScheduleView]:
        """Every schedule, by name, with its next fire time and last outcome."""
        return self._views(self.store.list())

    def show(self, name: str) -> ScheduleView:
        return self._views([self.store.get(name)])[0]

    def pause(self, name: str) -> bool:
        return self.store.pause(name)

    def resume(self, name: str) -> bool:
        return self.store.resume(name)

    def remove(self, name: str) -> None:
        self.store.remove(name)

    def next_fire_times(
        self, name: str, count: int = 5, after: datetime | None = None
    ) -> list[datetime]:
        """The next `count` occurrences of `name` after `after` (now), in its zone."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_NEXT:
            raise ScheduleError(
                f"count: {count!r} is invalid; expected a whole number in 1..{MAX_NEXT}"
            )
        schedule = self.store.get(name).schedule
        return schedule.next_fire_times(self.clock.now() if after is None else after, count)

    def _views(self, stored: Sequence[StoredSchedule]) -> list[ScheduleView]:
        now = self.clock.now()
        with self.engine.connect() as conn:
            # Only the newest outcome is wanted: the window is empty, the look back finds it.
            activity = self.outcomes.activity(conn, [s.name for s in stored], now, now)
        return [view_of(s, now, activity[s.name].last) for s in stored]


def view_of(stored: StoredSchedule, now: datetime, last: LastOutcome | None) -> ScheduleView:
    """`stored` with its next occurrence after `now` and its `last` outcome."""
    upcoming = stored.schedule.next_fire_times(now, 1)
    return ScheduleView(stored, upcoming[0] if upcoming else None, last)
