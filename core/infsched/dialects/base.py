"""The statements that differ between databases, behind one small interface.

Code elsewhere is handed a `Dialect` in its `infsched.database.Database` and
never tests the database's name itself.  Each database has one module here
(mysql.py, postgresql.py, sqlite.py) implementing the interface: its statements, the types of
the column kinds (infsched.column_types), what its errors mean (`classify`),
its identifier length, its URLs (`url_scheme`); a database without RANGE
partitions has no `range_partitioning`.  A dialect is registered through the
``register_dialects`` hook (builtin_dialects.py for these three).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any, ClassVar, Protocol

import attrs
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, CreateTable

from infsched.column_types import ColumnKind
from infsched.dburl import UrlScheme
from infsched.errors import InfschedError


class LockTimeoutError(InfschedError):
    """A named lock stayed held by another session for longer than we would wait."""


class DatabaseErrorKind(enum.Enum):
    """What a database error means to the scheduler, whichever database raised it."""

    #: The database rolled the transaction back to break a deadlock.
    DEADLOCK = "deadlock"
    #: The transaction could not be serialized with a concurrent one and was rolled back
    #: (PostgreSQL's SERIALIZABLE or REPEATABLE READ; a Galera certification conflict).
    SERIALIZATION_FAILURE = "serialization failure"
    #: A lock stayed held by another transaction longer than the database waits.
    LOCK_TIMEOUT = "lock timeout"
    #: A primary or unique key violation.
    DUPLICATE_KEY = "duplicate key"
    #: The table does not exist (e.g. a day's table dropped by maintenance meanwhile).
    MISSING_TABLE = "missing table"
    #: The connection broke (server gone, session killed); the pool discards it.
    LOST_CONNECTION = "lost connection"
    #: A Galera member refused or rolled back a transaction that a write replicated from
    #: another member had touched (certification, or a brute-force abort); nothing of it
    #: was written.
    CERTIFICATION_CONFLICT = "certification conflict"
    #: The member is up but not serving (a Galera member that left the primary component,
    #: or is still joining): the connection goes to another member.
    MEMBER_NOT_READY = "member not ready"

    @property
    def is_conflict(self) -> bool:
        """A lock conflict: the database asks for the transaction to be tried again."""
        return self in (
            DatabaseErrorKind.DEADLOCK,
            DatabaseErrorKind.SERIALIZATION_FAILURE,
            DatabaseErrorKind.LOCK_TIMEOUT,
            DatabaseErrorKind.CERTIFICATION_CONFLICT,
        )


@attrs.frozen
class MemberStatus:
    """What a server says of itself as one member of a replicated database."""

    #: Its name in the cluster (Galera's wsrep_node_name); None for a plain server.
    name: str | None = None
    #: Whether it serves reads and writes now.
    ready: bool = True
    #: Why it does not, for the log (its state as the server names it).
    why: str = ""


@attrs.frozen
class RangePartition:
    """One partition: the rows below `upper` that the partition below does not hold."""

    name: str
    upper: datetime | None  # naive UTC; None for the catch-all above every bound


class RangePartitioning(Protocol):
    """A table split by ranges of one DATETIME column, with a catch-all above the highest.

    The shape is what every partitioning engine can do: make the table with
    its partitions, list them, make sure new ranges exist above the highest,
    drop the ranges below a bound (metadata only, no row deletes), and say
    which partitions a query reads.  The catch-all (a MAXVALUE partition, a
    DEFAULT partition) takes a row above every bound, so an insert for any
    future day succeeds; it gives up the rows of a range made later.
    """

    def scheme(self, column: str) -> str:
        """How `partitioned_on` describes a table this engine partitions on `column`."""
        ...

    def create_table(
        self,
        conn: sa.Connection,
        table: sa.Table,
        column: str,
        partitions: Sequence[RangePartition],
    ) -> None:
        """CREATE TABLE `table` partitioned on `column` into `partitions`, the catch-all last."""
        ...

    def partitions(self, conn: sa.Connection, table: str) -> list[RangePartition] | None:
        """The table's partitions in order, [] if it is not partitioned, None if it is absent."""
        ...

    def partitioned_on(self, conn: sa.Connection, table: str) -> str | None:
        """The table's partitioning method and expression, None if it has none."""
        ...

    def ensure(
        self,
        conn: sa.Connection,
        table: str,
        existing: Sequence[RangePartition],
        new: Sequence[RangePartition],
        catch_all: str,
    ) -> list[RangePartition]:
        """Make the ranges `new` and a catch-all exist on top of the table's `existing` ones.

        `existing` is the table's partitions as `partitions` read them; `new`,
        in order, lie above all of them.  A table without a catch-all gets one
        named `catch_all`.  Rows the catch-all held for the new ranges move
        into them.  Returns the partitions made, in order, the catch-all last.
        """
        ...

    def drop_below(
        self, conn: sa.Connection, table: str, partitions: Sequence[RangePartition], bound: datetime
    ) -> list[RangePartition]:
        """Drop the table's `partitions` wholly below `bound`, rows and all; return them."""
        ...

    def explain_partitions(
        self, conn: sa.Connection, query: sa.Select[*tuple[Any, ...]]
    ) -> list[str]:
        """The partitions the server would read for `query`."""
        ...


#: Inserts rows (value sequences in the inserter's column order) on a connection,
#: in multi-row statements.
RowInserter = Callable[[sa.Connection, Sequence[Sequence[Any]]], None]


def row_binder(
    types: Sequence[sa.types.TypeEngine[Any]],
) -> Callable[[sa.Connection, Sequence[Sequence[Any]]], list[tuple[Any, ...]]]:
    """Rows (value sequences of `types`) as the driver takes them, for SQL written by hand.

    Only the types that need it are processed: JSON needs its serialiser, a
    sentinel time its sentinel; drivers send a bool themselves.
    """
    processors: list[Callable[[Any], Any] | None] | None = None

    def bind(conn: sa.Connection, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        nonlocal processors
        if processors is None:
            processors = [
                None
                if isinstance(t, sa.Boolean)
                else t.dialect_impl(conn.dialect).bind_processor(conn.dialect)
                for t in types
            ]
        if any(processors):
            return [
                tuple(v if p is None else p(v) for p, v in zip(processors, row, strict=True))
                for row in rows
            ]
        return [tuple(row) for row in rows]

    return bind


def executemany_inserter(sql: str, types: Sequence[sa.types.TypeEngine[Any]]) -> RowInserter:
    """A RowInserter sending `sql` (the driver's %s placeholders) through the driver's executemany.

    Rows go as tuples, skipping the per-row dict handling of a Core insert
    (~15% of the time on MySQL).
    """
    bind = row_binder(types)

    def insert(conn: sa.Connection, rows: Sequence[Sequence[Any]]) -> None:
        conn.exec_driver_sql(sql, bind(conn, rows))

    return insert


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
    #: The database's name for people, in messages (``MySQL/MariaDB``).
    title: ClassVar[str]
    #: True when DDL joins the open transaction (SQLite); False when it commits it (MySQL).
    transactional_ddl: ClassVar[bool]
    #: True when several transactions can write at once, each skipping rows the
    #: others lock (MySQL); False when one writer holds the whole database (SQLite).
    concurrent_writers: ClassVar[bool]
    #: RANGE partitioning, or None where the database has none.
    range_partitioning: RangePartitioning | None = None
    #: The longest table, index or constraint name the database takes.
    max_identifier_length: ClassVar[int]
    #: The session setting that caps `json_array_agg`'s result, for messages; None if nothing does.
    aggregate_length_setting: ClassVar[str | None] = None

    def column_type(self, kind: ColumnKind[Any]) -> sa.types.TypeEngine[Any] | None:
        """The type this database stores a column of `kind` in; None for the kind's generic one.

        infsched.column_types asks this when a table is compiled for the database.
        """
        return None

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

    def member_status(self, dbapi_connection: Any) -> MemberStatus:
        """What the server behind a new driver connection says of itself as a member.

        Called for each connection made to a database with several endpoints, before the
        pool hands it out: a member that is not ready is passed over for the next.  A
        plain server is always a ready member with no name.
        """
        return MemberStatus()

    @abstractmethod
    def create_table(self, conn: sa.Connection, table: sa.Table) -> None:
        """CREATE TABLE IF NOT EXISTS with its indexes; safe when two sessions race."""

    @abstractmethod
    def ddl_lock(
        self, conn: sa.Connection, name: str, timeout: float
    ) -> AbstractContextManager[None]:
        """Hold a lock called `name` on `conn` (the same connection that then runs DDL).

        Raises LockTimeoutError when another session holds it beyond `timeout` seconds.
        """

    def statement_scope(self, conn: sa.Connection) -> AbstractContextManager[Any]:
        """Where one statement runs whose error the caller handles and then goes on.

        MySQL and SQLite undo only the failed statement, so nothing is needed; a
        database whose transaction a failed statement aborts (PostgreSQL) puts a
        savepoint here, and the error rolls back to it.
        """
        return nullcontext()

    def create_database(self, engine: sa.Engine, name: str) -> None:
        """CREATE DATABASE `name` on the server `engine` connects to (a benchmark's, a test's)."""
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {self._quote(conn, name)}")

    def drop_database(self, engine: sa.Engine, name: str) -> None:
        """DROP DATABASE `name` if it exists, on the server `engine` connects to."""
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self._quote(conn, name)}")

    def missing_database(self, url: sa.URL) -> str | None:
        """Why the database `url` names does not exist, found without connecting, or None.

        Read-only commands ask first where connecting would create the database
        (SQLite creates a missing file), so that reading creates nothing.
        """
        return None

    def partition_table_names(self, conn: sa.Connection) -> frozenset[str]:
        """The tables that are partitions of another table, which listings must skip.

        Empty here: MySQL keeps a table's partitions inside it.  PostgreSQL
        lists each partition among the tables as a table of its own.
        """
        return frozenset()

    def not_null_statement(
        self, conn: sa.Connection, table: str, column: sa.Column[Any]
    ) -> str | None:
        """The statement giving an existing `table`'s column the NOT NULL and default of `column`.

        For an operator to run (messages); None where the database cannot alter a column.
        """
        return None

    @abstractmethod
    def add_index(self, conn: sa.Connection, index: sa.Index) -> None:
        """Add `index` to its existing table without blocking writes; nothing if it is there.

        Tables made by an older release lack indexes declared since: maintenance adds them.
        """

    def add_index_statement(self, conn: sa.Connection, index: sa.Index) -> str:
        """The statement adding `index` to its existing table (what `infsched db upgrade` runs)."""
        return str(CreateIndex(index, if_not_exists=True).compile(dialect=conn.dialect))

    @abstractmethod
    def indexes_used(self, conn: sa.Connection, query: sa.Select[Any]) -> list[str]:
        """The indexes the database's plan for `query` reads (EXPLAIN), in plan order."""

    def classify(self, exc: BaseException) -> DatabaseErrorKind | None:
        """What `exc` means, if it is a database error of a kind the scheduler tells apart.

        None for any other error, and for another database's (but a connection
        SQLAlchemy invalidated is lost, whichever database it went to).
        """
        if not isinstance(exc, DBAPIError):
            return None
        if exc.connection_invalidated:
            return DatabaseErrorKind.LOST_CONNECTION
        return self.classify_driver_error(exc.orig)

    @abstractmethod
    def classify_driver_error(self, error: BaseException | None) -> DatabaseErrorKind | None:
        """The kind of an exception this database's driver raised; None if it is none of them.

        Read from what the driver's errors carry (an error number, a message),
        which another database's errors do not: `classify` asks each dialect.
        """

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

    def among(self, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """``column IN (values)`` for a batch of ids (a thousand on the fetch path)."""
        return column.in_(list(values))

    def returning_rows(self, statement: sa.Update | sa.Delete, name: str) -> sa.CTE | None:
        """`statement`, with its RETURNING columns, as a CTE named `name` that a SELECT reads.

        One statement then changes the rows and reports them (a claim's UPDATE,
        aggregated into one JSON document).  None where the database has no
        data-modifying CTE (MariaDB, SQLite): the caller selects the rows first.
        """
        return None

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
        """A JSON object of (name, value) pairs (JSON_OBJECT in MariaDB and SQLite alike).

        Text here; a database whose snapshot column is a JSON type gives that
        type's value (what an INSERT … SELECT into the job table needs).
        """
        args = [part for name, value in fields for part in (sa.literal(name), value)]
        return sa.func.json_object(*args, type_=sa.Text())

    def json_column_value(self, document: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """`document`, a JSON text (or the database's JSON), as a `JsonText` column takes it.

        The same expression where the column is text; a cast where it is a JSON
        type that text is not assigned to (PostgreSQL's jsonb).
        """
        return document

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

    def id_source_statements(self, conn: sa.Connection, name: str, maximum: int) -> list[str]:
        """The statements creating the id source `name` if absent (`infsched db upgrade`).

        Here the counter table, seeded; a database with sequences creates one.
        """
        table = self.counter_table(name, maximum)
        seed = self.insert_ignore(table, ["slot"]).values(slot=1, next_id=1)
        return [
            str(CreateTable(table, if_not_exists=True).compile(dialect=conn.dialect)),
            str(seed.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})),
        ]

    def default_ids_statements(
        self, conn: sa.Connection, name: str, tables: Sequence[str], column: str
    ) -> list[str]:
        """The statements `default_ids` would run now (it reads which tables lack the default)."""
        return []

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
