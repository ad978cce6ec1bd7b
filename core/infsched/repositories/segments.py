"""Segments and the queries run over them: one SELECT per day table, UNION ALL'ed.

A `Segment` is a physical table plus the part of the requested range a
query must filter on (a backend's `segments` says which tables hold a
range).  `SegmentQueries` builds the SELECT of each segment and runs them
in as few round trips as it can, passing over a table that maintenance
dropped in the meantime.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, time
from typing import Any, cast

import attrs
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from infsched.clock import from_utc_naive, require_utc
from infsched.dialects import DatabaseErrorKind
from infsched.dialects.base import Dialect
from infsched.repositories.base import ShardStatus
from infsched.repositories.entity_rows import EntityRows

#: Tables per ``UNION ALL`` statement.
UNION_SIZE = 100
#: Ids per ``IN (...)`` list.
IN_LIST_SIZE = 1000

#: A SELECT of any columns.
AnySelect = sa.Select[*tuple[Any, ...]]
#: The conditions a query adds on each table.
Condition = Callable[[sa.Table], Sequence[sa.ColumnElement[bool]]]


def chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def day_start(day: date) -> datetime:
    """00:00 of `day`, as the naive UTC the DATETIME columns hold."""
    return datetime.combine(day, time())


def aware(value: datetime | None) -> datetime | None:
    return None if value is None else from_utc_naive(value)


def db_datetime(value: Any) -> datetime | None:
    """A DATETIME an aggregate returned: SQLite returns MIN()/MAX() of one as the stored text."""
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return cast("datetime | None", value)


def naive_range(start: datetime | None, end: datetime | None) -> tuple[Any, Any] | None:
    """Naive UTC bounds of [start, end) (None: open), or None for an empty range."""
    lo = None if start is None else require_utc(start, "start").replace(tzinfo=None)
    hi = None if end is None else require_utc(end, "end").replace(tzinfo=None)
    if lo is not None and hi is not None and lo >= hi:
        return None
    return lo, hi


@attrs.frozen
class Segment:
    """One physical table and the bounds (naive UTC, [start, end)) a query must add on it."""

    table: sa.Table
    start: datetime | None = None
    end: datetime | None = None

    def bounds(self, key: str) -> list[sa.ColumnElement[bool]]:
        column = self.table.c[key]
        found = []
        if self.start is not None:
            found.append(column >= self.start)
        if self.end is not None:
            found.append(column < self.end)
        return found


class SegmentQueries:
    """SELECTs of one entity type's columns over segments, and their rows as entities."""

    def __init__(self, rows: EntityRows, dialect: Dialect) -> None:
        self.rows = rows
        self.dialect = dialect
        self._selected = rows.columns
        self._id = rows.spec.id_column.name
        self._key = rows.spec.sharding_column.name

    def missing(self, exc: DBAPIError) -> bool:
        """Whether `exc` says the table is not there (dropped meanwhile by maintenance)."""
        return self.dialect.classify(exc) is DatabaseErrorKind.MISSING_TABLE

    def select(self, segment: Segment, condition: Condition | None) -> AnySelect:
        """The entity columns of the rows of `segment` that meet `condition`."""
        table = segment.table
        query = sa.select(*(table.c[n] for n in self._selected)).where(*segment.bounds(self._key))
        return query.where(*condition(table)) if condition else query

    def union(
        self, conn: sa.Connection, selects: Sequence[AnySelect], *, guarded: bool = True
    ) -> list[Any]:
        """Rows of all `selects`, UNION ALL'ed in one round trip per UNION_SIZE tables.

        A table dropped meanwhile (maintenance) holds no rows: it is skipped.
        Unguarded, for a transaction its owner redoes whole on an error, that
        error is raised instead, and no savepoint round trips are spent on it.
        """
        rows: list[Any] = []
        for chunk in chunks(selects, UNION_SIZE):
            statement: sa.Executable = chunk[0] if len(chunk) == 1 else sa.union_all(*chunk)
            if not guarded:
                rows.extend(conn.execute(statement).mappings())
                continue
            try:
                with self.dialect.statement_scope(conn):
                    rows.extend(conn.execute(statement).mappings())
            except DBAPIError as exc:
                if not self.missing(exc):
                    raise
                rows.extend(self.each_skipping_missing(conn, chunk))
        return rows

    def each_skipping_missing(self, conn: sa.Connection, selects: Sequence[AnySelect]) -> list[Any]:
        """Rows of each of `selects` in turn, skipping a table that is not there."""
        rows: list[Any] = []
        for select in selects:
            try:
                with self.dialect.statement_scope(conn):
                    rows.extend(conn.execute(select).mappings())
            except DBAPIError as exc:
                if not self.missing(exc):
                    raise
        return rows

    def entities(self, rows: Iterable[Mapping[str, Any]]) -> list[Any]:
        """`rows` as entities, ordered by (key, id)."""
        ordered = sorted(rows, key=lambda r: (r[self._key], r[self._id]))
        return [self.rows.from_row(r) for r in ordered]

    def locate(
        self, conn: sa.Connection, segments: Sequence[Segment], entity_id: Any
    ) -> tuple[sa.Table, datetime] | None:
        """The table of `segments` holding `entity_id` (the earliest key's), and its key value."""
        tables = {s.table.name: s.table for s in segments}
        selects = [
            sa.select(sa.literal(s.table.name).label("shard"), s.table.c[self._key])
            .where(*s.bounds(self._key))
            .where(s.table.c[self._id] == entity_id)
            for s in segments
        ]
        rows = sorted(self.union(conn, selects), key=lambda r: r[self._key])
        if not rows:
            return None
        return tables[rows[0]["shard"]], rows[0][self._key]

    def shard_status(
        self, conn: sa.Connection, shards: Sequence[tuple[str, date | None, Segment]]
    ) -> list[ShardStatus]:
        """Row count and key range of each (name, day, segment), in one UNION ALL."""
        selects = []
        for name, _day, segment in shards:
            key = segment.table.c[self._key]
            selects.append(
                sa.select(
                    sa.literal(name).label("shard"),
                    sa.func.count().label("n"),
                    sa.func.min(key).label("earliest"),
                    sa.func.max(key).label("latest"),
                )
                .select_from(segment.table)
                .where(*segment.bounds(self._key))
            )
        counted = {row["shard"]: row for row in self.union(conn, selects)}
        statuses = []
        for name, day, _segment in shards:
            row = counted.get(name)
            statuses.append(
                ShardStatus(
                    name=name,
                    day=day,
                    rows=int(row["n"]) if row else 0,
                    earliest=aware(db_datetime(row["earliest"])) if row else None,
                    latest=aware(db_datetime(row["latest"])) if row else None,
                )
            )
        return statuses
