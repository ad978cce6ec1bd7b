"""The statements that differ between databases, behind one small interface.

Code elsewhere is handed a `Dialect` in its `infsched.database.Database` and
never tests the database's name itself.  Each database has one module here
(mysql.py, sqlite.py) implementing the interface, registered through the
``register_dialects`` hook (builtin_dialects.py for these two); a database without
RANGE partitions has no `range_partitioning`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, ClassVar, Protocol

import attrs
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from infsched.dburl import UrlScheme
from infsched.errors import InfschedError


class LockTimeoutError(InfschedError):
    """A named lock stayed held by another session for longer than we would wait."""


@attrs.frozen
class RangePartition:
    """One RANGE partition: rows below `upper` (None: MAXVALUE), above the partition below."""

    name: str
    upper: datetime | None  # naive UTC; None is MAXVALUE, the catch-all


class RangePartitioning(Protocol):
    """RANGE COLUMNS partitioning of a table on one DATETIME column."""

    def partition_clause(self, column: str, partitions: Sequence[RangePartition]) -> str:
        """The ``PARTITION BY RANGE COLUMNS(..) (..)`` suffix of a CREATE TABLE."""
        ...

    def partitions(self, conn: sa.Connection, table: str) -> list[RangePartition] | None:
        """The table's partitions in order, [] if it is not partitioned, None if it is absent."""
        ...

    def partitioned_on(self, conn: sa.Connection, table: str) -> str | None:
        """The partitioning method and expression, e.g. ``RANGE COLUMNS `due```."""
        ...

    def split(
        self, conn: sa.Connection, table: str, source: str, into: Sequence[RangePartition]
    ) -> None:
        """Split partition `source` into `into`, whose last one keeps `source`'s upper bound."""
        ...

    def add(self, conn: sa.Connection, table: str, partition: RangePartition) -> None:
        """Add a partition above the highest one."""
        ...

    def drop(self, conn: sa.Connection, table: str, names: Sequence[str]) -> None:
        """Drop partitions with their rows (metadata only; no row deletes)."""
        ...

    def explain_partitions(
        self, conn: sa.Connection, query: sa.Select[*tuple[Any, ...]]
    ) -> list[str]:
        """The partitions the server would read for `query`."""
        ...


#: Inserts rows (value sequences in the inserter's column order) on a connection,
#: in multi-row statements.
RowInserter = Callable[[sa.Connection, Sequence[Sequence[Any]]], None]


class Dialect(ABC):
    """What one database does differently; stateless, one instance per database kind."""

    #: The name it is registered under; URLs of its `url_scheme` select it.
    name: ClassVar[str]
    #: SQLAlchemy dialect names this class serves (for an engine made elsewhere).
    names: ClassVar[tuple[str, ...]]
    #: How its URLs are written: the row of `infsched.dburl`'s driver table it gives.
    url_scheme: ClassVar[UrlScheme]
    #: The repository backend of a repository that names none, and of the job history.
    default_repository_backend: ClassVar[str]
    #: True when DDL joins the open transaction (SQLite); False when it commits it (MySQL).
    transactional_ddl: ClassVar[bool]
    #: True when several transactions can write at once, each skipping rows the
    #: others lock (MySQL); False when one writer holds the whole database (SQLite).
    concurrent_writers: ClassVar[bool]
    #: RANGE partitioning, or None where the database has none.
    range_partitioning: RangePartitioning | None = None

    def engine_options(self, pool_size: int) -> dict[str, Any]:
        """`sqlalchemy.create_engine`'s keyword arguments: the pool and the session set-up.

        ``connect_args`` given by a caller are added to (and win over) the ones here.
        """
        return {}

    @abstractmethod
    def configure_engine(self, engine: sa.Engine) -> None:
        """Set up every connection and transaction of `engine` the way the scheduler needs.

        Called once by `infsched.database.create_engine`.
        """

    @abstractmethod
    def create_table(self, conn: sa.Connection, table: sa.Table, suffix: str = "") -> None:
        """CREATE TABLE IF NOT EXISTS with its indexes; safe when two sessions race.

        `suffix` (table options such as a partition clause) is appended as is.
        """

    @abstractmethod
    def named_lock(
        self, conn: sa.Connection, name: str, timeout: float
    ) -> AbstractContextManager[None]:
        """Hold a lock called `name` on `conn` (the same connection that then runs DDL).

        Raises LockTimeoutError when another session holds it beyond `timeout` seconds.
        """

    def missing_database(self, url: sa.URL) -> str | None:
        """Why the database `url` names does not exist, found without connecting, or None.

        Read-only commands ask first where connecting would create the database
        (SQLite creates a missing file), so that reading creates nothing.
        """
        return None

    @abstractmethod
    def add_index(self, conn: sa.Connection, index: sa.Index) -> None:
        """Add `index` to its existing table without blocking writes; nothing if it is there.

        Tables made by an older release lack indexes declared since: maintenance adds them.
        """

    @abstractmethod
    def indexes_used(self, conn: sa.Connection, query: sa.Select[Any]) -> list[str]:
        """The indexes the database's plan for `query` reads (EXPLAIN), in plan order."""

    @abstractmethod
    def is_missing_table(self, exc: DBAPIError) -> bool:
        """Whether `exc` says a table does not exist (e.g. dropped by maintenance meanwhile)."""

    @abstractmethod
    def is_duplicate_key(self, exc: DBAPIError) -> bool:
        """Whether `exc` is a primary or unique key violation."""

    @abstractmethod
    def row_inserter(self, table: sa.Table, columns: Sequence[str]) -> RowInserter:
        """A prepared multi-row INSERT of `columns` into `table`, for rows given as sequences."""

    # -- the job store's statements --

    @abstractmethod
    def insert_ignore(self, table: sa.Table, keys: Sequence[str]) -> sa.Insert:
        """An INSERT that skips rows whose unique `keys` exist (idempotent batches)."""

    @abstractmethod
    def current_timestamp(self) -> sa.ColumnElement[datetime] | None:
        """The database's UTC clock with microseconds, or None where the node's clock serves.

        Nodes compare leases against this clock, so their own clocks may disagree.
        """

    @abstractmethod
    def lock_skipping_locked(self, query: sa.Select[Any]) -> sa.Select[Any]:
        """`query` locking the rows it returns and skipping rows others hold (claims).

        Where the database has no row locks (SQLite), the transaction itself must
        already hold the write lock from its first statement (`configure_engine`).
        """

    # -- building jobs from entity rows inside the database (INSERT … SELECT) --

    @abstractmethod
    def job_key(
        self, repository: str, entity_id: sa.ColumnElement[Any], due: sa.ColumnElement[Any]
    ) -> sa.ColumnElement[str]:
        """SQL computing `infsched.jobstore.base.job_key` from an entity row, to the character."""

    @abstractmethod
    def json_field(self, column: sa.ColumnElement[Any], python_type: type) -> sa.ColumnElement[Any]:
        """`column` as it must appear in a JSON snapshot that `EntitySpec.from_json` reads back."""

    def json_array_agg(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """An aggregate giving the column's values of a group as one JSON array (text)."""
        return sa.func.json_arrayagg(column, type_=sa.Text())

    def json_array(self, *values: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """A JSON array of the values (JSON_ARRAY in MariaDB, json_array in SQLite)."""
        return sa.func.json_array(*values, type_=sa.Text())

    @abstractmethod
    def json_document(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """A text column holding JSON, so that json_array nests it as JSON, not as a string."""

    def json_object(
        self, fields: Sequence[tuple[str, sa.ColumnElement[Any]]]
    ) -> sa.ColumnElement[str]:
        """A JSON object text of (name, value) pairs (JSON_OBJECT in MariaDB and SQLite alike)."""
        args = [part for name, value in fields for part in (sa.literal(name), value)]
        return sa.func.json_object(*args, type_=sa.Text())

    @abstractmethod
    def datetime_from_micros(self, micros: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """The naive UTC DATETIME, to the microsecond, of microseconds since 1970 (NULL: NULL)."""

    @abstractmethod
    def json_rows(
        self, document: str, columns: Sequence[tuple[str, sa.types.TypeEngine[Any]]]
    ) -> sa.Subquery:
        """A derived table named ``v`` of the rows of `document`, a JSON array of arrays.

        Many rows' values travel as one bound string (one escape instead of one
        per value): the recorder joins it with the job rows to write history.
        """

    # -- ids for rows that other applications write with plain SQL --

    @abstractmethod
    def create_id_source(self, conn: sa.Connection, name: str, maximum: int) -> None:
        """Create the id source `name` if absent: ids 1..`maximum`, each handed out once.

        A MariaDB SEQUENCE where there is one, else a one-row counter table
        (`counter_table`) that a writer advances in its own transaction.
        """

    @abstractmethod
    def default_ids(
        self, conn: sa.Connection, name: str, tables: Sequence[str], column: str
    ) -> list[str]:
        """Make `column` of `tables` default to the next id of source `name`, where the
        database can (a MariaDB sequence); the tables that were changed."""

    @abstractmethod
    def id_source_problems(
        self, conn: sa.Connection, name: str, maximum: int, tables: Sequence[str], column: str
    ) -> list[str]:
        """What keeps source `name` from handing out ids 1..`maximum` to `tables`, one line each."""

    @staticmethod
    def counter_table(name: str, maximum: int) -> sa.Table:
        """The one-row counter a writer draws ids from where there are no sequences.

        ``UPDATE name SET next_id = next_id + n`` takes n ids in the writer's
        transaction (the row lock, or SQLite's write lock, serialises writers);
        the CHECK refuses an id beyond `maximum` instead of letting it meet
        the ids infsched generates itself.
        """
        return sa.Table(
            name,
            sa.MetaData(),
            sa.Column("slot", sa.Integer(), primary_key=True, autoincrement=False),
            sa.Column("next_id", sa.BigInteger(), nullable=False),
            sa.CheckConstraint("slot = 1", name=f"ck_{name}_slot"[:64]),
            sa.CheckConstraint(
                f"next_id BETWEEN 1 AND {maximum + 1}", name=f"ck_{name}_next_id"[:64]
            ),
        )

    def _create_counter(self, conn: sa.Connection, name: str, maximum: int) -> None:
        table = self.counter_table(name, maximum)
        self.create_table(conn, table)
        if conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 0:
            # IGNORE: a process laying out the same repository may have seeded it meanwhile.
            conn.execute(self.insert_ignore(table, ["slot"]).values(slot=1, next_id=1))

    def _counter_problems(self, conn: sa.Connection, name: str, maximum: int) -> list[str]:
        try:
            found = conn.execute(
                sa.text(f"SELECT next_id FROM {self._quote(conn, name)}")
            ).scalars()
            values = list(found)
        except DBAPIError:
            return [
                f"id counter table {name!r} is missing: `infsched partitions maintain` makes it"
            ]
        if len(values) != 1:
            return [f"id counter table {name!r} holds {len(values)} rows instead of one"]
        if values[0] > maximum + 1:
            return [
                f"id counter table {name!r} is at {values[0]}, beyond {maximum}: its ids may "
                "meet those infsched generates"
            ]
        return []

    @staticmethod
    def _quote(conn: sa.Connection, name: str) -> str:
        return conn.dialect.identifier_preparer.quote(name)
