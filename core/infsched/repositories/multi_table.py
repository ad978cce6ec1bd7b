"""MultiTableRepository: one table per UTC day, ``{prefix}_{YYYYMMDD}``.

Works on MySQL/MariaDB, PostgreSQL and SQLite.  Day tables are found by listing the
database's tables and matching ``^{prefix}_\\d{8}$`` exactly (a ``LIKE
'prefix_%'`` would also match ``prefixX…`` and ``prefix_other_…``).
An insert for a day without a table creates it (CREATE TABLE IF NOT
EXISTS, so two processes may race); maintenance creates the days ahead and
drops whole tables past retention.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Collection
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.schema import DropTable

from infsched.names import check_name
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import MaintenanceReport, ShardStatus
from infsched.repositories.day_sharded import MAINTENANCE_LOCK_TIMEOUT, DayShardedRepository, K, T
from infsched.repositories.segments import Segment, day_start

_ONE_DAY = timedelta(days=1)


class MultiTableRepository(DayShardedRepository[T, K]):
    """Entities in one table per UTC day of their sharding key."""

    backend = "multi_table"

    def __init__(self, options: RepositoryOptions[T]) -> None:
        super().__init__(options)
        self.prefix = check_name(options.table_name, "table prefix")
        self._pattern = re.compile(rf"^{re.escape(self.prefix)}_(\d{{8}})$")
        self._tables: dict[date, sa.Table] = {}
        self._tables_lock = threading.Lock()
        #: Days whose table is known to exist, so inserts skip the DDL round trip.
        self._known_days: set[date] = set()
        self.table_for_day(self._today())  # index names are checked when a table is built

    def table_name(self, day: date) -> str:
        return f"{self.prefix}_{day:%Y%m%d}"

    def table_for_day(self, day: date) -> sa.Table:
        table = self._tables.get(day)
        if table is None:
            with self._tables_lock:
                table = self._tables.get(day)
                if table is None:
                    table = self._tables[day] = self._build_table(
                        self.table_name(day), partitioned=False
                    )
        return table

    def forget_day(self, day: date) -> None:
        self._known_days.discard(day)

    def _day_of(self, table_name: str) -> date | None:
        match = self._pattern.match(table_name)
        if match is None:
            return None
        try:
            return datetime.strptime(match.group(1), "%Y%m%d").date()
        except ValueError:  # eight digits that are no date: not one of ours
            return None

    def existing_days(self, conn: sa.Connection) -> list[date]:
        """The days that have a table now, ascending."""
        days = {self._day_of(name) for name in sa.inspect(conn).get_table_names()}
        days.discard(None)
        return sorted(d for d in days if d is not None)

    def all_tables(self, conn: sa.Connection) -> list[sa.Table]:
        return [self.table_for_day(day) for day in self.existing_days(conn)]

    def expected_keys(self, table: sa.Table) -> tuple[datetime | None, datetime | None]:
        day = self._day_of(table.name)
        if day is None:  # not a day table: nothing to expect
            return None, None
        return day_start(day), day_start(day + _ONE_DAY)

    def _laid_out_days(self, conn: sa.Connection) -> set[date]:
        return set(self.existing_days(conn))

    def _shard_name(self, day: date) -> str:
        return self.table_name(day)

    def segments(
        self, conn: sa.Connection, start: datetime | None, end: datetime | None
    ) -> list[Segment]:
        segments = []
        for day in self.existing_days(conn):
            first, after = day_start(day), day_start(day + _ONE_DAY)
            if (start is not None and after <= start) or (end is not None and first >= end):
                continue
            segments.append(
                Segment(
                    self.table_for_day(day),
                    start if start is not None and start > first else None,
                    end if end is not None and end < after else None,
                )
            )
        return segments

    def prepare_days(self, days: Collection[date], conn: sa.Connection | None) -> None:
        missing = [d for d in days if d not in self._known_days]
        if not missing:
            return
        if conn is not None and self._dialect.transactional_ddl:
            # SQLite: another connection could not write while the caller's transaction
            # holds the lock, so create in it; not remembered, as it may be rolled back.
            for day in missing:
                self._dialect.create_table(conn, self.table_for_day(day))
            return
        # MySQL: DDL commits the transaction it runs in, so it never runs in the caller's.
        with self.engine.begin() as ddl:
            for day in missing:
                self._dialect.create_table(ddl, self.table_for_day(day))
            created = [self.table_name(day) for day in missing]
            # Made just now, perhaps again after another process dropped it.
            self._ids_given.difference_update(created)
            self._ensure_ids(ddl, created)
        self._known_days.update(missing)

    def _layout(self, *, drop_expired: bool) -> MaintenanceReport:
        window = self._window()
        horizon = window[0]
        created: list[str] = []
        dropped: list[str] = []
        with self.engine.connect() as conn:
            with self._dialect.ddl_lock(
                conn, f"infsched_maint_{self.prefix}", MAINTENANCE_LOCK_TIMEOUT
            ):
                existing = self.existing_days(conn)
                self._refuse_nullable_marks(conn, [self.table_name(d) for d in existing])
                kept_days = [d for d in existing if d >= horizon]  # (the others are dropped)
                indexed = self._add_missing_indexes(conn, map(self.table_for_day, kept_days))
                for day in window:
                    if day not in existing:
                        self._dialect.create_table(conn, self.table_for_day(day))
                        created.append(self.table_name(day))
                expired = [d for d in existing if d < horizon] if drop_expired else []
                for day in expired:
                    conn.execute(DropTable(self.table_for_day(day), if_exists=True))
                    dropped.append(self.table_name(day))
                kept_days = sorted((set(existing) | set(window)) - set(expired))
                self._ensure_ids(conn, [self.table_name(d) for d in kept_days])
            conn.commit()
        for day in expired:
            self._known_days.discard(day)
            with self._tables_lock:
                self._forget(self._tables.pop(day))
        self._known_days.update(window)
        self._known_days.update(d for d in existing if d not in expired)
        kept = len([d for d in existing if d not in expired])
        return MaintenanceReport(tuple(created), tuple(dropped), kept, tuple(indexed))

    def status(self) -> list[ShardStatus]:
        with self.engine.connect() as conn:
            shards = [
                (self.table_name(day), day, Segment(self.table_for_day(day)))
                for day in self.existing_days(conn)
            ]
            return self._queries.shard_status(conn, shards)
