"""EntityCrud: a repository's entities in and out, written once for every backend.

Inserts, look-ups, streams, counts, updates and deletes, against the
`Segment`s a `DayLayout` says hold a range.  Every entity is checked before
any SQL runs, and nothing of a refused call is written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from infsched.clock import require_utc
from infsched.conflict_retries import retrying_conflicts
from infsched.dialects import DatabaseErrorKind
from infsched.dialects.base import RowInserter
from infsched.errors import EntityError, InvalidArgumentError
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import DuplicateEntityError, RetentionError
from infsched.repositories.day_layout import DayLayout
from infsched.repositories.job_marks import JOB_AT
from infsched.repositories.segments import (
    IN_LIST_SIZE,
    Condition,
    SegmentQueries,
    chunks,
    day_start,
    naive_range,
)

T = TypeVar("T")
K = TypeVar("K", contravariant=True)

#: Rows per INSERT call (an executemany that PyMySQL sends as a multi-row INSERT).
ROWS_PER_STATEMENT = 1000

#: An entity's values in column order.
Row = list[Any]


class _KeyClash(Exception):
    """A primary key refused an INSERT; the id is named once the transaction allows."""

    def __init__(self, error: IntegrityError, ids: list[Any]) -> None:
        super().__init__(str(error))
        self.error = error
        self.ids = ids


class _TableGone(Exception):
    """A table was dropped under our own transaction's statement: it is redone whole."""

    def __init__(self, error: DBAPIError, days: Sequence[date]) -> None:
        super().__init__(str(error))
        self.error = error
        self.days = days


class EntityCrud(Generic[T, K]):
    """Insert, find, stream, count, update and delete the entities of one repository."""

    def __init__(
        self, options: RepositoryOptions[T], queries: SegmentQueries, layout: DayLayout
    ) -> None:
        self.options = options
        self._queries = queries
        self._layout = layout
        self._rows = queries.rows
        self._spec = queries.rows.spec
        self._dialect = queries.dialect
        self._id = self._spec.id_column.name
        self._key = self._spec.sharding_column.name
        self._selected = self._rows.columns
        self._id_at = self._selected.index(self._id)
        self._key_at = self._selected.index(self._key)
        self._inserters: dict[str, RowInserter] = {}

    @property
    def _name(self) -> str:
        return self.options.name

    def forget(self, table: sa.Table) -> None:
        """Drop what is kept about a table once the table itself is dropped."""
        self._inserters.pop(table.name, None)

    def refuse_expired(self, key_value: datetime, horizon: datetime) -> None:
        if key_value < horizon:
            raise RetentionError(
                f"{self._spec.name}.{self._key}: {key_value.isoformat()}Z is before the retention "
                f"horizon {horizon.isoformat()}Z of repository {self._name!r} "
                f"(retention_days={self.options.retention_days}); its day is dropped, "
                "so the entity is refused rather than stored and lost"
            )

    # -- reading over segments --

    def _find(self, start: datetime | None, end: datetime | None, condition: Condition) -> list[T]:
        bounds = naive_range(start, end)
        if bounds is None:
            return []
        self._layout.ready()
        queries = self._queries
        with self.options.engine.connect() as conn:
            segments = self._layout.segments(conn, *bounds)
            return queries.entities(
                queries.union(conn, [queries.select(s, condition) for s in segments])
            )

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
        bounds = naive_range(start, end)
        if bounds is None:
            return
        self._layout.ready()
        engine = self.options.engine
        with engine.connect() as conn:
            segments = self._layout.segments(conn, *bounds)
        for segment in segments:
            key, ident = segment.table.c[self._key], segment.table.c[self._id]
            first = self._queries.select(segment, condition).order_by(key, ident).limit(batch_size)
            query = first
            while True:
                with engine.connect() as conn:
                    try:
                        page = conn.execute(query).mappings().all()
                    except DBAPIError as exc:
                        if not self._queries.missing(exc):
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
        self._layout.ready_beside(conn)
        self._layout.prepare_days(by_day.keys(), conn)
        if conn is not None:
            try:
                self._write(conn, by_day, supplied, guarded=True)
            except _KeyClash as clash:
                # Still inside the caller's transaction: look among the refused
                # statement's ids, which differ from those written before it.
                raise self._named_duplicate(conn, clash.ids, clash.error) from None
            return stored
        engine = self.options.engine

        def write() -> None:
            # A conflict rolled all of it back (a Galera member's DDL or another member's
            # write aborts it): the whole call is written again.
            with engine.begin() as own:
                self._write(own, by_day, supplied, guarded=False)

        try:
            try:
                retrying_conflicts(write)
            except _TableGone as gone:
                # Rolled back: the days are made again and the whole call is written once more.
                self._remake(gone.days, None)
                try:
                    retrying_conflicts(write)
                except _TableGone as again:
                    raise again.error from None
        except _KeyClash as clash:
            # Rolled back: any id of this call found now was stored by someone else.
            every = [row[self._id_at] for rows in by_day.values() for row in rows]
            with engine.connect() as fresh:
                raise self._named_duplicate(fresh, every, clash.error) from None
        return stored

    def _rows_by_day(
        self, entities: Sequence[T]
    ) -> tuple[list[T], dict[date, list[Row]], list[Any]]:
        horizon = self._layout.retention_horizon().replace(tzinfo=None)
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
                self.refuse_expired(key_value, horizon)
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
        *,
        guarded: bool,
    ) -> None:
        """Write the rows on `conn`; `guarded` when a failed INSERT must leave `conn` usable.

        The caller's transaction is guarded: there a clash is named, or a table made
        again, before it goes on.  Our own is not (it is rolled back and done again
        whole instead), so a database whose failed statement aborts the transaction
        needs no savepoint round trips around each INSERT.
        """
        if supplied:
            try:
                taken = self._existing_ids(conn, supplied, guarded=guarded)
            except DBAPIError as exc:
                if guarded or not self._queries.missing(exc):
                    raise
                raise _TableGone(exc, []) from None
            if taken:
                raise self._duplicate(min(taken))
        # Days that share a table (all of them, partitioned) share its statements.
        by_table: dict[str, tuple[sa.Table, list[date], list[Row]]] = {}
        for day in sorted(by_day):
            table = self._layout.table_for_day(day)
            _, days, table_rows = by_table.setdefault(table.name, (table, [], []))
            days.append(day)
            table_rows.extend(by_day[day])
        for table, days, all_rows in by_table.values():
            inserter = self._inserter(table)
            for chunk in chunks(all_rows, ROWS_PER_STATEMENT):
                try:
                    self._insert_rows(conn, days, inserter, chunk, guarded=guarded)
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
        *,
        guarded: bool,
    ) -> None:
        """One multi-row INSERT; a day table dropped meanwhile is made again (or refused)."""
        try:
            if not guarded:
                inserter(conn, rows)
                return
            # A clash is then named, or the table made again, in the caller's transaction.
            with self._dialect.statement_scope(conn):
                inserter(conn, rows)
        except DBAPIError as exc:
            if not self._queries.missing(exc):
                raise
            if not guarded:
                raise _TableGone(exc, days) from None
            self._remake(days, conn)
            inserter(conn, rows)

    def _remake(self, days: Sequence[date], conn: sa.Connection | None) -> None:
        """Days whose table was dropped meanwhile: past retention now (refused), or made
        in a rolled-back transaction (made again)."""
        horizon = self._layout.retention_horizon().replace(tzinfo=None)
        for day in days:
            self.refuse_expired(day_start(day), horizon)
            self._layout.forget_day(day)
        self._layout.prepare_days(days, conn)

    def _duplicate(self, entity_id: Any) -> DuplicateEntityError:
        return DuplicateEntityError(
            f"{self._spec.name} id {entity_id!r} is already stored in repository {self._name!r}; "
            "ids are unique across all days, and nothing of this insert was written",
            entity_id,
        )

    def _existing_ids(
        self, conn: sa.Connection, ids: Sequence[Any], *, guarded: bool = True
    ) -> set[Any]:
        found: set[Any] = set()
        segments = self._layout.segments(conn, None, None)
        for chunk in chunks(list(ids), IN_LIST_SIZE):
            selects = [
                sa.select(s.table.c[self._id]).where(s.table.c[self._id].in_(chunk))
                for s in segments
            ]
            found.update(
                row[self._id] for row in self._queries.union(conn, selects, guarded=guarded)
            )
        return found

    def insert_from_select(self, conn: sa.Connection, day: date, rows: sa.Select[Any]) -> int:
        """Insert what `rows` selects into `day`'s table or partition, on `conn`.

        `rows` yields every column in the entity's field order, with ids from
        `new_ids` and sharding keys on `day`: nothing is checked in Python,
        which is the point (the engine's history writer uses it).
        """
        self._layout.ready_beside(conn)
        self._layout.prepare_days([day], conn)
        table = self._layout.table_for_day(day)
        # preserve_rowcount: an INSERT's count survives its closed cursor (psycopg resets it).
        statement = table.insert().from_select(list(self._selected), rows)
        return int(conn.execute(statement.execution_options(preserve_rowcount=True)).rowcount)

    def new_ids(self, count: int) -> list[int]:
        """`count` fresh 64-bit ids from the repository's generator."""
        return list(self.options.id_generator.next_ids(count))

    # -- reads --

    def find_by_id(self, entity_id: K) -> T | None:
        return self._find_by_id(entity_id, None, None)

    def find_by_id_and_date_range(self, entity_id: K, start: datetime, end: datetime) -> T | None:
        return self._find_by_id(entity_id, start, end)

    def _find_by_id(self, entity_id: K, start: datetime | None, end: datetime | None) -> T | None:
        wanted = self._rows.check_id(entity_id)
        found = self._find(start, end, lambda t: [t.c[self._id] == wanted])
        return found[0] if found else None

    def find_all_by_ids_and_date_range(
        self, ids: Iterable[K], start: datetime, end: datetime
    ) -> list[T]:
        wanted = list(dict.fromkeys(self._rows.check_id(i) for i in ids))
        found: list[T] = []
        for chunk in chunks(wanted, IN_LIST_SIZE):

            def among(
                table: sa.Table, chunk: Sequence[Any] = chunk
            ) -> list[sa.ColumnElement[bool]]:
                return [table.c[self._id].in_(chunk)]

            found.extend(self._find(start, end, among))
        key = self._key
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
        bounds = naive_range(start, end)
        if bounds is None:
            return 0
        self._layout.ready()
        with self.options.engine.connect() as conn:
            selects = [
                sa.select(sa.func.count().label("n"))
                .select_from(s.table)
                .where(*s.bounds(self._key))
                for s in self._layout.segments(conn, *bounds)
            ]
            return sum(int(row["n"]) for row in self._queries.union(conn, selects))

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
            horizon = self._layout.retention_horizon().replace(tzinfo=None)
            self.refuse_expired(changes[self._key], horizon)
            if self.options.scheduled:
                # A new due time needs a new job: the entity is offered to the engine again.
                changes[JOB_AT] = None
        return changes

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
        wanted = self._rows.check_id(entity_id)
        changes = self._changes(values)
        bounds = naive_range(start, end)
        if bounds is None:
            return False
        layout = self._layout
        layout.ready()
        new_day = changes[self._key].date() if self._key in changes else None
        if new_day is not None:
            layout.prepare_days([new_day], None)
        with self.options.engine.begin() as conn:
            found = self._queries.locate(conn, layout.segments(conn, *bounds), wanted)
            if found is None:
                return False
            table, key_value = found
            where = [table.c[self._id] == wanted, table.c[self._key] == key_value]
            target = table if new_day is None else layout.table_for_day(new_day)
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
        wanted = self._rows.check_id(entity_id)
        self._layout.ready()
        with self.options.engine.begin() as conn:
            found = self._queries.locate(conn, self._layout.segments(conn, None, None), wanted)
            if found is None:
                return False
            table, key_value = found
            conn.execute(
                table.delete().where(table.c[self._id] == wanted, table.c[self._key] == key_value)
            )
            return True

    def delete_all_by_date_range(self, start: datetime, end: datetime) -> int:
        bounds = naive_range(start, end)
        if bounds is None:
            return 0
        self._layout.ready()
        deleted = 0
        with self.options.engine.begin() as conn:
            for segment in self._layout.segments(conn, *bounds):
                statement = segment.table.delete().where(*segment.bounds(self._key))
                try:
                    with self._dialect.statement_scope(conn):
                        deleted += conn.execute(statement).rowcount
                except DBAPIError as exc:
                    if not self._queries.missing(exc):
                        raise
        return deleted
