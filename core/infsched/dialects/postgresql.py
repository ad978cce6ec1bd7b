"""PostgreSQL (psycopg 3): transactional DDL, sequences, advisory locks, SQLSTATE error codes.

Sessions run in UTC, and every time column is a ``timestamp without time
zone`` holding naive UTC, as on the other databases.  Claims lock with
``FOR UPDATE SKIP LOCKED``; idempotent inserts are ``ON CONFLICT DO NOTHING``.
Range partitions are declarative ones (postgresql_partitions.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, CreateTable

from infsched.column_types import ColumnKind, FixedText, JsonText, LongText, UtcDateTime
from infsched.dburl import UrlScheme
from infsched.dialects.base import (
    DatabaseErrorKind,
    Dialect,
    LockTimeoutError,
    RowInserter,
    row_binder,
)
from infsched.dialects.postgresql_partitions import PostgreSQLRangePartitioning
from infsched.dialects.sequence_ids import SequenceIds, quote

#: SQLSTATE codes, by what they mean (PostgreSQL's appendix A).
_KINDS = {
    "40001": DatabaseErrorKind.SERIALIZATION_FAILURE,  # serialization_failure
    "40P01": DatabaseErrorKind.DEADLOCK,  # deadlock_detected
    "55P03": DatabaseErrorKind.LOCK_TIMEOUT,  # lock_not_available (lock_timeout, NOWAIT)
    "23505": DatabaseErrorKind.DUPLICATE_KEY,  # unique_violation
    "42P01": DatabaseErrorKind.MISSING_TABLE,  # undefined_table
    "57P01": DatabaseErrorKind.LOST_CONNECTION,  # admin_shutdown (pg_terminate_backend)
    "57P02": DatabaseErrorKind.LOST_CONNECTION,  # crash_shutdown
    "57P03": DatabaseErrorKind.LOST_CONNECTION,  # cannot_connect_now (starting, stopping)
    "57P04": DatabaseErrorKind.LOST_CONNECTION,  # database_dropped
    "57P05": DatabaseErrorKind.LOST_CONNECTION,  # idle_session_timeout
    "25P03": DatabaseErrorKind.LOST_CONNECTION,  # idle_in_transaction_session_timeout
}
#: How often ddl_lock asks again for an advisory lock another session holds.
_LOCK_POLL_SECONDS = 0.05


def _lock_key(name: str) -> int:
    """A 64-bit advisory lock key for `name` (advisory locks are per database already)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class _JsonbText(sa.types.UserDefinedType[str]):
    """jsonb, written and read as its text.

    Stored parsed, a snapshot is not parsed again when a claim nests it in
    its JSON document, and operators can query it.
    """

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "JSONB"

    def column_expression(self, column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
        # Selected as text: psycopg would parse jsonb into Python values.
        return sa.cast(column, sa.Text())


def _as_sqlalchemy_error(
    conn: sa.Connection, statement: str, error: Exception, invalidated: bool
) -> sa.exc.StatementError:
    """The DBAPIError (IntegrityError, OperationalError…) SQLAlchemy makes of a failed execute."""
    return sa.exc.DBAPIError.instance(
        statement,
        None,
        error,
        conn.dialect.loaded_dbapi.Error,
        connection_invalidated=invalidated,
        dialect=conn.dialect,
    )


class PostgreSQLSequenceIds(SequenceIds):
    def create_statement(self, conn: sa.Connection, name: str, maximum: int) -> str:
        return (
            f"CREATE SEQUENCE IF NOT EXISTS {quote(conn, name)} AS bigint "
            f"START WITH 1 MINVALUE 1 MAXVALUE {maximum} NO CYCLE"
        )

    def next_value(self, conn: sa.Connection, name: str) -> str:
        return "nextval('" + quote(conn, name).replace("'", "''") + "')"

    def draws_from(self, default: str | None, name: str) -> bool:
        # information_schema shows it as nextval('name'::regclass), quoted if need be.
        return default is not None and default.startswith("nextval(") and name in default

    def top(self, conn: sa.Connection, name: str) -> int | None:
        found = conn.execute(
            sa.text(
                "SELECT max_value FROM pg_sequences "
                "WHERE schemaname = current_schema() AND sequencename = :name"
            ),
            {"name": name},
        ).scalar()
        return None if found is None else int(found)


_SEQUENCES = PostgreSQLSequenceIds()


class PostgreSQLDialect(Dialect):
    name = "postgresql"
    names: ClassVar[tuple[str, ...]] = ("postgresql",)
    title = "PostgreSQL"
    url_scheme = UrlScheme(
        dialect="postgresql",
        title=title,
        drivers=frozenset({"postgresql", "postgresql+psycopg"}),
        driver="postgresql+psycopg",
        server=True,
        default_port=5432,
        example="postgresql+psycopg://user:pass@host:5432/db",
    )
    # One table with a declarative partition per day (postgresql_partitions.py).
    default_repository_backend = "partitioned"
    transactional_ddl = True
    concurrent_writers = True
    max_identifier_length = 63

    def __init__(self) -> None:
        self.range_partitioning = PostgreSQLRangePartitioning()

    def column_type(self, kind: ColumnKind[Any]) -> sa.types.TypeEngine[Any] | None:
        if isinstance(kind, UtcDateTime):
            # Naive UTC like the other databases; microseconds are the default precision.
            return postgresql.TIMESTAMP(timezone=False, precision=6)
        if isinstance(kind, JsonText):
            return _JsonbText()
        if isinstance(kind, LongText):
            # Said outright: psycopg's string type would otherwise render it as VARCHAR.
            return postgresql.TEXT()
        if isinstance(kind, FixedText):
            # Not CHAR: PostgreSQL pads it with spaces and reads them back.  Every
            # UPDATE writes a new row version anyway, so a fixed width buys nothing.
            return sa.String(kind.length)
        return None

    def engine_options(self, pool_size: int) -> dict[str, Any]:
        # READ COMMITTED is PostgreSQL's default; the session's time zone is UTC so that
        # the clock (statement_timestamp() AT TIME ZONE 'UTC') and casts agree.
        return {
            "pool_size": pool_size,
            "max_overflow": pool_size,
            "pool_pre_ping": True,
            "pool_recycle": 3600,
            "connect_args": {"options": "-c timezone=UTC", "connect_timeout": 10},
        }

    def configure_engine(self, engine: sa.Engine) -> None:
        # Row locks (FOR UPDATE [SKIP LOCKED]) make read-then-write transactions safe;
        # the session set-up is `engine_options`.
        return None

    # CREATE and DROP DATABASE refuse to run inside a transaction.

    def create_database(self, engine: sa.Engine, name: str) -> None:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {self._quote(conn, name)}")

    def drop_database(self, engine: sa.Engine, name: str) -> None:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # FORCE: a session left connected must not keep the database.
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {self._quote(conn, name)} WITH (FORCE)")

    def create_table(self, conn: sa.Connection, table: sa.Table) -> None:
        # DDL is transactional here: the table and its indexes appear together at commit.
        # Two sessions creating the same table at once would both pass IF NOT EXISTS and
        # the second fail on the catalog's unique index; a lock on the name, held to the
        # commit, makes the second wait and then find the table (another application
        # creating a day table takes the same lock: docs/integrating.md).
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"),
            {"name": table.name},
        )
        conn.execute(CreateTable(table, if_not_exists=True))
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            conn.execute(CreateIndex(index, if_not_exists=True))

    def statement_scope(self, conn: sa.Connection) -> AbstractContextManager[Any]:
        # A failed statement aborts the transaction: a savepoint keeps the rest of it.
        return conn.begin_nested()

    def add_index(self, conn: sa.Connection, index: sa.Index) -> None:
        # Not CONCURRENTLY: that cannot run inside the transaction maintenance holds.
        conn.execute(CreateIndex(index, if_not_exists=True))

    def partition_table_names(self, conn: sa.Connection) -> frozenset[str]:
        rows = conn.execute(
            sa.text(
                "SELECT relname FROM pg_class WHERE relispartition "
                "AND relnamespace = current_schema()::regnamespace"
            )
        )
        return frozenset(str(name) for name in rows.scalars())

    def not_null_statement(self, conn: sa.Connection, table: str, column: sa.Column[Any]) -> str:
        default = column.server_default
        text = default.arg if isinstance(default, sa.DefaultClause) else None
        quoted = f"ALTER TABLE {self._quote(conn, table)} ALTER COLUMN "
        quoted += self._quote(conn, column.name)
        if isinstance(text, str):
            return f"{quoted} SET DEFAULT '{text}', ALTER COLUMN " + (
                f"{self._quote(conn, column.name)} SET NOT NULL"
            )
        return f"{quoted} SET NOT NULL"

    def indexes_used(self, conn: sa.Connection, query: sa.Select[Any]) -> list[str]:
        compiled = query.compile(dialect=conn.dialect)
        plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params)
        document = plan.scalar_one()
        found: list[str] = []

        def walk(node: dict[str, Any]) -> None:
            if "Index Name" in node:
                found.append(str(node["Index Name"]))
            for child in node.get("Plans", ()):
                walk(child)

        for entry in document if isinstance(document, list) else json.loads(document):
            walk(entry["Plan"])
        if not found:
            return found
        # A partition's index is PostgreSQL's copy of the partitioned table's, under a
        # name of its own: the declared name says which index the plan reads, as on MySQL.
        rows = conn.execute(
            sa.text(
                "SELECT c.relname, p.relname FROM pg_class c "
                "JOIN pg_inherits i ON i.inhrelid = c.oid "
                "JOIN pg_class p ON p.oid = i.inhparent "
                "WHERE c.relkind = 'i' AND c.relname IN :names "
                "AND c.relnamespace = current_schema()::regnamespace"
            ).bindparams(sa.bindparam("names", expanding=True)),
            {"names": sorted(set(found))},
        )
        declared = {str(child): str(parent) for child, parent in rows}
        return [declared.get(name, name) for name in found]

    @contextmanager
    def ddl_lock(self, conn: sa.Connection, name: str, timeout: float) -> Iterator[None]:
        # A session-level advisory lock, asked for again until `timeout`: it outlives the
        # transactions the DDL commits, and goes with the session if that dies.
        key = _lock_key(name)
        deadline = time.monotonic() + timeout
        take = sa.text("SELECT pg_try_advisory_lock(:key)")
        while not conn.execute(take, {"key": key}).scalar_one():
            if time.monotonic() >= deadline:
                raise LockTimeoutError(
                    f"lock {name!r} is held by another session for more than {timeout:g} s"
                )
            time.sleep(_LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            try:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            except DBAPIError:
                # A session that is gone took its lock with it; an aborted transaction
                # must be rolled back before the unlock can run.
                if not conn.closed and not conn.invalidated:
                    conn.rollback()
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})

    def classify_driver_error(self, error: BaseException | None) -> DatabaseErrorKind | None:
        try:
            import psycopg  # the optional extra: only its own errors can be classified
        except ImportError:  # pragma: no cover - without psycopg no PostgreSQL error exists
            return None
        if not isinstance(error, psycopg.Error):
            return None
        kind = _KINDS.get(error.sqlstate or "")
        if kind is not None:
            return kind
        sqlstate = error.sqlstate or ""
        if sqlstate.startswith("08") or (
            isinstance(error, psycopg.OperationalError) and not sqlstate
        ):
            # Class 08 (connection exception), or the client's own "the connection is
            # closed" / "server closed the connection unexpectedly", which carry none.
            return DatabaseErrorKind.LOST_CONNECTION
        return None

    def row_inserter(self, table: sa.Table, columns: Sequence[str]) -> RowInserter:
        # COPY … FROM STDIN: half the client's time of psycopg's executemany (which sends
        # an INSERT per row) and of one INSERT of arrays (psycopg dumps arrays in Python),
        # and about twice the rows per second; a multi-row VALUES list is slower still.
        import psycopg  # the optional extra, which an engine on PostgreSQL has loaded

        bind = row_binder([table.c[c].type for c in columns])
        listed = ", ".join(f'"{c}"' for c in columns)
        statement = f'COPY "{table.name}" ({listed}) FROM STDIN'

        def insert(conn: sa.Connection, rows: Sequence[Sequence[Any]]) -> None:
            if not rows:
                return
            values = bind(conn, rows)
            fairy = conn.connection
            driver = fairy.driver_connection
            if not isinstance(driver, psycopg.Connection):
                raise TypeError(f"COPY needs a psycopg connection, not {type(driver).__name__}")
            cursor = driver.cursor()  # COPY has no DB-API call
            # Listeners (statement counts, tracing) hear of it as of any statement; the
            # connection's dispatch includes the engine's, and costs nothing without any.
            conn.dispatch.before_cursor_execute(conn, cursor, statement, (), None, False)
            try:
                with cursor.copy(statement) as copy:
                    for row in values:
                        copy.write_row(row)
            except conn.dialect.loaded_dbapi.Error as error:
                # Raised as SQLAlchemy raises a failed execute: a DBAPIError (IntegrityError…).
                lost = conn.dialect.is_disconnect(error, fairy.dbapi_connection, None)
                if lost:
                    conn.invalidate(error)
                raise _as_sqlalchemy_error(conn, statement, error, lost) from error
            finally:
                cursor.close()
            conn.dispatch.after_cursor_execute(conn, cursor, statement, (), None, False)

        return insert

    def among(self, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        # One array parameter: an IN list's thousand placeholders cost SQLAlchemy's
        # expanding and psycopg's parsing of the long text on every statement.
        return column == sa.any_(
            sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        )

    def insert_ignore(self, table: sa.Table, keys: Sequence[str]) -> sa.Insert:
        # Only a conflict on these keys is skipped; any other error still raises.
        return pg_insert(table).on_conflict_do_nothing(index_elements=list(keys))

    def current_timestamp(self) -> sa.ColumnElement[datetime]:
        # The statement's start, like MySQL's UTC_TIMESTAMP(6) (now() would be the
        # transaction's), as naive UTC.
        return sa.func.timezone(
            sa.literal("UTC"), sa.func.statement_timestamp(), type_=sa.DateTime()
        )

    def lock_skipping_locked(self, query: sa.Select[Any]) -> sa.Select[Any]:
        return query.with_for_update(skip_locked=True)

    def returning_rows(self, statement: sa.Update | sa.Delete, name: str) -> sa.CTE:
        # WITH name AS (UPDATE … RETURNING …) SELECT … FROM name: one statement.
        return statement.cte(name)

    def job_key(
        self, repository: str, entity_id: sa.ColumnElement[Any], due: sa.ColumnElement[Any]
    ) -> sa.ColumnElement[str]:
        return sa.func.concat(
            sa.literal(f"{repository}:"),
            sa.cast(entity_id, sa.Text()),
            sa.literal(":"),
            sa.func.to_char(due, sa.literal('YYYYMMDD"T"HH24MISS.US"Z"')),
            type_=sa.String(),
        )

    def json_field(self, column: sa.ColumnElement[Any], python_type: type) -> sa.ColumnElement[Any]:
        if python_type is datetime:
            return sa.func.to_char(column, sa.literal('YYYY-MM-DD"T"HH24:MI:SS.US'))
        if python_type is date:
            return sa.func.to_char(column, sa.literal("YYYY-MM-DD"))
        if python_type is Decimal:
            # As text: a JSON number would come back as a float and lose digits.
            return sa.cast(column, sa.Text())
        if python_type in (dict, list):
            return sa.cast(column, postgresql.JSONB())
        return column

    # JSON is built as json (json_build_*) and cast to text only where the result
    # leaves the database: psycopg would parse a json value itself, and the store
    # reads the text with one json.loads.

    def json_array_agg(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.cast(sa.func.json_agg(column), sa.Text())

    def json_array(self, *values: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.func.json_build_array(*values, type_=postgresql.JSON())

    def json_document(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        if isinstance(column.type, JsonText):
            # jsonb nests as JSON as it is; a cast to json would print and parse it again.
            return column
        return sa.cast(column, postgresql.JSON())

    def json_object(
        self, fields: Sequence[tuple[str, sa.ColumnElement[Any]]]
    ) -> sa.ColumnElement[str]:
        # Text, as the JobStore contract gives a snapshot to every store (psycopg would
        # parse json into a dict); the SQL store's insert casts it to jsonb
        # (json_column_value).
        args = [part for name, value in fields for part in (sa.literal(name), value)]
        return sa.cast(sa.func.json_build_object(*args), sa.Text())

    def json_column_value(self, document: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        if isinstance(document.type, (postgresql.JSON, JsonText)):
            return document  # json is assigned to jsonb as it is
        return sa.cast(document, postgresql.JSONB())

    def datetime_from_micros(self, micros: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # Whole seconds and the microseconds apart: an interval times a number is float
        # arithmetic, exact for each part but not for microseconds since 1970 at once.
        epoch: sa.ColumnElement[Any] = sa.literal_column("TIMESTAMP '1970-01-01 00:00:00'")
        second: sa.ColumnElement[Any] = sa.literal_column("INTERVAL '1 second'")
        microsecond: sa.ColumnElement[Any] = sa.literal_column("INTERVAL '1 microsecond'")
        whole = sa.cast(micros, sa.BigInteger()).op("/")(1_000_000)
        rest = sa.cast(micros, sa.BigInteger()).op("%")(1_000_000)
        return sa.type_coerce(epoch + whole * second + rest * microsecond, sa.DateTime())

    def json_rows(
        self, document: str, columns: Sequence[tuple[str, sa.types.TypeEngine[Any]]]
    ) -> sa.Subquery:
        elements = (
            sa.func.json_array_elements(sa.cast(sa.literal(document, sa.Text()), postgresql.JSON()))
            .table_valued(sa.column("value", postgresql.JSON()))
            .alias("rows_")
        )
        value = elements.c.value
        fields = [
            sa.cast(value.op("->>")(sa.literal_column(str(i))), type_).label(name)
            for i, (name, type_) in enumerate(columns)
        ]
        return sa.select(*fields).select_from(elements).subquery("v")

    # -- ids: a SEQUENCE shared by the repository's tables is the id column's DEFAULT --

    def create_id_source(self, conn: sa.Connection, name: str, maximum: int) -> None:
        _SEQUENCES.create(conn, name, maximum)

    def id_source_statements(self, conn: sa.Connection, name: str, maximum: int) -> list[str]:
        return [_SEQUENCES.create_statement(conn, name, maximum)]

    def default_ids(
        self, conn: sa.Connection, name: str, tables: Sequence[str], column: str
    ) -> list[str]:
        return _SEQUENCES.set_defaults(conn, name, tables, column)

    def default_ids_statements(
        self, conn: sa.Connection, name: str, tables: Sequence[str], column: str
    ) -> list[str]:
        return [sql for _, sql in _SEQUENCES.missing_defaults(conn, name, tables, column)]

    def id_source_problems(
        self, conn: sa.Connection, name: str, maximum: int, tables: Sequence[str], column: str
    ) -> list[str]:
        return _SEQUENCES.problems(conn, name, maximum, tables, column)
