"""`ScheduleStore`: the recurring schedules kept in ``infsched_schedules``, for every node.

A schedule is put under its name, idempotently: the same definition again
changes nothing, another one replaces it (keeping its pause flag and how far
its occurrences were materialized). Each row remembers who declared it
(`source`: ``config``, ``plugin NAME``, ``cli``, ``api``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import attrs
import sqlalchemy as sa

from infsched.clock import from_utc_naive
from infsched.database import Database
from infsched.errors import ScheduleError
from infsched.schedules import Schedule
from infsched.schema import schedules as table

Put = Literal["added", "replaced", "unchanged"]


@attrs.frozen
class StoredSchedule:
    """A schedule as the database keeps it."""

    schedule: Schedule
    source: str
    paused: bool
    #: The latest occurrence made a job; None before the first.
    materialized_until: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def name(self) -> str:
        return self.schedule.name

    def as_json(self) -> dict[str, Any]:
        def when(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            **self.schedule.as_definition(),
            "source": self.source,
            "paused": self.paused,
            "materialized_until": when(self.materialized_until),
            "created_at": when(self.created_at),
            "updated_at": when(self.updated_at),
        }


def _definition_text(schedule: Schedule) -> str:
    return json.dumps(schedule.as_definition(), sort_keys=True, separators=(",", ":"))


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else from_utc_naive(value)


def _stored(row: sa.Row[Any]) -> StoredSchedule:
    schedule = Schedule.from_definition(json.loads(row.definition), f"stored schedule {row.name!r}")
    return StoredSchedule(
        schedule=schedule,
        source=row.source,
        paused=bool(row.paused),
        materialized_until=_aware(row.materialized_until),
        created_at=from_utc_naive(row.created_at),
        updated_at=from_utc_naive(row.updated_at),
    )


class ScheduleStore:
    """Add, replace, list, pause, resume and remove schedules on one database."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._engine = database.engine

    def put(self, schedule: Schedule, source: str) -> Put:
        """Store `schedule` under its name: added, replaced (its definition differed) or unchanged.

        Replacing keeps the pause flag and the materialized occurrence: a
        changed trigger goes on from there rather than firing the past again.
        """
        definition = _definition_text(schedule)
        now = self._database.clock.now()
        with self._engine.begin() as conn:
            found = conn.execute(
                sa.select(table.c.definition, table.c.source).where(table.c.name == schedule.name)
            ).one_or_none()
            if found is None:
                # A node starting at the same moment may insert it first: then this is skipped.
                insert = self._database.dialect.insert_ignore(table, ["name"])
                conn.execute(
                    insert.values(
                        name=schedule.name,
                        definition=definition,
                        source=source,
                        paused=False,
                        materialized_until=None,
                        created_at=now,
                        updated_at=now,
                    )
                )
                return "added"
            if found.definition == definition and found.source == source:
                return "unchanged"
            conn.execute(
                sa.update(table)
                .where(table.c.name == schedule.name)
                .values(definition=definition, source=source, updated_at=now)
            )
            return "replaced"

    def get(self, name: str) -> StoredSchedule:
        """The schedule `name`; ScheduleError when there is none."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.name == name)).one_or_none()
        if row is None:
            raise self._missing(name)
        return _stored(row)

    def list(self, conn: sa.Connection | None = None) -> list[StoredSchedule]:
        """Every schedule, by name; read on `conn` if given (the dashboard's one connection)."""
        if conn is not None:
            return [_stored(row) for row in conn.execute(sa.select(table).order_by(table.c.name))]
        with self._engine.connect() as own:
            return self.list(own)

    def pause(self, name: str) -> bool:
        """Pause `name` (no occurrence of it is made a job); False if it was paused already."""
        return self._set_paused(name, True)

    def resume(self, name: str) -> bool:
        """Resume `name`; False if it was not paused.

        The occurrences while it was paused are not made up for: it goes on
        from now, as if they had been made jobs already.
        """
        return self._set_paused(name, False)

    # -- materializing (the node holding the schedules lease) --

    def wanting(self, horizon: datetime) -> Sequence[str]:
        """The unpaused schedules whose occurrences up to `horizon` are not all jobs yet."""
        with self._engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(table.c.name)
                    .where(
                        table.c.paused == sa.false(),
                        sa.or_(
                            table.c.materialized_until.is_(None),
                            table.c.materialized_until < horizon,
                        ),
                    )
                    .order_by(table.c.name)
                ).scalars()
            )

    def lock(self, conn: sa.Connection, names: Sequence[str]) -> Sequence[StoredSchedule]:
        """The schedules `names` still there and unpaused, by name, locked until `conn` commits.

        Whoever materializes a schedule holds this lock while it adds the jobs
        and moves `materialized_until` on, so two never make the same occurrence.
        The rows are locked in name order, so two lockers of overlapping names wait
        for each other rather than deadlock.
        """
        rows = conn.execute(
            sa.select(table)
            .where(table.c.name.in_(list(names)), table.c.paused == sa.false())
            .order_by(table.c.name)
            .with_for_update()
        ).all()
        return [_stored(row) for row in rows]

    def advance(self, conn: sa.Connection, names: Sequence[str], until: datetime) -> None:
        """Every occurrence of the schedules `names` up to `until` is a job (or was missed)."""
        if names:
            conn.execute(
                sa.update(table)
                .where(table.c.name.in_(list(names)))
                .values(materialized_until=until)
            )

    def remove(self, name: str) -> None:
        """Remove `name`; ScheduleError when there is none. Its jobs made already stay."""
        with self._engine.begin() as conn:
            gone = conn.execute(sa.delete(table).where(table.c.name == name)).rowcount
        if gone == 0:
            raise self._missing(name)

    def _set_paused(self, name: str, paused: bool) -> bool:
        now = self._database.clock.now()
        with self._engine.begin() as conn:
            changed = conn.execute(
                sa.update(table)
                .where(table.c.name == name, table.c.paused == (not paused))
                .values(paused=paused, updated_at=now)
            ).rowcount
            if changed and not paused:
                conn.execute(
                    sa.update(table)
                    .where(
                        table.c.name == name,
                        sa.or_(
                            table.c.materialized_until.is_(None),
                            table.c.materialized_until < now,
                        ),
                    )
                    .values(materialized_until=now)
                )
        if changed == 0:
            self.get(name)  # raises if there is no such schedule
        return changed > 0

    def _missing(self, name: str) -> ScheduleError:
        with self._engine.connect() as conn:
            names = conn.execute(sa.select(table.c.name).order_by(table.c.name)).scalars().all()
        known = ", ".join(names) if names else "none"
        return ScheduleError(f"no schedule named {name!r} (the schedules: {known})")
