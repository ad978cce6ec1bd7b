"""JobMarks: the engine's mark on each entity, when its job was created.

The fetcher finds the entities whose mark says "no job yet", locks them,
creates their jobs and marks them, in one transaction; an operator's
run-now or cancel marks one entity.  The scans read every table there is,
so a row another application wrote into the wrong day's table (misrouted)
is scheduled all the same, and reported.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from infsched.clock import require_utc
from infsched.errors import EntityError, TruncatedResultError
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import LockedEntities, MarkedEntity
from infsched.repositories.day_layout import DayLayout
from infsched.repositories.segments import (
    IN_LIST_SIZE,
    Segment,
    SegmentQueries,
    aware,
    chunks,
    db_datetime,
    naive_range,
)
from infsched.sentinel_time import EPOCH

T = TypeVar("T")
K = TypeVar("K", contravariant=True)

#: The engine's bookkeeping column: when a job was created for the entity; EPOCH (read
#: as None) until then.  Never NULL: marking a row then updates it in place (sentinel_time).
JOB_AT = "infsched_job_at"


class JobMarks(Generic[T, K]):
    """Finds, locks and marks the entities of one repository that have no job yet."""

    def __init__(
        self, options: RepositoryOptions[T], queries: SegmentQueries, layout: DayLayout
    ) -> None:
        self.options = options
        self._queries = queries
        self._layout = layout
        self._rows = rows = queries.rows
        self._dialect = queries.dialect
        self._id = rows.spec.id_column.name
        self._key = rows.spec.sharding_column.name
        self._selected = rows.columns

    def _require_scheduled(self) -> None:
        if not self.options.scheduled:
            raise EntityError(
                f"repository {self.options.name!r} was built with scheduled=False: it keeps no "
                "record of which entities have jobs, so the engine cannot schedule from it"
            )

    def find_unscheduled(
        self, start: datetime, end: datetime, limit: int, *, conn: sa.Connection | None = None
    ) -> list[T]:
        """Entities in [start, end) with no job yet, by (key, id), at most `limit`.

        Given `conn` (a transaction), the rows returned stay locked until it
        ends and rows another transaction holds are skipped: two fetchers
        racing on one repository take disjoint batches, and neither can
        schedule an entity the other is scheduling.
        """
        self._require_scheduled()
        bounds = naive_range(start, end)
        if bounds is None or limit <= 0:
            return []
        self._layout.ready_beside(conn)
        if conn is None:
            with self.options.engine.connect() as own:
                return self._unscheduled(own, bounds, limit, lock=False)
        return self._unscheduled(conn, bounds, limit, lock=True)

    def _unscheduled(
        self, conn: sa.Connection, bounds: tuple[Any, Any], limit: int, *, lock: bool
    ) -> list[T]:
        found: list[T] = []
        queries = self._queries
        for segment in self._scan_segments(conn, bounds):
            table = segment.table
            query = (
                queries.select(segment, lambda t: [t.c[JOB_AT] == EPOCH])
                .order_by(table.c[self._key], table.c[self._id])
                .limit(limit - len(found))
            )
            if lock:
                query = self._dialect.lock_skipping_locked(query)
            found.extend(
                self._rows.from_row(r) for r in queries.each_skipping_missing(conn, [query])
            )
            if len(found) >= limit:
                break
        return found

    def lock_unscheduled(
        self, conn: sa.Connection, start: datetime, end: datetime, limit: int
    ) -> list[LockedEntities]:
        """Up to `limit` unscheduled entities of [start, end), locked on `conn`, per table.

        Like find_unscheduled with a connection (rows another transaction holds
        are skipped), but nothing of the rows comes back except their ids, as
        one JSON array per table, and the smallest and largest key: the locking
        SELECT runs inside an aggregate.  Returning the 1,000 locked rows of a
        batch to Python cost more than locking them.
        """
        self._require_scheduled()
        bounds = naive_range(start, end)
        if bounds is None or limit <= 0:
            return []
        self._layout.ready_beside(conn)
        found: list[LockedEntities] = []
        taken = 0
        for segment in self._scan_segments(conn, bounds):
            table = segment.table
            key, ident = table.c[self._key], table.c[self._id]
            rows = self._dialect.lock_skipping_locked(
                sa.select(ident, key)
                .where(table.c[JOB_AT] == EPOCH, *segment.bounds(self._key))
                .order_by(key, ident)
                .limit(limit - taken)
            ).subquery()
            summary = sa.select(
                sa.func.count(),
                sa.func.min(rows.c[self._key]),
                sa.func.max(rows.c[self._key]),
                self._dialect.json_array_agg(rows.c[self._id]),
            )
            try:
                with self._dialect.statement_scope(conn):
                    count, first, last, ids = conn.execute(summary).one()
            except DBAPIError as exc:
                if not self._queries.missing(exc):
                    raise
                continue
            if not count:
                continue
            locked = self._locked_ids(count, ids)
            first, last = db_datetime(first), db_datetime(last)
            if first is None or last is None:  # not with a count above 0
                continue
            misrouted = self._misrouted_among(conn, table, locked, first, last)
            found.append(LockedEntities(table, locked, first, last, misrouted))
            taken += len(locked)
            if taken >= limit:
                break
        return found

    def _scan_segments(self, conn: sa.Connection, bounds: tuple[Any, Any]) -> list[Segment]:
        """Where the engine looks for unscheduled rows of [start, end): every table there is.

        Not only the tables of the range's days: another application may have
        written a row into the wrong day's table, and that row must run, not be
        passed over.  Each table is bounded by the range's keys, except that from
        the retention horizon down there is no lower bound, so a row due before
        the horizon (which only plain SQL can write) is found as well.
        """
        start, end = bounds
        horizon = self._layout.retention_horizon().replace(tzinfo=None)
        lower = start if start is not None and start > horizon else None
        return [Segment(table, lower, end) for table in self._layout.all_tables(conn)]

    def _misrouted_among(
        self,
        conn: sa.Connection,
        table: sa.Table,
        locked: tuple[Any, ...],
        first: datetime,
        last: datetime,
    ) -> tuple[Any, ...]:
        """Those of the `locked` ids (keys first..last) whose key is outside `table`'s days.

        The common case costs nothing: the smallest and largest key of the lot
        show whether any key is outside; only then are the ids looked up.
        """
        lo, hi = self._layout.expected_keys(table)
        if (lo is None or first >= lo) and (hi is None or last < hi):
            return ()
        outside = self._layout.outside_days(table)
        assert outside is not None  # a bound was crossed, so there is one
        key, ident = table.c[self._key], table.c[self._id]
        found: list[Any] = []
        for chunk in chunks(locked, IN_LIST_SIZE):
            query = sa.select(ident).where(
                ident.in_(list(chunk)), key >= first, key <= last, outside
            )
            found.extend(conn.execute(query).scalars())
        return tuple(sorted(found))

    def read_locked(self, conn: sa.Connection, locked: Sequence[LockedEntities]) -> list[T]:
        selects = [
            sa.select(*(table.c[n] for n in self._selected)).where(where)
            for table, where in self.sources(locked)
        ]
        return self._queries.entities(self._queries.union(conn, selects))

    def _locked_ids(self, count: int, ids: str | None) -> tuple[Any, ...]:
        """The ids of a JSON array that must hold `count` of them.

        A database may cut an aggregate short at a length limit
        (`Dialect.aggregate_length_setting`): a batch whose ids do not fit must
        fail loudly, never schedule a part of what it locked.
        """
        try:
            found = tuple(json.loads(ids)) if ids is not None else ()
        except ValueError:
            found = ()
        if len(found) != count:
            setting = self._dialect.aggregate_length_setting
            raise TruncatedResultError(
                f"repository {self.options.name!r}: {count} entities were locked but the database "
                f"returned {len(found)} of their ids"
                + (f" ({setting} too small for the batch?)" if setting else "")
                + "; lower batch_size"
                + (f" or raise {setting}" if setting else "")
            )
        return found

    def sources(
        self, locked: Sequence[LockedEntities]
    ) -> list[tuple[sa.Table, sa.ColumnElement[bool]]]:
        """Per table of `locked`: a WHERE that selects exactly those entities.

        Besides the ids, the WHERE bounds the sharding key by the smallest and
        largest key of the lot: that prunes a partitioned table to the
        partitions of the batch, and whichever index the optimizer picks (the
        primary key or the key's), it reads only the batch's stretch.  With
        day-wide bounds, stale statistics once led MariaDB to scan the day.
        """
        found = []
        for lot in locked:
            key = lot.table.c[self._key]
            for chunk in chunks(lot.ids, IN_LIST_SIZE):
                found.append(
                    (
                        lot.table,
                        sa.and_(
                            self._dialect.among(lot.table.c[self._id], chunk),
                            key >= lot.first,
                            key <= lot.last,
                        ),
                    )
                )
        return found

    def mark_scheduled(self, conn: sa.Connection, entities: Sequence[T], when: datetime) -> None:
        # Only the id and the sharding key matter here: a full to_row would check
        # every field of entities that were just read from the table.
        keys = [
            (
                self._rows.check_id(getattr(entity, self._id)),
                self._rows.value_to_db(self._key, getattr(entity, self._key)),
            )
            for entity in entities
        ]
        self.mark_keys_scheduled(conn, keys, when)

    def mark_keys_scheduled(
        self, conn: sa.Connection, keys: Sequence[tuple[Any, datetime]], when: datetime
    ) -> None:
        """Record on `conn` that jobs exist for the entities of `keys` (id, naive UTC key)."""
        self._require_scheduled()
        by_day: dict[date, list[tuple[Any, datetime]]] = defaultdict(list)
        for entity_id, due in keys:
            by_day[due.date()].append((entity_id, due))
        locked = [
            LockedEntities(
                self._layout.table_for_day(day),
                tuple(entity_id for entity_id, _ in pairs),
                min(due for _, due in pairs),
                max(due for _, due in pairs),
            )
            for day, pairs in sorted(by_day.items())
        ]
        if self._mark(conn, locked, when) == len(keys):
            return
        # Some entity is not in the table of its key's day: another application wrote
        # it into another day's table (find_unscheduled reads those too).  Ids are
        # unique across the repository, so marking those ids wherever they are is exact.
        for table in self._layout.all_tables(conn):
            others = [
                LockedEntities(table, lot.ids, lot.first, lot.last)
                for lot in locked
                if lot.table.name != table.name
            ]
            self._mark(conn, others, when)

    def mark_locked(
        self, conn: sa.Connection, locked: Sequence[LockedEntities], when: datetime
    ) -> None:
        """Record on `conn` that jobs exist for the `locked` entities."""
        self._mark(conn, locked, when)

    def _mark(self, conn: sa.Connection, locked: Sequence[LockedEntities], when: datetime) -> int:
        """Mark the `locked` entities; how many rows matched."""
        self._require_scheduled()
        stamp = require_utc(when, "when").replace(tzinfo=None)
        matched = 0
        for table, where in self.sources(locked):
            try:
                with self._dialect.statement_scope(conn):
                    matched += conn.execute(
                        table.update().where(where).values({JOB_AT: stamp})
                    ).rowcount
            except DBAPIError as exc:
                if not self._queries.missing(exc):
                    raise
        return matched

    def find_with_job_mark(self, entity_id: K) -> MarkedEntity[T] | None:
        self._require_scheduled()
        wanted = self._rows.check_id(entity_id)
        bounds = naive_range(None, None)
        if bounds is None:
            return None
        self._layout.ready()
        queries = self._queries
        with self.options.engine.connect() as conn:
            selects = [
                queries.select(s, lambda t: [t.c[self._id] == wanted]).add_columns(
                    s.table.c[JOB_AT]
                )
                for s in self._layout.segments(conn, *bounds)
            ]
            rows = queries.union(conn, selects)
        if not rows:
            return None
        row = min(rows, key=lambda r: r[self._key])
        return MarkedEntity(self._rows.from_row(row), aware(row[JOB_AT]))

    def mark_if_unscheduled(self, conn: sa.Connection, entity_id: K, when: datetime) -> bool:
        self._require_scheduled()
        wanted = self._rows.check_id(entity_id)
        bounds = naive_range(None, None)
        self._layout.ready()
        found = (
            None
            if bounds is None
            else self._queries.locate(conn, self._layout.segments(conn, *bounds), wanted)
        )
        if found is None:
            return False
        table, key_value = found
        stamp = require_utc(when, "when").replace(tzinfo=None)
        marked = conn.execute(
            table.update()
            .where(
                table.c[self._id] == wanted,
                table.c[self._key] == key_value,
                table.c[JOB_AT] == EPOCH,
            )
            .values({JOB_AT: stamp})
        )
        return bool(marked.rowcount == 1)
