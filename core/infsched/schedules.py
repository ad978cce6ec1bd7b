"""`Schedule`: a recurring job's definition, checked when it is made.

A schedule names an executor, a JSON payload, a trigger (`CronTrigger` or
`IntervalTrigger`), the IANA zone its cron expression is read in, optional
start and end instants, a jitter, a priority, and what to do about missed
occurrences (`CatchUp`) and about an occurrence due while the previous run is
still going (`Overlap`). Every error is one line naming the schedule and the
field (`ScheduleError`).

Its definition (`as_definition`) is the plain JSON form the database keeps and
that ``[[schedules]]`` tables, ``schedules add`` and ``--json`` use;
`Schedule.from_definition` reads it back.
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import attrs

from infsched.clock import require_utc
from infsched.errors import InvalidArgumentError, ScheduleError, TriggerError
from infsched.names import check_name
from infsched.triggers import CronTrigger, IntervalTrigger, Trigger, fire_times, zone_named

#: The repository name schedules' jobs carry in the job table and history: '@' keeps it
#: apart from every repository's name (those are identifiers).  A run's entity id is the
#: schedule's name, and its job key `job_key(SCHEDULE_REPOSITORY, name, occurrence)`.
SCHEDULE_REPOSITORY = "@schedules"

#: Longest schedule name: the width of the table's key column.
MAX_SCHEDULE_NAME = 128
#: `CatchUp.FIRE_ALL` runs at most this many missed occurrences unless the schedule says.
DEFAULT_CATCH_UP_LIMIT = 100


class CatchUp(enum.Enum):
    """What the occurrences missed while no node ran become."""

    #: One run for all of them; the rest are recorded as misfired.
    FIRE_ONCE_NOW = "fire_once_now"
    #: None runs; all are recorded as misfired, and the schedule goes on from the next one.
    DO_NOTHING = "do_nothing"
    #: Each runs, up to the schedule's `catch_up_limit` (the oldest beyond it misfire).
    FIRE_ALL = "fire_all"


class Overlap(enum.Enum):
    """What an occurrence due while the schedule's previous run is still in flight does."""

    #: It is recorded as skipped.
    SKIP = "skip"
    #: It runs beside the previous one.
    ALLOW = "allow"
    #: It waits for the previous one; at most one waits, later ones are skipped.
    QUEUE = "queue"


# A value that is no member is kept as it is: the validator, which knows the schedule's
# name, refuses it (a converter's error could not name the schedule).
def _catch_up_or_raw(value: CatchUp | str) -> CatchUp:
    try:
        return CatchUp(value)
    except ValueError:
        return cast(CatchUp, value)


def _overlap_or_raw(value: Overlap | str) -> Overlap:
    try:
        return Overlap(value)
    except ValueError:
        return cast(Overlap, value)


def _trigger_or_raw(value: Trigger | str | timedelta) -> Trigger:
    """A cron expression (str) or an interval (timedelta) made a trigger, when it is one."""
    try:
        if isinstance(value, str):
            return CronTrigger(value)
        if isinstance(value, timedelta):
            return IntervalTrigger(value)
    except TriggerError:
        pass  # refused by _check_trigger, with the schedule's name
    return cast(Trigger, value)


def _fail(inst: Schedule, field: str, message: str) -> ScheduleError:
    return ScheduleError(f"schedule {inst.name!r}: {field}: {message}")


def _check_name(inst: Schedule, field: attrs.Attribute[str], value: object) -> None:
    try:
        check_name(value, "schedule name", MAX_SCHEDULE_NAME)
    except InvalidArgumentError as exc:
        raise ScheduleError(str(exc)) from None


def _check_executor(inst: Schedule, field: attrs.Attribute[str], value: object) -> None:
    try:
        check_name(value, "executor", MAX_SCHEDULE_NAME)
    except InvalidArgumentError as exc:
        raise _fail(inst, "executor", str(exc)) from None


def _check_payload(inst: Schedule, field: attrs.Attribute[Any], value: object) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _fail(inst, "payload", f"is not JSON ({exc})") from None


def _check_trigger(inst: Schedule, field: attrs.Attribute[Trigger], value: object) -> None:
    try:
        if isinstance(value, str):
            CronTrigger(value)
        elif isinstance(value, timedelta):
            IntervalTrigger(value)
    except TriggerError as exc:
        raise ScheduleError(f"schedule {inst.name!r}: {exc}") from None
    if not isinstance(value, CronTrigger | IntervalTrigger):
        raise _fail(inst, "trigger", f"{value!r} is no CronTrigger, IntervalTrigger, str or delta")


def _check_zone(inst: Schedule, field: attrs.Attribute[str], value: str) -> None:
    try:
        zone_named(value)
    except TriggerError as exc:
        raise ScheduleError(f"schedule {inst.name!r}: {exc}") from None


def _check_instant(inst: Schedule, field: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise _fail(inst, field.name, f"{value!r} is invalid; expected a timezone-aware datetime")
    if field.name == "end" and inst.start is not None and value <= inst.start:
        raise _fail(inst, "end", f"{value.isoformat()} is not after start {inst.start.isoformat()}")


def _check_jitter(inst: Schedule, field: attrs.Attribute[timedelta], value: object) -> None:
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise _fail(inst, "jitter", f"{value!r} is invalid; expected a timedelta of 0 or more")


def _check_int(inst: Schedule, field: attrs.Attribute[int], value: object) -> None:
    low = 1 if field.name == "catch_up_limit" else None
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        expected = "a whole number" if low is None else f"a whole number >= {low}"
        raise _fail(inst, field.name, f"{value!r} is invalid; expected {expected}")


def _check_member(inst: Schedule, field: attrs.Attribute[Any], value: object) -> None:
    kind = CatchUp if field.name == "catch_up" else Overlap
    if not isinstance(value, kind):
        allowed = " | ".join(m.value for m in kind)
        raise _fail(inst, field.name, f"{value!r} is invalid; expected {allowed}")


@attrs.frozen(kw_only=True)
class Schedule:
    """A recurring job: which executor runs what, when, and how misses and overlaps go."""

    name: str = attrs.field(validator=_check_name)
    executor: str = attrs.field(validator=_check_executor)
    #: A cron expression (str), an interval (timedelta), or a trigger made already.
    trigger: Trigger = attrs.field(converter=_trigger_or_raw, validator=_check_trigger)
    #: What each run's job carries, as JSON.
    payload: Any = attrs.field(default=None, validator=_check_payload)
    #: The IANA zone the cron expression's local times are in.
    zone: str = attrs.field(default="UTC", validator=_check_zone)
    #: No occurrence before `start` (also an interval's anchor) or after `end`.
    start: datetime | None = attrs.field(default=None, validator=_check_instant)
    end: datetime | None = attrs.field(default=None, validator=_check_instant)
    #: Each run is delayed by a fixed pseudo-random part of this, the same on every node.
    jitter: timedelta = attrs.field(default=timedelta(0), validator=_check_jitter)
    priority: int = attrs.field(default=0, validator=_check_int)
    catch_up: CatchUp = attrs.field(
        default=CatchUp.FIRE_ONCE_NOW, converter=_catch_up_or_raw, validator=_check_member
    )
    #: How many missed occurrences `CatchUp.FIRE_ALL` runs at most.
    catch_up_limit: int = attrs.field(default=DEFAULT_CATCH_UP_LIMIT, validator=_check_int)
    overlap: Overlap = attrs.field(
        default=Overlap.SKIP, converter=_overlap_or_raw, validator=_check_member
    )

    @property
    def tzinfo(self) -> ZoneInfo:
        return zone_named(self.zone)

    def fire_times_after(self, after: datetime) -> Iterator[datetime]:
        """The occurrences after `after` (an iterator of UTC datetimes), within start and end."""
        return fire_times(self.trigger, self.tzinfo, after, start=self.start, end=self.end)

    def next_fire_times(self, after: datetime, count: int) -> list[datetime]:
        """The next `count` occurrences after `after`, in the schedule's zone."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidArgumentError(f"count: {count!r} is invalid; expected a whole number >= 1")
        found: list[datetime] = []
        for fire in self.fire_times_after(require_utc(after, "after")):
            found.append(fire.astimezone(self.tzinfo))
            if len(found) == count:
                break
        return found

    def run_at(self, occurrence: datetime) -> datetime:
        """When `occurrence`'s run is due: the occurrence plus its share of the jitter."""
        occurrence = require_utc(occurrence, "occurrence")
        span = math.floor(self.jitter / timedelta(microseconds=1))
        if span == 0:
            return occurrence
        digest = hashlib.blake2b(f"{self.name}@{occurrence.isoformat()}".encode()).digest()
        return occurrence + timedelta(microseconds=int.from_bytes(digest[:8]) % (span + 1))

    def describe_trigger(self) -> str:
        """The trigger in a few words: ``cron '30 2 * * *'`` or ``every 300 s``."""
        if isinstance(self.trigger, CronTrigger):
            return f"cron {self.trigger.expression!r}"
        return f"every {self.trigger.every.total_seconds():g} s"

    def as_definition(self) -> dict[str, Any]:
        """The plain JSON form (`from_definition` reads it back to an equal schedule)."""
        definition: dict[str, Any] = {"name": self.name, "executor": self.executor}
        if isinstance(self.trigger, CronTrigger):
            definition["cron"] = self.trigger.expression
        else:
            definition["every"] = self.trigger.every.total_seconds()
        definition.update(
            payload=self.payload,
            zone=self.zone,
            start=None if self.start is None else self.start.isoformat(),
            end=None if self.end is None else self.end.isoformat(),
            jitter=self.jitter.total_seconds(),
            priority=self.priority,
            catch_up=self.catch_up.value,
            catch_up_limit=self.catch_up_limit,
            overlap=self.overlap.value,
        )
        return definition

    @classmethod
    def from_definition(cls, raw: object, where: str = "schedule") -> Schedule:
        """A schedule from its plain form (a TOML table, a JSON object); one-line errors."""
        if not isinstance(raw, Mapping):
            raise ScheduleError(f"{where}: expected a table of schedule keys, got {raw!r}")
        name = raw.get("name")
        if not isinstance(name, str):
            raise ScheduleError(f"{where}: 'name' is required (a schedule's name)")
        label = f"schedule {name!r}"
        for key in raw:
            if key not in DEFINITION_KEYS:
                hint = difflib.get_close_matches(str(key), DEFINITION_KEYS, n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                raise ScheduleError(
                    f"{label}: unknown key {key!r}{suggestion} "
                    f"(known keys: {', '.join(DEFINITION_KEYS)})"
                )
        if "executor" not in raw:
            raise ScheduleError(f"{label}: executor: is required")
        if ("cron" in raw) == ("every" in raw):
            raise ScheduleError(f"{label}: cron or every: give exactly one of them")
        values: dict[str, Any] = {k: v for k, v in raw.items() if v is not None}
        if "cron" in values:
            values["trigger"] = values.pop("cron")
        else:
            values["trigger"] = _seconds(label, "every", values.pop("every"))
        for key in ("start", "end"):
            if key in values:
                values[key] = _instant(label, key, values[key])
        if "jitter" in values:
            values["jitter"] = _seconds(label, "jitter", values["jitter"])
        return cls(**values)


#: The keys of a schedule's plain form, in the order `as_definition` writes them.
DEFINITION_KEYS = [
    "name",
    "executor",
    "cron",
    "every",
    "payload",
    "zone",
    "start",
    "end",
    "jitter",
    "priority",
    "catch_up",
    "catch_up_limit",
    "overlap",
]


def _seconds(label: str, key: str, value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScheduleError(f"{label}: {key}: {value!r} is invalid; expected a number of seconds")
    if key == "every" and value <= 0:
        raise ScheduleError(f"{label}: every: {value!r} is invalid; expected more than 0 seconds")
    return timedelta(seconds=value)


def _instant(label: str, key: str, value: object) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ScheduleError(
                f"{label}: {key}: {value!r} is invalid; expected an ISO 8601 date and time"
            ) from None
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ScheduleError(
            f"{label}: {key}: {value!r} is invalid; expected a date and time with its offset "
            "(e.g. 2026-03-29T02:30:00+01:00)"
        )
    return value


@attrs.frozen
class ScheduledRun:
    """What one run of a schedule hands its executor as the job's entity (``job.entity``)."""

    #: The schedule's name.
    schedule: str
    #: The occurrence this run is for (UTC), before jitter; one job per occurrence.
    occurrence: datetime
    #: The schedule's payload, as declared (JSON values).
    payload: Any = None

    @classmethod
    def from_snapshot(cls, raw: Mapping[str, Any]) -> ScheduledRun:
        """A run from a claimed job's decoded snapshot (`RunRules.snapshot` wrote it)."""
        return cls(
            schedule=raw["schedule"],
            occurrence=datetime.fromisoformat(raw["occurrence"]),
            payload=raw.get("payload"),
        )


@attrs.frozen
class RunRules:
    """The schedule's policies a run's job carries, so whichever node claims it decides alone.

    No node looks the schedule up to run it: a schedule changed or removed
    after its occurrence was made a job does not change that job.
    """

    catch_up: CatchUp
    overlap: Overlap
    #: When the schedule's next occurrence runs (None: there is none).  A late
    #: ``fire_once_now`` run misfires when that one is late too (it runs instead).
    next_run_at: datetime | None

    def snapshot(self, run: ScheduledRun) -> str:
        """The job's snapshot: the run (`ScheduledRun.from_snapshot`) and these rules."""
        return json.dumps(
            {
                "schedule": run.schedule,
                "occurrence": run.occurrence.isoformat(),
                "payload": run.payload,
                "catch_up": self.catch_up.value,
                "overlap": self.overlap.value,
                "next_run_at": None if self.next_run_at is None else self.next_run_at.isoformat(),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_snapshot(cls, raw: Mapping[str, Any]) -> RunRules:
        following = raw.get("next_run_at")
        return cls(
            catch_up=CatchUp(raw["catch_up"]),
            overlap=Overlap(raw["overlap"]),
            next_run_at=None if following is None else datetime.fromisoformat(following),
        )
