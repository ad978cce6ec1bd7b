"""PartitionedRepository: one table, one range partition per UTC day.

For a database whose dialect has `range_partitioning`.  The table is
partitioned on the sharding key: partition ``pYYYYMMDD`` holds the day's
rows (below the next midnight), and the catch-all ``pmax`` on top holds
anything later, so an insert for any future day succeeds.

Its primary key is (id, key): a partitioned table needs the partitioning
column in every unique key.  Maintenance makes the window's new days above
the highest (`RangePartitioning.ensure`: cheap while the catch-all is empty,
rows already in it for the new days move) and drops the days past retention
(`drop_below`), never deleting rows one by one.  A range predicate on the
key is pruned by the server to the partitions of its days.  How a database
does each is its dialect's (dialects/mysql.py: RANGE COLUMNS, REORGANIZE
PARTITION, DROP PARTITION; dialects/postgresql_partitions.py: declarative
partitions, a DEFAULT catch-all, ATTACH PARTITION, DROP TABLE).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from infsched.dialects import RangePartition, RangePartitioning
from infsched.errors import ConfigError
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import MaintenanceReport, ShardStatus
from infsched.repositories.day_sharded import MAINTENANCE_LOCK_TIMEOUT, DayShardedRepository, K, T
from infsched.repositories.segments import Segment, day_start, naive_range

CATCH_ALL = "pmax"
_DAY_PARTITION = re.compile(r"^p(\d{8})$")
_ONE_DAY = timedelta(days=1)


def partition_name(day: date) -> str:
    return f"p{day:%Y%m%d}"


class PartitionedRepository(DayShardedRepository[T, K]):
    """Entities in one table partitioned by the UTC day of their sharding key."""

    backend = "partitioned"

    def __init__(self, options: RepositoryOptions[T]) -> None:
        super().__init__(options)
        partitioning = self._dialect.range_partitioning
        if partitioning is None:
            raise ConfigError(
                f"repository {options.name!r}: the partitioned backend needs a database with "
                f"RANGE partitions; {self._dialect.title} has none. "
                "Use the multi_table backend (one table per day) there"
            )
        self._partitioning: RangePartitioning = partitioning
        self.table = self._build_table(options.table_name, partitioned=True)

    def table_for_day(self, day: date) -> sa.Table:
        return self.table

    # The database puts every row into the partition of its key, so no row can be in the
    # wrong day; what plain SQL can still do is write a row due before the retention
    # horizon, which lands in the lowest partition.
    _outside_kind = "before_horizon"

    def all_tables(self, conn: sa.Connection) -> list[sa.Table]:
        return [self.table]

    def expected_keys(self, table: sa.Table) -> tuple[datetime | None, datetime | None]:
        return self.retention_horizon().replace(tzinfo=None), None

    def _laid_out_days(self, conn: sa.Connection) -> set[date]:
        return {self._day_partition(p) for p in self._existing(conn) or [] if p.upper is not None}

    def _shard_name(self, day: date) -> str:
        return partition_name(day)

    def segments(
        self, conn: sa.Connection, start: datetime | None, end: datetime | None
    ) -> list[Segment]:
        return [Segment(self.table, start, end)]

    def prepare_days(self, days: Collection[date], conn: sa.Connection | None) -> None:
        """Nothing to do: a day without its own partition goes to the catch-all."""

    def ready_beside(self, conn: sa.Connection | None) -> None:
        """`ready`, also beside the caller's transaction, as no table is made in it.

        A database with RANGE partitions lets several transactions write at
        once, so the layout's own connection does not wait for the caller's
        (PostgreSQL's DDL is transactional too, which makes multi_table create
        its days in the caller's transaction instead).
        """
        self.ready()

    def _day_partition(self, partition: RangePartition) -> date:
        """The day of a pYYYYMMDD partition; ConfigError for a partition we did not make."""
        match = _DAY_PARTITION.match(partition.name)
        day = None
        if match is not None:
            try:
                day = datetime.strptime(match.group(1), "%Y%m%d").date()
            except ValueError:
                day = None
        if day is None or partition.upper != day_start(day + _ONE_DAY):
            raise ConfigError(
                f"table {self.table.name!r} has partition {partition.name!r} "
                f"(below {partition.upper}), which is not a day partition pYYYYMMDD below the "
                "next midnight; it was not made by infsched, so it is left alone and refused"
            )
        return day

    def _existing(self, conn: sa.Connection) -> list[RangePartition] | None:
        """The table's partitions, None if the table does not exist; refuses a foreign table."""
        partitions = self._partitioning.partitions(conn, self.table.name)
        if partitions is None:
            return None
        method = self._partitioning.partitioned_on(conn, self.table.name)
        expected = self._partitioning.scheme(self._key)
        if not partitions or method != expected:
            raise ConfigError(
                f"table {self.table.name!r} exists but is not partitioned by {expected} "
                f"(found: {method or 'no partitions'}); rename or drop it, or give the "
                "repository another table name"
            )
        return partitions

    def _layout(self, *, drop_expired: bool) -> MaintenanceReport:
        window = self._window()
        horizon = window[0]
        created: list[RangePartition] = []
        indexed: list[str] = []
        table = self.table.name
        parts = self._partitioning
        with self.engine.connect() as conn:
            with self._dialect.ddl_lock(conn, f"infsched_maint_{table}", MAINTENANCE_LOCK_TIMEOUT):
                existing = self._existing(conn)
                if existing is None:
                    created = [
                        RangePartition(partition_name(d), day_start(d + _ONE_DAY)) for d in window
                    ]
                    created.append(RangePartition(CATCH_ALL, None))
                    parts.create_table(conn, self.table, self._key, created)
                    existing = []
                    before = []
                else:
                    self._refuse_nullable_marks(conn, [table])
                    before = [self._day_partition(p) for p in existing if p.upper is not None]
                    indexed = self._add_missing_indexes(conn, [self.table])
                    new = self._new_partitions(before, window)
                    created = parts.ensure(conn, table, existing, new, CATCH_ALL)
                expired: list[RangePartition] = []
                if drop_expired:
                    expired = parts.drop_below(
                        conn, table, [*existing, *created], day_start(horizon)
                    )
                self._ensure_ids(conn, [table])
            conn.commit()
        dropped = {self._day_partition(p) for p in expired}
        return MaintenanceReport(
            tuple(p.name for p in created),
            tuple(p.name for p in expired),
            len([d for d in before if d not in dropped]),
            tuple(indexed),
        )

    @staticmethod
    def _new_partitions(days: list[date], window: list[date]) -> list[RangePartition]:
        """Day partitions to make, always above the highest one.

        After a pause longer than the retention, the days between the highest
        partition and the window get one partition (named for the day before
        the window) that the same maintenance run drops; no partition is ever
        added below an existing one.
        """
        highest = max(days) if days else None
        wanted = [d for d in window if highest is None or d > highest]
        if not wanted:
            return []
        new = []
        if highest is not None and wanted[0] > highest + _ONE_DAY:
            gap = wanted[0] - _ONE_DAY
            new.append(RangePartition(partition_name(gap), day_start(wanted[0])))
        new.extend(RangePartition(partition_name(d), day_start(d + _ONE_DAY)) for d in wanted)
        return new

    def partitions(self) -> list[RangePartition]:
        """The table's partitions now, in order ([] before the table exists)."""
        with self.engine.connect() as conn:
            return self._existing(conn) or []

    def explain_partitions(self, start: datetime, end: datetime) -> list[str]:
        """The partitions the server reads for a range query on [start, end)."""
        bounds = naive_range(start, end)
        if bounds is None:
            return []
        query = self._queries.select(Segment(self.table, *bounds), None)
        with self.engine.connect() as conn:
            return self._partitioning.explain_partitions(conn, query)

    def status(self) -> list[ShardStatus]:
        shards: list[tuple[str, date | None, Segment]] = []
        lower: datetime | None = None
        with self.engine.connect() as conn:
            for partition in self._existing(conn) or []:
                day = None if partition.upper is None else self._day_partition(partition)
                shards.append((partition.name, day, Segment(self.table, lower, partition.upper)))
                lower = partition.upper
            return self._queries.shard_status(conn, shards)
