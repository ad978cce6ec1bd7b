"""SQLite: CREATE … IF NOT EXISTS, transactional DDL, no partitions, one writer.

SQLite has no row locks: the claim, recovery, lease and fetch transactions
that lock rows on MySQL (``FOR UPDATE [SKIP LOCKED]``) are only safe here if
no other connection can write between their read and their write.  Python's
sqlite3 module opened transactions lazily (a SELECT ran outside any
transaction, ``BEGIN`` came before the first write), so two node processes on
one file both read the same due rows and both claimed them.  Every
transaction therefore begins with ``BEGIN IMMEDIATE``, which takes the
database's write lock before the first read; ``busy_timeout`` makes the next
writer (another node, a thread of this one) wait for it instead of failing.
Readers pay with that wait: a transaction holds the lock for milliseconds.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.schema import CreateIndex, CreateTable

from infsched.column_types import ColumnKind, RowId
from infsched.dburl import UrlScheme
from infsched.dialects.base import DatabaseErrorKind, Dialect, RowInserter

_USING_INDEX = re.compile(r"USING (?:COVERING )?INDEX (\S+)")


def _bound(value: Any) -> Any:
    """A parameter as SQLAlchemy stores it in SQLite (a datetime as its ISO text)."""
    return value.isoformat(" ", "microseconds") if isinstance(value, datetime) else value


#: Milliseconds a writer waits for another's write lock before it fails.
BUSY_TIMEOUT_MS = 30_000


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    # No implicit BEGIN from the driver: _on_begin emits the one we need.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets a reader finish beside the writer and keeps commits cheap.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _on_begin(conn: sa.Connection) -> None:
    # On the driver's connection: transaction control, not a statement of the
    # transaction (statement events and counts see COMMIT no more than this).
    cursor = conn.connection.cursor()
    try:
        cursor.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise sa.exc.OperationalError("BEGIN IMMEDIATE", None, exc) from exc
    finally:
        cursor.close()


class SQLiteDialect(Dialect):
    name = "sqlite"
    names: ClassVar[tuple[str, ...]] = ("sqlite",)
    title = "SQLite"
    url_scheme = UrlScheme(
        dialect="sqlite",
        title=title,
        drivers=frozenset({"sqlite", "sqlite+pysqlite"}),
        driver="sqlite",
        server=False,
        default_port=None,
        example="sqlite:///PATH",
    )
    # No partitions: one table per day.
    default_repository_backend = "multi_table"
    transactional_ddl = True
    concurrent_writers = False
    # SQLite has no limit; names are cut where they always were, so the index names of
    # tables made by earlier releases stay what they are.
    max_identifier_length = 64

    def column_type(self, kind: ColumnKind[Any]) -> sa.types.TypeEngine[Any] | None:
        if isinstance(kind, RowId):
            # Only an INTEGER PRIMARY KEY is the rowid, which SQLite numbers itself.
            return sa.Integer()
        return None

    def configure_engine(self, engine: sa.Engine) -> None:
        # SQLAlchemy's documented recipe for pysqlite transactions, with IMMEDIATE.
        event.listen(engine, "connect", _on_connect)
        event.listen(engine, "begin", _on_begin)

    def create_table(self, conn: sa.Connection, table: sa.Table) -> None:
        conn.execute(CreateTable(table, if_not_exists=True))
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            conn.execute(CreateIndex(index, if_not_exists=True))

    def add_index(self, conn: sa.Connection, index: sa.Index) -> None:
        conn.execute(CreateIndex(index, if_not_exists=True))

    def indexes_used(self, conn: sa.Connection, query: sa.Select[Any]) -> list[str]:
        compiled = query.compile(dialect=conn.dialect)
        params = tuple(_bound(compiled.params[name]) for name in compiled.positiontup or ())
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params)
        # Each step's detail reads e.g. "SEARCH t USING INDEX ix_t_state (state=? AND …)".
        return [m.group(1) for row in plan if (m := _USING_INDEX.search(str(row[-1])))]

    def ddl_lock(
        self, conn: sa.Connection, name: str, timeout: float
    ) -> AbstractContextManager[None]:
        # SQLite runs one writer at a time (busy_timeout makes the next one wait), and
        # every DDL statement we issue is IF [NOT] EXISTS, so racing sessions converge.
        return nullcontext()

    def missing_database(self, url: sa.URL) -> str | None:
        path = url.database
        # In-memory databases and file: URIs are the caller's own business.
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        return None if Path(path).exists() else "no such database file"

    def create_id_source(self, conn: sa.Connection, name: str, maximum: int) -> None:
        self._create_counter(conn, name, maximum)  # SQLite has no sequences

    def default_ids(
        self, conn: sa.Connection, name: str, tables: Sequence[str], column: str
    ) -> list[str]:
        return []  # a DEFAULT may not read another table: writers draw from the counter

    def id_source_problems(
        self, conn: sa.Connection, name: str, maximum: int, tables: Sequence[str], column: str
    ) -> list[str]:
        return self._counter_problems(conn, name, maximum)

    def classify_driver_error(self, error: BaseException | None) -> DatabaseErrorKind | None:
        # The messages of SQLite's result codes (sqlite3_errstr); a constraint's names its kind.
        message = str(error)
        if "database is locked" in message:  # SQLITE_BUSY: busy_timeout ran out
            return DatabaseErrorKind.LOCK_TIMEOUT
        if "no such table" in message:
            return DatabaseErrorKind.MISSING_TABLE
        if "UNIQUE constraint failed" in message or "PRIMARY KEY must be unique" in message:
            return DatabaseErrorKind.DUPLICATE_KEY
        return None

    def insert_ignore(self, table: sa.Table, keys: Sequence[str]) -> sa.Insert:
        return sqlite_insert(table).on_conflict_do_nothing(index_elements=list(keys))

    def job_key(
        self, repository: str, entity_id: sa.ColumnElement[Any], due: sa.ColumnElement[Any]
    ) -> sa.ColumnElement[str]:
        # SQLAlchemy stores a DATETIME as 'YYYY-MM-DD HH:MM:SS.ffffff' text.
        def part(start: int, length: int) -> sa.ColumnElement[str]:
            return sa.func.substr(due, start, length)

        return (
            sa.literal(f"{repository}:")
            + sa.cast(entity_id, sa.String())
            + ":"
            + part(1, 4)
            + part(6, 2)
            + part(9, 2)
            + "T"
            + part(12, 2)
            + part(15, 2)
            + part(18, 2)
            + "."
            + part(21, 6)
            + "Z"
        )

    def json_field(self, column: sa.ColumnElement[Any], python_type: type) -> sa.ColumnElement[Any]:
        if python_type in (dict, list):
            return sa.func.json(column)
        return column

    def json_document(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # json() gives the value SQLite's JSON subtype, which json_array nests as JSON.
        return sa.func.json(column, type_=sa.Text())

    def datetime_from_micros(self, micros: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # The text SQLAlchemy stores for a DATETIME: "YYYY-MM-DD HH:MM:SS.ffffff".  Whole
        # seconds by integer division (a float would be rounded to the millisecond),
        # and || keeps NULL NULL.
        whole = micros.op("/")(1_000_000)
        seconds = sa.func.strftime("%Y-%m-%d %H:%M:%S", whole, "unixepoch", type_=sa.String())
        return seconds.concat(sa.func.printf(".%06d", micros % 1_000_000, type_=sa.String()))

    def json_rows(
        self, document: str, columns: Sequence[tuple[str, sa.types.TypeEngine[Any]]]
    ) -> sa.Subquery:
        fields = ", ".join(
            f"json_extract(value, '$[{i}]') AS {name}" for i, (name, _) in enumerate(columns)
        )
        text = sa.text(f"SELECT {fields} FROM json_each(:document)").bindparams(document=document)
        return text.columns(*(sa.column(name, type_) for name, type_ in columns)).subquery("v")

    def current_timestamp(self) -> None:
        # One node writes a SQLite file; its clock is the only one there is.
        return None

    def json_array_agg(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.func.json_group_array(column, type_=sa.Text())

    def lock_skipping_locked(self, query: sa.Select[Any]) -> sa.Select[Any]:
        # Every transaction holds the database's write lock from its start (_on_begin).
        return query

    def row_inserter(self, table: sa.Table, columns: Sequence[str]) -> RowInserter:
        statement = table.insert()

        def insert(conn: sa.Connection, rows: Sequence[Sequence[Any]]) -> None:
            conn.execute(statement, [dict(zip(columns, row, strict=True)) for row in rows])

        return insert
