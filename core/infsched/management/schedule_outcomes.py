"""ScheduleOutcomes: what became of each schedule's runs lately, from the history.

A schedule's runs are jobs of the repository ``@schedules`` whose entity id
is the schedule's name, so their outcomes are history rows like any job's.
The dashboard and ``schedules list|show`` read them here: per schedule, the
outcomes of a window counted by kind, and the newest outcome.  Every query
is on the ``@schedules`` rows of a bounded time range (the repository and
finished-time index): the window first, then, only for the schedules with
no outcome in it, ranges further back, each twice as long as the one
before, up to `LAST_OUTCOME_LOOKBACK`.  A frame never reads all of history.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.clock import from_utc_naive, require_utc, utc_naive
from infsched.jobstore.base import Outcome
from infsched.management.history import HistoryReader, HistoryTable
from infsched.schedules import SCHEDULE_REPOSITORY

#: How far back the newest outcome of a schedule is looked for.
LAST_OUTCOME_LOOKBACK = timedelta(days=32)
#: The first range looked at before the window, when the window held no outcome.
FIRST_STEP_BACK = timedelta(days=1)

#: Outcomes of runs that started (a failed one is retried, each attempt counts).
_RAN = frozenset({Outcome.SUCCEEDED.value, Outcome.FAILED.value, Outcome.DEAD.value})
_FAILED = frozenset({Outcome.FAILED.value, Outcome.DEAD.value})


@attrs.frozen
class LastOutcome:
    """A schedule's newest outcome: its state (succeeded, failed, misfired, ...) and when."""

    state: str
    #: UTC, aware.
    finished_at: datetime


@attrs.frozen
class ScheduleActivity:
    """One schedule's outcomes: counted within a window, and its newest (within the lookback)."""

    name: str
    #: None: no outcome within `LAST_OUTCOME_LOOKBACK`.
    last: LastOutcome | None
    #: Within the window: runs that started (succeeded, failed or dead), those that
    #: failed or went dead, occurrences that misfired, and those skipped for overlap.
    runs: int
    failed: int
    misfired: int
    skipped: int


@attrs.define
class _Tally:
    counts: dict[str, int] = attrs.field(factory=dict)
    last: LastOutcome | None = None

    def add(self, state: str, count: int, newest: datetime) -> None:
        self.counts[state] = self.counts.get(state, 0) + count
        self.newest(state, newest)

    def newest(self, state: str, newest: datetime) -> None:
        finished = from_utc_naive(newest)
        if self.last is None or finished > self.last.finished_at:
            self.last = LastOutcome(state, finished)

    def activity(self, name: str) -> ScheduleActivity:
        def count(states: Collection[str]) -> int:
            return sum(n for state, n in self.counts.items() if state in states)

        return ScheduleActivity(
            name=name,
            last=self.last,
            runs=count(_RAN),
            failed=count(_FAILED),
            misfired=count({Outcome.MISFIRED.value}),
            skipped=count({Outcome.SKIPPED.value}),
        )


class ScheduleOutcomes:
    """Reads schedules' outcomes from one database's history; never writes."""

    def __init__(self, reader: HistoryReader | None = None) -> None:
        self.reader = reader or HistoryReader()

    def activity(
        self,
        conn: sa.Connection,
        names: Iterable[str],
        since: datetime,
        until: datetime,
        lookback: timedelta = LAST_OUTCOME_LOOKBACK,
    ) -> dict[str, ScheduleActivity]:
        """Each of `names`' outcomes finished in [since, until] and its newest before `until`.

        `since` and `until` are aware; the newest outcome is looked for back to
        `until - lookback` at most.
        """
        start = utc_naive(require_utc(since, "since"))
        end = utc_naive(require_utc(until, "until"))
        tallies = {name: _Tally() for name in names}
        if not tallies:
            return {}
        tables = self.reader.existing(conn)
        for name, state, count, newest in self._grouped(tables, conn, start, end, None):
            if name in tallies:
                tallies[name].add(state, int(count), newest)
        floor = end - lookback
        step = FIRST_STEP_BACK
        upper = start
        while upper > floor:
            missing = [name for name, t in tallies.items() if t.last is None]
            if not missing:
                break
            lower = max(floor, upper - step)
            for name, state, _count, newest in self._grouped(tables, conn, lower, upper, missing):
                tallies[name].newest(state, newest)
            upper, step = lower, step * 2
        return {name: t.activity(name) for name, t in tallies.items()}

    @staticmethod
    def _grouped(
        tables: Iterable[HistoryTable],
        conn: sa.Connection,
        start: datetime,
        end: datetime,
        only: Collection[str] | None,
    ) -> list[Any]:
        """(schedule, state, count, newest finish) of ``@schedules`` outcomes in the range.

        [start, end] when `only` is None (the window), else [start, end) and only
        those schedules (a step back, which ends where the range after it starts).
        """
        rows: list[Any] = []
        for found in tables:
            if not found.overlaps(start, end):
                continue
            t = found.table
            where = [t.c.repository == SCHEDULE_REPOSITORY, t.c.finished_at >= start]
            if only is None:
                where.append(t.c.finished_at <= end)
            else:
                where += [t.c.finished_at < end, t.c.entity_id.in_(list(only))]
            query = (
                sa.select(t.c.entity_id, t.c.state, sa.func.count(), sa.func.max(t.c.finished_at))
                .where(*where)
                .group_by(t.c.entity_id, t.c.state)
            )
            rows.extend(conn.execute(query).all())
        return rows
