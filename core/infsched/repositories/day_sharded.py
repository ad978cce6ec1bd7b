"""DayShardedRepository: everything both backends do the same way.

A backend says which physical tables hold which days (`_segments`,
`_table_for_day`), makes sure a day can take rows (`_prepare_days`), and
lays out and maintains its tables or partitions (`_layout`, `status`).  The
queries, inserts, updates and deletes are written once, here, against
`Segment`s: a table plus the part of the requested range it must filter on.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar, Generic, TypeVar

import attrs
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from infsched.clock import from_utc_naive, require_utc
from infsched.dialects import DatabaseErrorKind
from infsched.dialects.base import RowInserter
from infsched.entities import entity_spec
from infsched.errors import (
    ConfigError,
    EntityError,
    InvalidArgumentError,
    InvalidNameError,
    TruncatedResultError,
)
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import (
    EXAMPLE_IDS,
    DuplicateEntityError,
    LockedEntities,
    MaintenanceReport,
    MarkedEntity,
    RetentionError,
    ShardProblem,
    ShardStatus,
)
from infsched.repositories.entity_rows import EntityRows
from infsched.repositories.ids import FIRST_GENERATED_ID
from infsched.sentinel_time import EPOCH, EPOCH_TEXT, SentinelDateTime

T = TypeVar("T")
K = TypeVar("K", contravariant=True)

#: The engine's bookkeeping column: when a job was created for the entity; EPOCH (read
#: as None) until then.  Never NULL: marking a row then updates it in place (sentinel_time).
JOB_AT = "infsched_job_at"
#: Rows per INSERT call (an executemany that PyMySQL sends as a multi-row INSERT).
ROWS_PER_STATEMENT = 1000
#: Ids per ``IN (...)`` list.
IN_LIST_SIZE = 1000
#: Tables per ``UNION ALL`` statement.
UNION_SIZE = 100
#: Seconds maintenance waits for another process's maintenance of the same tables.
MAINTENANCE_LOCK_TIMEOUT = 60.0
#: The largest id the database's id source hands out: the generator's ids lie above it.
DATABASE_IDS_MAX = FIRST_GENERATED_ID - 1

#: A SELECT of any columns.
AnySelect = sa.Select[*tuple[Any, ...]]
#: An entity's values in column order.
Row = list[Any]
Condition = Callable[[sa.Table], Sequence[sa.ColumnElement[bool]]]


def day_start(day: date) -> datetime:
    """00:00 of `day`, as the naive UTC the DATETIME columns hold."""
    return datetime.combine(day, time())


def aware(value: datetime | None) -> datetime | None:
    return None if value is None else from_utc_naive(value)


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


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


class _KeyClash(Exception):
    """A primary key refused an INSERT; the id is named once the transaction allows."""

    def __init__(self, error: IntegrityError, ids: list[Any]) -> None:
        super().__init__(str(error))
        self.error = error
        self.ids = ids


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


class DayShardedRepository(ABC, Generic[T, K]):
    """The part of a ShardingRepository that does not depend on how days are stored."""

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
        self._selected = self._rows.columns
        self._id_at = self._selected.index(self._id)
        self._key_at = self._selected.index(self._key)
        self._inserters: dict[str, RowInserter] = {}
        self._started = False
        self._start_lock = threading.Lock()
        #: Tables whose id column this process saw drawing from the id source.
        self._ids_given: set[str] = set()

    # -- what the backends provide --

    @abstractmethod
    def _segments(
        self, conn: sa.Connection, start: datetime | None, end: datetime | None
    ) -> list[Segment]:
        """The tables holding [start, end) (naive UTC; None is unbounded), in key order."""

    @abstractmethod
    def _table_for_day(self, day: date) -> sa.Table:
        """The table a row of `day` belongs in (which may not exist yet)."""

    @abstractmethod
    def _prepare_days(self, days: Collection[date], conn: sa.Connection | None) -> None:
        """Make sure rows of `days` can be inserted, through `conn` if that is given."""

    @abstractmethod
    def _layout(self, *, drop_expired: bool) -> MaintenanceReport:
        """Create the tables or partitions of the window; drop expired ones if asked."""

    @abstractmethod
    def status(self) -> list[ShardStatus]:
        """Each table or partition with its row count and key range."""

    @abstractmethod
    def _all_tables(self, conn: sa.Connection) -> list[sa.Table]:
        """Every physical table that exists now, in day order."""

    @abstractmethod
    def _expected_keys(self, table: sa.Table) -> tuple[datetime | None, datetime | None]:
        """The [start, end) (naive UTC; None: open) that the keys of `table`'s rows belong in."""

    @abstractmethod
    def _laid_out_days(self, conn: sa.Connection) -> set[date]:
        """The days that have their own table or partition now."""

    #: What a row outside `_expected_keys` is called in a `ShardProblem`.
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
        self._inserters.pop(table.name, None)
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

    def _ready(self) -> None:
        """Lay out the window once, at the first use."""
        if not self._started:
            with self._start_lock:
                if not self._started:
                    self._layout(drop_expired=False)
                    self._started = True

    def _ready_beside(self, conn: sa.Connection | None) -> None:
        """`_ready`, unless it would have to wait for the caller's transaction `conn`.

        On SQLite every transaction holds the database's write lock from its
        start (dialects/sqlite.py): laying out the window takes a connection of
        its own, which would wait for the caller's lock while the caller waits
        for it.  Reads there find the tables that exist; inserts create their
        rows' tables in the caller's transaction (_prepare_days).
        """
        if conn is None or not self._dialect.transactional_ddl:
            self._ready()

    def maintain(self) -> MaintenanceReport:
        with self._start_lock:
            report = self._layout(drop_expired=True)
            self._started = True
        return report

    # -- checks --

    def _range(self, start: datetime | None, end: datetime | None) -> tuple[Any, Any] | None:
        """Naive UTC bounds of [start, end), or None for an empty range."""
        lo = None if start is None else require_utc(start, "start").replace(tzinfo=None)
        hi = None if end is None else require_utc(end, "end").replace(tzinfo=None)
        if lo is not None and hi is not None and lo >= hi:
            return None
        return lo, hi

    def _check_id(self, entity_id: object) -> Any:
        if entity_id is None:
            raise EntityError(f"{self._spec.name}.{self._id}: an id is required, got None")
        self._spec.id_column.check(self._spec.name, entity_id)
        return entity_id

    def _refuse_expired(self, key_value: datetime, horizon: datetime) -> None:
        if key_value < horizon:
            raise RetentionError(
                f"{self._spec.name}.{self._key}: {key_value.isoformat()}Z is before the retention "
                f"horizon {horizon.isoformat()}Z of repository {self.name!r} "
                f"(retention_days={self.options.retention_days}); its day is dropped, "
                "so the entity is refused rather than stored and lost"
            )

    # -- running selects over segments --

    def _missing(self, exc: DBAPIError) -> bool:
        return self._dialect.classify(exc) is DatabaseErrorKind.MISSING_TABLE

    def _select(self, segment: Segment, condition: Condition | None) -> AnySelect:
        table = segment.table
        query = sa.select(*(table.c[n] for n in self._selected)).where(*segment.bounds(self._key))
        return query.where(*condition(table)) if condition else query

    def _union(self, conn: sa.Connection, selects: Sequence[AnySelect]) -> list[Any]:
        """Rows of all `selects`, UNION ALL'ed in one round trip per UNION_SIZE tables.

        A table dropped meanwhile (maintenance) holds no rows: it is skipped.
        """
        rows: list[Any] = []
        for chunk in _chunks(selects, UNION_SIZE):
            statement: sa.Executable = chunk[0] if len(chunk) == 1 else sa.union_all(*chunk)
            try:
                rows.extend(conn.execute(statement).mappings())
            except DBAPIError as exc:
                if not self._missing(exc):
                    raise
                rows.extend(self._each_skipping_missing(conn, chunk))
        return rows

    def _each_skipping_missing(
        self, conn: sa.Connection, selects: Sequence[AnySelect]
    ) -> list[Any]:
        rows: list[Any] = []
        for select in selects:
            try:
                rows.extend(conn.execute(select).mappings())
            except DBAPIError as exc:
                if not self._missing(exc):
                    raise
        return rows

    def _entities(self, rows: Iterable[Mapping[str, Any]]) -> list[T]:
        ordered = sorted(rows, key=lambda r: (r[self._key], r[self._id]))
        return [self._rows.from_row(r) for r in ordered]

    def _find(self, start: datetime | None, end: datetime | None, condition: Condition) -> list[T]:
        bounds = self._range(start, end)
        if bounds is None:
            return []
        self._ready()
        with self.engine.connect() as conn:
            segments = self._segments(conn, *bounds)
            return self._entities(self._union(conn, [self._select(s, condition) for s in segments]))

    def _stream(
        self,
        start: datetime | None,
        end: datetime | None,
        condition: Condition | None,
        batch_size: int,
    ) -> Iterator[T]:
        """Keyset pages of (key, id) > the last row seen; a connection per page, none between."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(
                f"batch_size must be a whole number >= 1, got {batch_size!r}"
            )
        bounds = self._range(start, end)
        if bounds is None:
            return
        self._ready()
        with self.engine.connect() as conn:
            segments = self._segments(conn, *bounds)
        for segment in segments:
            key, ident = segment.table.c[self._key], segment.table.c[self._id]
            first = self._select(segment, condition).order_by(key, ident).limit(batch_size)
            query = first
            while True:
                with self.engine.connect() as conn:
                    try:
                        page = conn.execute(query).mappings().all()
                    except DBAPIError as exc:
                        if not self._missing(exc):
                            raise
                        page = []
                for row in page:
                    yield self._rows.from_row(row)
                if len(page) < batch_size:
                    break
                last_key, last_id = page[-1][self._key], page[-1][self._id]
                query = first.where(key >= last_key, sa.or_(key > last_key, ident > last_id))

    # -- inserts --

    def insert(self, entity: T, *, conn: sa.Connection | None = None) -> T:
        return self.insert_many([entity], conn=conn)[0]

    def insert_many(self, entities: Sequence[T], *, conn: sa.Connection | None = None) -> list[T]:
        """Check every entity, give ids to those without, then write all in one transaction.

        Rows go out in one multi-row INSERT per table and ROWS_PER_STATEMENT
        rows, all in one transaction: a failure leaves nothing written.  Ids
        the caller supplied are first looked up across all the repository's
        days, because neither a per-day table nor a partitioned primary key
        (id, key) can make them unique by itself; generated ids are unique by
        construction and skip that look-up.
        """
        if not entities:
            return []
        stored, by_day, supplied = self._rows_by_day(entities)  # every check before any SQL
        self._ready_beside(conn)
        self._prepare_days(by_day.keys(), conn)
        if conn is not None:
            try:
                self._write(conn, by_day, supplied)
            except _KeyClash as clash:
                # Still inside the caller's transaction: look among the refused
                # statement's ids, which differ from those written before it.
                raise self._named_duplicate(conn, clash.ids, clash.error) from None
            return stored
        try:
            with self.engine.begin() as own:
                self._write(own, by_day, supplied)
        except _KeyClash as clash:
            # Rolled back: any id of this call found now was stored by someone else.
            every = [row[self._id_at] for rows in by_day.values() for row in rows]
            with self.engine.connect() as fresh:
                raise self._named_duplicate(fresh, every, clash.error) from None
        return stored

    def _rows_by_day(
        self, entities: Sequence[T]
    ) -> tuple[list[T], dict[date, list[Row]], list[Any]]:
        horizon = self.retention_horizon().replace(tzinfo=None)
        key_at, id_at = self._key_at, self._id_at
        to_values = self._rows.to_values
        rows = [to_values(e) for e in entities]
        stored = list(entities)
        supplied: list[Any] = []
        unnamed: list[int] = []
        by_day: dict[date, list[Row]] = defaultdict(list)
        for position, row in enumerate(rows):
            key_value = row[key_at]
            if key_value < horizon:
                self._refuse_expired(key_value, horizon)
            if row[id_at] is None:
                unnamed.append(position)
            else:
                supplied.append(row[id_at])
            by_day[key_value.date()].append(row)
        if len(set(supplied)) != len(supplied):
            self._refuse_repeated(supplied)
        if unnamed:
            if self._spec.id_column.python_type is not int:
                raise EntityError(
                    f"{self._spec.name}.{self._id}: a str id must be supplied; only int ids "
                    "are generated"
                )
            new_ids = self.options.id_generator.next_ids(len(unnamed))
            with_id, ident = self._rows.with_field, self._id
            for position, new_id in zip(unnamed, new_ids, strict=True):
                rows[position][id_at] = new_id
                stored[position] = with_id(stored[position], ident, new_id)
        return stored, by_day, supplied

    def _refuse_repeated(self, ids: Sequence[Any]) -> None:
        seen: set[Any] = set()
        for entity_id in ids:
            if entity_id in seen:
                raise DuplicateEntityError(
                    f"{self._spec.name} id {entity_id!r} appears twice in one insert_many call; "
                    "nothing of it was written",
                    entity_id,
                )
            seen.add(entity_id)

    def _inserter(self, table: sa.Table) -> RowInserter:
        inserter = self._inserters.get(table.name)
        if inserter is None:
            inserter = self._inserters[table.name] = self._dialect.row_inserter(
                table, self._selected
            )
        return inserter

    def _write(
        self,
        conn: sa.Connection,
        by_day: Mapping[date, list[Row]],
        supplied: Sequence[Any],
    ) -> None:
        if supplied:
            taken = self._existing_ids(conn, supplied)
            if taken:
                raise self._duplicate(min(taken))
        # Days that share a table (all of them, partitioned) share its statements.
        by_table: dict[str, tuple[sa.Table, list[date], list[Row]]] = {}
        for day in sorted(by_day):
            table = self._table_for_day(day)
            _, days, table_rows = by_table.setdefault(table.name, (table, [], []))
            days.append(day)
            table_rows.extend(by_day[day])
        for table, days, all_rows in by_table.values():
            inserter = self._inserter(table)
            for chunk in _chunks(all_rows, ROWS_PER_STATEMENT):
                try:
                    self._insert_rows(conn, days, inserter, chunk)
                except IntegrityError as exc:
                    if self._dialect.classify(exc) is not DatabaseErrorKind.DUPLICATE_KEY:
                        raise
                    raise _KeyClash(exc, [row[self._id_at] for row in chunk]) from None

    def _named_duplicate(
        self, conn: sa.Connection, ids: Sequence[Any], error: IntegrityError
    ) -> DuplicateEntityError:
        taken = self._existing_ids(conn, ids)
        if taken:
            return self._duplicate(min(taken))
        return DuplicateEntityError(
            f"{self._spec.name}: an id of this insert is already stored ({error.orig})", None
        )

    def _insert_rows(
        self,
        conn: sa.Connection,
        days: Sequence[date],
        inserter: RowInserter,
        rows: Sequence[Row],
    ) -> None:
        """One multi-row INSERT; a day table dropped meanwhile is made again (or refused)."""
        try:
            inserter(conn, rows)
        except DBAPIError as exc:
            if not self._missing(exc):
                raise
            # Dropped meanwhile: past retention now, or made in a rolled-back transaction.
            horizon = self.retention_horizon().replace(tzinfo=None)
            for day in days:
                self._refuse_expired(day_start(day), horizon)
                self._forget_day(day)
            self._prepare_days(days, conn)
            inserter(conn, rows)

    def _forget_day(self, day: date) -> None:
        """The table of `day` turned out not to exist; a backend with a cache drops it."""

    def _duplicate(self, entity_id: Any) -> DuplicateEntityError:
        return DuplicateEntityError(
            f"{self._spec.name} id {entity_id!r} is already stored in repository {self.name!r}; "
            "ids are unique across all days, and nothing of this insert was written",
            entity_id,
        )

    def _existing_ids(self, conn: sa.Connection, ids: Sequence[Any]) -> set[Any]:
        found: set[Any] = set()
        segments = self._segments(conn, None, None)
        for chunk in _chunks(list(ids), IN_LIST_SIZE):
            selects = [
                sa.select(s.table.c[self._id]).where(s.table.c[self._id].in_(chunk))
                for s in segments
            ]
            found.update(row[self._id] for row in self._union(conn, selects))
        return found

    # -- reads --

    def find_by_id(self, entity_id: K) -> T | None:
        return self._find_by_id(entity_id, None, None)

    def find_by_id_and_date_range(self, entity_id: K, start: datetime, end: datetime) -> T | None:
        return self._find_by_id(entity_id, start, end)

    def _find_by_id(self, entity_id: K, start: datetime | None, end: datetime | None) -> T | None:
        wanted = self._check_id(entity_id)
        found = self._find(start, end, lambda t: [t.c[self._id] == wanted])
        return found[0] if found else None

    def find_all_by_ids_and_date_range(
        self, ids: Iterable[K], start: datetime, end: datetime
    ) -> list[T]:
        wanted = list(dict.fromkeys(self._check_id(i) for i in ids))
        found: list[T] = []
        for chunk in _chunks(wanted, IN_LIST_SIZE):

            def among(
                table: sa.Table, chunk: Sequence[Any] = chunk
            ) -> list[sa.ColumnElement[bool]]:
                return [table.c[self._id].in_(chunk)]

            found.extend(self._find(start, end, among))
        key = self._spec.sharding_column.name
        return sorted(found, key=lambda e: (getattr(e, key), getattr(e, self._id)))

    def find_all_by_date_range(
        self, start: datetime, end: datetime, *, batch_size: int = 1000
    ) -> Iterator[T]:
        require_utc(start, "start"), require_utc(end, "end")  # refuse now, not at first next()
        return self._stream(start, end, None, batch_size)

    def find_all_before(self, end: datetime, *, batch_size: int = 1000) -> Iterator[T]:
        require_utc(end, "end")
        return self._stream(None, end, None, batch_size)

    def find_all_after(self, start: datetime, *, batch_size: int = 1000) -> Iterator[T]:
        require_utc(start, "start")
        return self._stream(start, None, None, batch_size)

    def find_all_by_column(
        self, column: str, value: Any, start: datetime, end: datetime, *, batch_size: int = 1000
    ) -> Iterator[T]:
        require_utc(start, "start"), require_utc(end, "end")
        db_value = self._rows.value_to_db(column, value)
        return self._stream(start, end, lambda t: [t.c[column] == db_value], batch_size)

    def count_by_date_range(self, start: datetime, end: datetime) -> int:
        bounds = self._range(start, end)
        if bounds is None:
            return 0
        self._ready()
        with self.engine.connect() as conn:
            selects = [
                sa.select(sa.func.count().label("n"))
                .select_from(s.table)
                .where(*s.bounds(self._key))
                for s in self._segments(conn, *bounds)
            ]
            return sum(int(row["n"]) for row in self._union(conn, selects))

    # -- the engine's bookkeeping --

    def _require_scheduled(self) -> None:
        if not self.options.scheduled:
            raise EntityError(
                f"repository {self.name!r} was built with scheduled=False: it keeps no "
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
        bounds = self._range(start, end)
        if bounds is None or limit <= 0:
            return []
        self._ready_beside(conn)
        if conn is None:
            with self.engine.connect() as own:
                return self._unscheduled(own, bounds, limit, lock=False)
        return self._unscheduled(conn, bounds, limit, lock=True)

    def _unscheduled(
        self, conn: sa.Connection, bounds: tuple[Any, Any], limit: int, *, lock: bool
    ) -> list[T]:
        found: list[T] = []
        for segment in self._scan_segments(conn, bounds):
            table = segment.table
            query = (
                self._select(segment, lambda t: [t.c[JOB_AT] == EPOCH])
                .order_by(table.c[self._key], table.c[self._id])
                .limit(limit - len(found))
            )
            if lock:
                query = self._dialect.lock_skipping_locked(query)
            found.extend(self._rows.from_row(r) for r in self._each_skipping_missing(conn, [query]))
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
        bounds = self._range(start, end)
        if bounds is None or limit <= 0:
            return []
        self._ready_beside(conn)
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
                count, first, last, ids = conn.execute(summary).one()
            except DBAPIError as exc:
                if not self._missing(exc):
                    raise
                continue
            if not count:
                continue
            locked = self._locked_ids(count, ids)
            first, last = self._rows_datetime(first), self._rows_datetime(last)
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
        horizon = self.retention_horizon().replace(tzinfo=None)
        lower = start if start is not None and start > horizon else None
        return [Segment(table, lower, end) for table in self._all_tables(conn)]

    def _outside(self, table: sa.Table) -> sa.ColumnElement[bool] | None:
        """Rows of `table` whose key lies outside its days, or None if all keys belong."""
        lo, hi = self._expected_keys(table)
        key = table.c[self._key]
        outside = [
            *([key < lo] if lo is not None else []),
            *([key >= hi] if hi is not None else []),
        ]
        return sa.or_(*outside) if outside else None

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
        lo, hi = self._expected_keys(table)
        if (lo is None or first >= lo) and (hi is None or last < hi):
            return ()
        outside = self._outside(table)
        assert outside is not None  # a bound was crossed, so there is one
        key, ident = table.c[self._key], table.c[self._id]
        found: list[Any] = []
        for chunk in _chunks(locked, IN_LIST_SIZE):
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
        return self._entities(self._union(conn, selects))

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
                f"repository {self.name!r}: {count} entities were locked but the database "
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
            for chunk in _chunks(lot.ids, IN_LIST_SIZE):
                found.append(
                    (
                        lot.table,
                        sa.and_(
                            lot.table.c[self._id].in_(list(chunk)),
                            key >= lot.first,
                            key <= lot.last,
                        ),
                    )
                )
        return found

    def insert_from_select(self, conn: sa.Connection, day: date, rows: sa.Select[Any]) -> int:
        """Insert what `rows` selects into `day`'s table or partition, on `conn`.

        `rows` yields every column in the entity's field order, with ids from
        `new_ids` and sharding keys on `day`: nothing is checked in Python,
        which is the point (the engine's history writer uses it).
        """
        self._ready_beside(conn)
        self._prepare_days([day], conn)
        table = self._table_for_day(day)
        return int(
            conn.execute(table.insert().from_select(list(self._rows.columns), rows)).rowcount
        )

    def new_ids(self, count: int) -> list[int]:
        """`count` fresh 64-bit ids from the repository's generator."""
        return list(self.options.id_generator.next_ids(count))

    def mark_scheduled(self, conn: sa.Connection, entities: Sequence[T], when: datetime) -> None:
        # Only the id and the sharding key matter here: a full to_row would check
        # every field of entities that were just read from the table.
        keys = [
            (
                self._check_id(getattr(entity, self._id)),
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
                self._table_for_day(day),
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
        for table in self._all_tables(conn):
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
                matched += conn.execute(
                    table.update().where(where).values({JOB_AT: stamp})
                ).rowcount
            except DBAPIError as exc:
                if not self._missing(exc):
                    raise
        return matched

    def find_with_job_mark(self, entity_id: K) -> MarkedEntity[T] | None:
        self._require_scheduled()
        wanted = self._check_id(entity_id)
        bounds = self._range(None, None)
        if bounds is None:
            return None
        self._ready()
        with self.engine.connect() as conn:
            selects = [
                self._select(s, lambda t: [t.c[self._id] == wanted]).add_columns(s.table.c[JOB_AT])
                for s in self._segments(conn, *bounds)
            ]
            rows = self._union(conn, selects)
        if not rows:
            return None
        row = min(rows, key=lambda r: r[self._key])
        return MarkedEntity(self._rows.from_row(row), aware(row[JOB_AT]))

    def mark_if_unscheduled(self, conn: sa.Connection, entity_id: K, when: datetime) -> bool:
        self._require_scheduled()
        wanted = self._check_id(entity_id)
        bounds = self._range(None, None)
        self._ready()
        found = None if bounds is None else self._locate(conn, wanted, *bounds)
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

    # -- updates and deletes --

    def _changes(self, values: Mapping[str, Any]) -> dict[str, Any]:
        if not values:
            raise EntityError(f"{self._spec.name}: nothing to update, the values are empty")
        changes: dict[str, Any] = {}
        for field, value in values.items():
            if field == self._id:
                raise EntityError(f"{self._spec.name}.{field}: the id cannot be updated")
            changes[field] = self._rows.value_to_db(field, value)
        if self._key in changes:
            self._refuse_expired(changes[self._key], self.retention_horizon().replace(tzinfo=None))
            if self.options.scheduled:
                # A new due time needs a new job: the entity is offered to the engine again.
                changes[JOB_AT] = None
        return changes

    def _locate(
        self, conn: sa.Connection, entity_id: Any, start: datetime | None, end: datetime | None
    ) -> tuple[sa.Table, datetime] | None:
        """The table holding `entity_id` within the range, and its key value."""
        segments = self._segments(conn, start, end)
        tables = {s.table.name: s.table for s in segments}
        selects = [
            sa.select(sa.literal(s.table.name).label("shard"), s.table.c[self._key])
            .where(*s.bounds(self._key))
            .where(s.table.c[self._id] == entity_id)
            for s in segments
        ]
        rows = sorted(self._union(conn, selects), key=lambda r: r[self._key])
        if not rows:
            return None
        return tables[rows[0]["shard"]], rows[0][self._key]

    def update_by_id(self, entity_id: K, values: Mapping[str, Any]) -> bool:
        return self._update(entity_id, None, None, values)

    def update_by_id_and_date_range(
        self, entity_id: K, start: datetime, end: datetime, values: Mapping[str, Any]
    ) -> bool:
        return self._update(entity_id, start, end, values)

    def _update(
        self,
        entity_id: K,
        start: datetime | None,
        end: datetime | None,
        values: Mapping[str, Any],
    ) -> bool:
        wanted = self._check_id(entity_id)
        changes = self._changes(values)
        bounds = self._range(start, end)
        if bounds is None:
            return False
        self._ready()
        new_day = changes[self._key].date() if self._key in changes else None
        if new_day is not None:
            self._prepare_days([new_day], None)
        with self.engine.begin() as conn:
            found = self._locate(conn, wanted, *bounds)
            if found is None:
                return False
            table, key_value = found
            where = [table.c[self._id] == wanted, table.c[self._key] == key_value]
            target = table if new_day is None else self._table_for_day(new_day)
            if target is table:
                conn.execute(table.update().where(*where).values(changes))
                return True
            # A new day in another table: the row moves, in this one transaction.
            columns = [c.name for c in table.columns]
            conn.execute(target.insert().from_select(columns, sa.select(*table.c).where(*where)))
            conn.execute(target.update().where(target.c[self._id] == wanted).values(changes))
            conn.execute(table.delete().where(*where))
            return True

    def delete_by_id(self, entity_id: K) -> bool:
        wanted = self._check_id(entity_id)
        self._ready()
        with self.engine.begin() as conn:
            found = self._locate(conn, wanted, None, None)
            if found is None:
                return False
            table, key_value = found
            conn.execute(
                table.delete().where(table.c[self._id] == wanted, table.c[self._key] == key_value)
            )
            return True

    def delete_all_by_date_range(self, start: datetime, end: datetime) -> int:
        bounds = self._range(start, end)
        if bounds is None:
            return 0
        self._ready()
        deleted = 0
        with self.engine.begin() as conn:
            for segment in self._segments(conn, *bounds):
                statement = segment.table.delete().where(*segment.bounds(self._key))
                try:
                    deleted += conn.execute(statement).rowcount
                except DBAPIError as exc:
                    if not self._missing(exc):
                        raise
        return deleted

    # -- check --

    @abstractmethod
    def _shard_name(self, day: date) -> str:
        """The name of `day`'s table or partition."""

    def check(self) -> list[ShardProblem]:
        """What can make a row run late, twice or never; [] when all is well.

        Reads only: rows outside their table's day (or before the retention
        horizon), days up to precreate_days ahead without their table or
        partition, and an id source that is missing or could meet generated ids.
        """
        today = self._today()
        problems: list[ShardProblem] = []
        with self.engine.connect() as conn:
            tables = self._all_tables(conn)
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
        outside = self._outside(table)
        if outside is None:
            return []
        key, ident = table.c[self._key], table.c[self._id]
        unscheduled: sa.ColumnElement[Any] = sa.literal(0)
        if self.options.scheduled:
            unscheduled = sa.func.sum(sa.case((table.c[JOB_AT] == EPOCH, 1), else_=0))
        try:
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
            if not self._missing(exc):
                raise
            return []  # dropped meanwhile
        lo, hi = self._expected_keys(table)
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

    # -- status --

    def _shard_status(
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
        counted = {row["shard"]: row for row in self._union(conn, selects)}
        statuses = []
        for name, day, _segment in shards:
            row = counted.get(name)
            statuses.append(
                ShardStatus(
                    name=name,
                    day=day,
                    rows=int(row["n"]) if row else 0,
                    earliest=aware(self._rows_datetime(row["earliest"])) if row else None,
                    latest=aware(self._rows_datetime(row["latest"])) if row else None,
                )
            )
        return statuses

    @staticmethod
    def _rows_datetime(value: Any) -> datetime | None:
        # SQLite returns MIN()/MAX() of a DATETIME as the stored text.
        if isinstance(value, str):
            return datetime.fromisoformat(value)
        return value  # type: ignore[no-any-return]
