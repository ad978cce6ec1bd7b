"""HistoryReader: aggregate queries over the outcome history, read-only.

The history repository (engine/history.py) is a day-sharded repository named
``infsched_history``: one partitioned table of that name on MySQL/MariaDB and PostgreSQL, or
one ``infsched_history_YYYYMMDD`` table per day on SQLite.  Statistics and
the dashboard read those tables directly, and only those that exist, so that
watching a cluster never creates or alters anything in its database.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.column_types import UtcDateTime
from infsched.engine.history import HISTORY_REPOSITORY

#: Rows of one statistics query, at most; beyond it the most recent are used.
MAX_ROWS = 200_000


def _history_table(name: str) -> sa.TableClause:
    return sa.table(
        name,
        sa.column("finished_at", UtcDateTime),
        sa.column("job_key", sa.String()),
        sa.column("repository", sa.String()),
        sa.column("entity_id", sa.String()),
        sa.column("state", sa.String()),
        sa.column("attempt", sa.Integer()),
        sa.column("due_at", UtcDateTime),
        sa.column("started_at", UtcDateTime),
        sa.column("node", sa.String()),
        sa.column("error", sa.Text()),
    )


def quantile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile of ascending `ordered` (not empty)."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@attrs.frozen
class OutcomeCount:
    repository: str
    state: str
    #: Outcomes since the start of the longer window.
    total: int
    #: Of those, outcomes since the start of the shorter window.
    recent: int


@attrs.frozen
class HistoryTable:
    """One history table: a day's (SQLite), or the partitioned one holding every day."""

    table: sa.TableClause
    #: None: the partitioned table.
    day: date | None

    def overlaps(self, start: datetime, end: datetime) -> bool:
        """Whether it may hold outcomes finished in [start, end]."""
        return self.day is None or _overlaps(self.day, start, end)


class HistoryReader:
    """Reads the history tables of one database; never writes."""

    def __init__(self, name: str = HISTORY_REPOSITORY) -> None:
        self.name = name
        self._day_table = re.compile(rf"^{re.escape(name)}_(\d{{8}})$")

    def tables(self, conn: sa.Connection, start: datetime, end: datetime) -> list[sa.TableClause]:
        """The history tables that exist and may hold outcomes finished in [start, end]."""
        return [t.table for t in self.existing(conn) if t.overlaps(start, end)]

    def existing(self, conn: sa.Connection) -> list[HistoryTable]:
        """Every history table there is, each with the day it holds (one inspection)."""
        found = []
        for table_name in sa.inspect(conn).get_table_names():
            if table_name == self.name:
                found.append(HistoryTable(_history_table(table_name), None))
                continue
            match = self._day_table.match(table_name)
            if match is None:
                continue
            try:
                day = datetime.strptime(match.group(1), "%Y%m%d").date()
            except ValueError:
                continue
            found.append(HistoryTable(_history_table(table_name), day))
        return found

    def _rows(
        self,
        conn: sa.Connection,
        start: datetime,
        end: datetime,
        build: Any,
    ) -> list[Any]:
        rows: list[Any] = []
        for table in self.tables(conn, start, end):
            window = (table.c.finished_at >= start, table.c.finished_at <= end)
            rows.extend(conn.execute(build(table).where(*window)).all())
        return rows

    def outcome_counts(
        self, conn: sa.Connection, since: datetime, recent_since: datetime, until: datetime
    ) -> list[OutcomeCount]:
        """Outcomes per (repository, state) finished in [since, until], and since `recent_since`."""

        def build(t: sa.TableClause) -> sa.Select[Any]:
            recent = sa.func.sum(sa.case((t.c.finished_at >= recent_since, 1), else_=0))
            return sa.select(t.c.repository, t.c.state, sa.func.count(), recent).group_by(
                t.c.repository, t.c.state
            )

        totals: dict[tuple[str, str], list[int]] = {}
        for repository, state, total, recent in self._rows(conn, since, until, build):
            counts = totals.setdefault((repository, state), [0, 0])
            counts[0] += int(total)
            counts[1] += int(recent or 0)
        return [OutcomeCount(r, s, c[0], c[1]) for (r, s), c in sorted(totals.items())]

    def lags(self, conn: sa.Connection, since: datetime, until: datetime) -> dict[str, list[float]]:
        """Start minus due time, in seconds, of runs finished in [since, until], per repository."""

        def build(t: sa.TableClause) -> sa.Select[Any]:
            return (
                sa.select(t.c.repository, t.c.due_at, t.c.started_at)
                .where(t.c.started_at.is_not(None))
                .order_by(t.c.finished_at.desc())
                .limit(MAX_ROWS)
            )

        found: dict[str, list[float]] = {}
        for repository, due_at, started_at in self._rows(conn, since, until, build):
            found.setdefault(repository, []).append((started_at - due_at).total_seconds())
        for values in found.values():
            values.sort()
        return found

    def finishes(
        self, conn: sa.Connection, since: datetime, until: datetime
    ) -> list[tuple[str, str, datetime]]:
        """(repository, state, finished_at) of outcomes finished in [since, until]."""

        def build(t: sa.TableClause) -> sa.Select[Any]:
            return (
                sa.select(t.c.repository, t.c.state, t.c.finished_at)
                .order_by(t.c.finished_at.desc())
                .limit(MAX_ROWS)
            )

        return [(r, s, f) for r, s, f in self._rows(conn, since, until, build)]

    def latest(
        self,
        conn: sa.Connection,
        states: Sequence[str],
        since: datetime,
        until: datetime,
        limit: int,
    ) -> list[dict[str, Any]]:
        """The `limit` most recent outcomes in `states` finished in [since, until], newest first."""

        def build(t: sa.TableClause) -> sa.Select[Any]:
            return (
                sa.select(t)
                .where(t.c.state.in_(list(states)))
                .order_by(t.c.finished_at.desc())
                .limit(limit)
            )

        rows = [dict(r._mapping) for r in self._rows(conn, since, until, build)]
        rows.sort(key=lambda r: r["finished_at"], reverse=True)
        return rows[:limit]


def _overlaps(day: date, start: datetime, end: datetime) -> bool:
    first = datetime.combine(day, datetime.min.time())
    return first <= end and first + timedelta(days=1) > start
