"""DayShardedRepository: a ShardingRepository over day tables or day partitions.

It composes three parts.  The backend (`MultiTableRepository`,
`PartitionedRepository`) is the `DayLayout`: which physical tables hold
which days (`segments`, `table_for_day`, `all_tables`), how a day is made
ready for rows (`prepare_days`), and how the tables or partitions are laid
out and maintained (`_layout`, `status`).  `EntityCrud` is what users do
with their entities; `JobMarks` is the engine's scheduling interface; both
run their queries through `SegmentQueries`.  What is left here is what both
backends share about their tables: building them, their id source,
maintenance and `check()`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from infsched.clock import require_utc
from infsched.entities import entity_spec
from infsched.errors import ConfigError, InvalidNameError
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import (
    EXAMPLE_IDS,
    LockedEntities,
    MaintenanceReport,
    MarkedEntity,
    ShardProblem,
    ShardStatus,
)
from infsched.repositories.entity_crud import EntityCrud
from infsched.repositories.entity_rows import EntityRows
from infsched.repositories.ids import FIRST_GENERATED_ID
from infsched.repositories.job_marks import JOB_AT, JobMarks
from infsched.repositories.segments import Segment, SegmentQueries, aware
from infsched.sentinel_time import EPOCH, EPOCH_TEXT, SentinelDateTime

T = TypeVar("T")
K = TypeVar("K", contravariant=True)

#: Seconds maintenance waits for another process's maintenance of the same tables.
MAINTENANCE_LOCK_TIMEOUT = 60.0
#: The largest id the database's id source hands out: the generator's ids lie above it.
DATABASE_IDS_MAX = FIRST_GENERATED_ID - 1


def missing_indexes(
    conn: sa.Connection, tables: Iterable[sa.Table]
) -> list[tuple[sa.Table, sa.Index]]:
    """(table, index) of each index declared on `tables` that the database's table lacks.

    A table that does not exist (dropped meanwhile by maintenance) lacks nothing.
    """
    missing: list[tuple[sa.Table, sa.Index]] = []
    inspector = sa.inspect(conn)
    for table in tables:
        try:
            present = {ix["name"] for ix in inspector.get_indexes(table.name)}
        except sa.exc.NoSuchTableError:
            continue
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            if index.name not in present:
                missing.append((table, index))
    return missing


def _job_at_column() -> sa.Column[datetime | None]:
    """The bookkeeping column: when the entity's job was made, EPOCH for not yet."""
    return sa.Column(JOB_AT, SentinelDateTime(), nullable=False, server_default=EPOCH_TEXT)


class DayShardedRepository(ABC, Generic[T, K]):
    """A ShardingRepository whose backend says where each day lives (a `DayLayout`)."""

    #: The backend's registered name.
    backend: ClassVar[str]

    def __init__(self, options: RepositoryOptions[T]) -> None:
        self.options = options
        self._spec = entity_spec(options.entity_type)  # type: ignore[arg-type]  # a class is hashable
        self._rows = EntityRows(self._spec)
        self._dialect = options.database.dialect
        self._metadata = sa.MetaData()
        self._id = self._spec.id_column.name
        self._key = self._spec.sharding_column.name
        self._queries = SegmentQueries(self._rows, self._dialect)
        self._crud: EntityCrud[T, K] = EntityCrud(options, self._queries, self)
        self._marks: JobMarks[T, K] = JobMarks(options, self._queries, self)
        self._started = False
        self._start_lock = threading.Lock()
        #: Tables whose id column this process saw drawing from the id source.
        self._ids_given: set[str] = set()

    # -- what the backends provide: the DayLayout --

    @abstractmethod
    def segments(
        self, conn: sa.Connection, start: datetime | None, end: datetime | None
    ) -> list[Segment]:
        """The tables holding [start, end) (naive UTC; None is unbounded), in key order."""

    @abstractmethod
    def table_for_day(self, day: date) -> sa.Table:
        """The table a row of `day` belongs in (which may not exist yet)."""

    @abstractmethod
    def prepare_days(self, days: Collection[date], conn: sa.Connection | None) -> None:
        """Make sure rows of `days` can be inserted, through `conn` if that is given."""

    @abstractmethod
    def all_tables(self, conn: sa.Connection) -> list[sa.Table]:
        """Every physical table that exists now, in day order."""

    @abstractmethod
    def expected_keys(self, table: sa.Table) -> tuple[datetime | None, datetime | None]:
        """The [start, end) (naive UTC; None: open) that the keys of `table`'s rows belong in."""

    def forget_day(self, day: date) -> None:
        """The table of `day` turned out not to exist; a backend with a cache drops it."""

    # -- and what only maintenance asks of them --

    @abstractmethod
    def _layout(self, *, drop_expired: bool) -> MaintenanceReport:
        """Create the tables or partitions of the window; drop expired ones if asked."""

    @abstractmethod
    def status(self) -> list[ShardStatus]:
        """Each table or partition with its row count and key range."""

    @abstractmethod
    def _laid_out_days(self, conn: sa.Connection) -> set[date]:
        """The days that have their own table or partition now."""

    @abstractmethod
    def _shard_name(self, day: date) -> str:
        """The name of `day`'s table or partition."""

    #: What a row outside `expected_keys` is called in a `ShardProblem`.
    _outside_kind: ClassVar[str] = "misrouted"

    # -- identity --

    @property
    def name(self) -> str:
        return self.options.name

    @property
    def entity_type(self) -> type[T]:
        return self.options.entity_type

    @property
    def engine(self) -> sa.Engine:
        return self.options.engine

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self._spec.name})"

    # -- time --

    def _today(self) -> date:
        return require_utc(self.options.clock.now(), "clock.now()").date()

    def retention_horizon(self) -> datetime:
        return datetime.combine(
            self._today() - timedelta(days=self.options.retention_days), time(), UTC
        )

    def _window(self) -> list[date]:
        """The days whose tables or partitions should exist now."""
        today = self._today()
        first = today - timedelta(days=self.options.retention_days)
        return [
            first + timedelta(days=i)
            for i in range((today - first).days + 1 + self.options.precreate_days)
        ]

    # -- tables --

    def _build_table(self, name: str, *, partitioned: bool) -> sa.Table:
        longest = self._dialect.max_identifier_length
        table = self._spec.table(
            self._metadata, name, primary_key_with_sharding=partitioned, max_name_length=longest
        )
        if self.options.scheduled:
            table.append_column(_job_at_column())
            # find_unscheduled reads "no job yet" rows in key order straight off this index.
            sa.Index(
                f"ix_{name}_job_at"[:longest],
                table.c[JOB_AT],
                table.c[self._key],
                table.c[self._id],
            )
        names = [str(ix.name) for ix in table.indexes]
        if len(set(names)) != len(names):
            raise InvalidNameError(
                f"table name {name!r} is too long to give its indexes distinct names "
                f"(at most {longest} characters each); choose a shorter repository or table name"
            )
        return table

    def _forget(self, table: sa.Table) -> None:
        """Drop a table's metadata once the table itself is dropped."""
        self._crud.forget(table)
        self._ids_given.discard(table.name)
        self._metadata.remove(table)

    def _refuse_nullable_marks(self, conn: sa.Connection, tables: Iterable[str]) -> None:
        """Refuse existing tables whose mark column still allows NULL.

        Tables made before 0.1 said "no job yet" with NULL; the fetcher now
        looks for EPOCH, and would pass over every such row without a word.
        """
        if not self.options.scheduled:
            return
        inspector = sa.inspect(conn)
        for name in tables:
            try:
                columns = inspector.get_columns(name)
            except sa.exc.NoSuchTableError:
                continue  # dropped meanwhile by another process's maintenance
            found = [c for c in columns if c["name"] == JOB_AT]
            if found and found[0]["nullable"]:
                alter = self._dialect.not_null_statement(conn, name, _job_at_column())
                raise ConfigError(
                    f"table {name!r} was made by an older infsched: its {JOB_AT} column "
                    "allows NULL, which this version no longer reads as 'no job yet'. "
                    f"Run: UPDATE {name} SET {JOB_AT} = '{EPOCH_TEXT}' WHERE {JOB_AT} IS NULL; "
                    f"then make the column NOT NULL DEFAULT '{EPOCH_TEXT}'"
                    + (f" ({alter})" if alter else "")
                )

    def _add_missing_indexes(self, conn: sa.Connection, tables: Iterable[sa.Table]) -> list[str]:
        """Add the declared indexes that existing `tables` lack; their ``table.index`` names.

        A table made by an older release keeps the indexes of its day: one
        declared since (the history's per-state index) would otherwise be
        missing from every table older than the upgrade, and its queries scan.
        """
        added: list[str] = []
        for table, index in missing_indexes(conn, tables):
            self._dialect.add_index(conn, index)
            added.append(f"{table.name}.{index.name}")
        return added

    # -- ids for rows other applications write --

    @property
    def id_source(self) -> str | None:
        """The sequence (or counter table) that hands out ids to plain SQL writers, if any.

        Only int ids of a scheduled repository have one: other applications write
        those rows.  Its ids run from 1 to DATABASE_IDS_MAX, below every generated id.
        """
        if not self.options.scheduled or self._spec.id_column.python_type is not int:
            return None
        return f"{self.options.table_name}_id_seq"

    def _ensure_ids(self, conn: sa.Connection, tables: Sequence[str]) -> None:
        """Create the id source and make `tables`' id column draw from it (where it can)."""
        source = self.id_source
        new = [t for t in tables if t not in self._ids_given]
        if source is None or not new:
            return
        # Once per table and process: DDL (even a no-op IF NOT EXISTS) and
        # information_schema reads are not free on a busy server.
        self._dialect.create_id_source(conn, source, DATABASE_IDS_MAX)
        self._dialect.default_ids(conn, source, new, self._id)
        self._ids_given.update(new)

    def ready(self) -> None:
        """Lay out the window once, at the first use."""
        if not self._started:
            with self._start_lock:
                if not self._started:
                    self._layout(drop_expired=False)
                    self._started = True

    def ready_beside(self, conn: sa.Connection | None) -> None:
        """`ready`, unless it would have to wait for the caller's transaction `conn`.

        On SQLite every transaction holds the database's write lock from its
        start (dialects/sqlite.py): laying out the window takes a connection of
        its own, which would wait for the caller's lock while the caller waits
        for it.  Reads there find the tables that exist; inserts create their
        rows' tables in the caller's transaction (prepare_days).
        """
        if conn is None or not self._dialect.transactional_ddl:
            self.ready()

    def maintain(self) -> MaintenanceReport:
        with self._start_lock:
            report = self._layout(drop_expired=True)
            self._started = True
        return report

    # -- check --

    def outside_days(self, table: sa.Table) -> sa.ColumnElement[bool] | None:
        """Rows of `table` whose key lies outside its days, or None if all keys belong."""
        lo, hi = self.expected_keys(table)
        key = table.c[self._key]
        outside = [
            *([key < lo] if lo is not None else []),
            *([key >= hi] if hi is not None else []),
        ]
        return sa.or_(*outside) if outside else None

    def check(self) -> list[ShardProblem]:
        """What can make a row run late, twice or never; [] when all is well.

        Reads only: rows outside their table's day (or before the retention
        horizon), days up to precreate_days ahead without their table or
        partition, and an id source that is missing or could meet generated ids.
        """
        today = self._today()
        problems: list[ShardProblem] = []
        with self.engine.connect() as conn:
            tables = self.all_tables(conn)
            for table in tables:
                problems.extend(self._rows_outside(conn, table))
            laid_out = self._laid_out_days(conn)
            for ahead in range(self.options.precreate_days + 1):
                day = today + timedelta(days=ahead)
                if day not in laid_out:
                    problems.append(
                        ShardProblem(
                            "missing_day",
                            self._shard_name(day),
                            f"day {day} has no table or partition {self._shard_name(day)} yet "
                            f"(precreate_days={self.options.precreate_days}); "
                            "`infsched partitions maintain` creates it",
                        )
                    )
            source = self.id_source
            if source is not None:
                for line in self._dialect.id_source_problems(
                    conn, source, DATABASE_IDS_MAX, [t.name for t in tables], self._id
                ):
                    problems.append(ShardProblem("id_source", source, line))
        return problems

    def _rows_outside(self, conn: sa.Connection, table: sa.Table) -> list[ShardProblem]:
        outside = self.outside_days(table)
        if outside is None:
            return []
        key, ident = table.c[self._key], table.c[self._id]
        unscheduled: sa.ColumnElement[Any] = sa.literal(0)
        if self.options.scheduled:
            unscheduled = sa.func.sum(sa.case((table.c[JOB_AT] == EPOCH, 1), else_=0))
        try:
            with self._dialect.statement_scope(conn):
                rows, waiting = conn.execute(
                    sa.select(sa.func.count(), unscheduled).select_from(table).where(outside)
                ).one()
                if not rows:
                    return []
                examples = conn.execute(
                    sa.select(ident).where(outside).order_by(key, ident).limit(EXAMPLE_IDS)
                ).scalars()
                example_ids = tuple(examples)
        except DBAPIError as exc:
            if not self._queries.missing(exc):
                raise
            return []  # dropped meanwhile
        lo, hi = self.expected_keys(table)
        waiting = int(waiting or 0)
        counted = f"{rows} row{'' if rows == 1 else 's'}"
        since, until = (value.isoformat() if value else "-" for value in (aware(lo), aware(hi)))
        if self._outside_kind == "misrouted":
            message = (
                f"{counted} of table {table.name} due outside its day "
                f"[{since}, {until}) ({waiting} without a job yet): the fetch finds and "
                "schedules them all the same, but they belong in the table of their own day"
            )
        else:
            message = (
                f"{counted} of table {table.name} due before the retention horizon "
                f"{since} ({waiting} without a job yet): the fetch schedules them (the misfire "
                "policy decides whether they run), and they are dropped with the oldest day"
            )
        return [
            ShardProblem(
                self._outside_kind,
                table.name,
                message,
                rows=int(rows),
                unscheduled=waiting,
                example_ids=example_ids,
            )
        ]

    # -- the entities: EntityCrud --

    def insert(self, entity: T, *, conn: sa.Connection | None = None) -> T:
        return self._crud.insert(entity, conn=conn)

    def insert_many(self, entities: Sequence[T], *, conn: sa.Connection | None = None) -> list[T]:
        return self._crud.insert_many(entities, conn=conn)

    def insert_from_select(self, conn: sa.Connection, day: date, rows: sa.Select[Any]) -> int:
        return self._crud.insert_from_select(conn, day, rows)

    def new_ids(self, count: int) -> list[int]:
        return self._crud.new_ids(count)

    def find_by_id(self, entity_id: K) -> T | None:
        return self._crud.find_by_id(entity_id)

    def find_by_id_and_date_range(self, entity_id: K, start: datetime, end: datetime) -> T | None:
        return self._crud.find_by_id_and_date_range(entity_id, start, end)

    def find_all_by_ids_and_date_range(
        self, ids: Iterable[K], start: datetime, end: datetime
    ) -> list[T]:
        return self._crud.find_all_by_ids_and_date_range(ids, start, end)

    def find_all_by_date_range(
        self, start: datetime, end: datetime, *, batch_size: int = 1000
    ) -> Iterator[T]:
        return self._crud.find_all_by_date_range(start, end, batch_size=batch_size)

    def find_all_before(self, end: datetime, *, batch_size: int = 1000) -> Iterator[T]:
        return self._crud.find_all_before(end, batch_size=batch_size)

    def find_all_after(self, start: datetime, *, batch_size: int = 1000) -> Iterator[T]:
        return self._crud.find_all_after(start, batch_size=batch_size)

    def find_all_by_column(
        self, column: str, value: Any, start: datetime, end: datetime, *, batch_size: int = 1000
    ) -> Iterator[T]:
        return self._crud.find_all_by_column(column, value, start, end, batch_size=batch_size)

    def count_by_date_range(self, start: datetime, end: datetime) -> int:
        return self._crud.count_by_date_range(start, end)

    def update_by_id(self, entity_id: K, values: Mapping[str, Any]) -> bool:
        return self._crud.update_by_id(entity_id, values)

    def update_by_id_and_date_range(
        self, entity_id: K, start: datetime, end: datetime, values: Mapping[str, Any]
    ) -> bool:
        return self._crud.update_by_id_and_date_range(entity_id, start, end, values)

    def delete_by_id(self, entity_id: K) -> bool:
        return self._crud.delete_by_id(entity_id)

    def delete_all_by_date_range(self, start: datetime, end: datetime) -> int:
        return self._crud.delete_all_by_date_range(start, end)

    # -- the engine's scheduling interface: JobMarks --

    def find_unscheduled(
        self, start: datetime, end: datetime, limit: int, *, conn: sa.Connection | None = None
    ) -> list[T]:
        return self._marks.find_unscheduled(start, end, limit, conn=conn)

    def lock_unscheduled(
        self, conn: sa.Connection, start: datetime, end: datetime, limit: int
    ) -> list[LockedEntities]:
        return self._marks.lock_unscheduled(conn, start, end, limit)

    def sources(
        self, locked: Sequence[LockedEntities]
    ) -> list[tuple[sa.Table, sa.ColumnElement[bool]]]:
        return self._marks.sources(locked)

    def read_locked(self, conn: sa.Connection, locked: Sequence[LockedEntities]) -> list[T]:
        return self._marks.read_locked(conn, locked)

    def mark_locked(
        self, conn: sa.Connection, locked: Sequence[LockedEntities], when: datetime
    ) -> None:
        self._marks.mark_locked(conn, locked, when)

    def mark_keys_scheduled(
        self, conn: sa.Connection, keys: Sequence[tuple[Any, datetime]], when: datetime
    ) -> None:
        self._marks.mark_keys_scheduled(conn, keys, when)

    def mark_scheduled(self, conn: sa.Connection, entities: Sequence[T], when: datetime) -> None:
        self._marks.mark_scheduled(conn, entities, when)

    def find_with_job_mark(self, entity_id: K) -> MarkedEntity[T] | None:
        return self._marks.find_with_job_mark(entity_id)

    def mark_if_unscheduled(self, conn: sa.Connection, entity_id: K, when: datetime) -> bool:
        return self._marks.mark_if_unscheduled(conn, entity_id, when)
