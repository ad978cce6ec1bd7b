"""MySQL and MariaDB: inline indexes, GET_LOCK, RANGE COLUMNS partitions."""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.mysql.pymysql import MySQLDialect_pymysql as mysql_dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.schema import CreateTable

from infsched.column_types import ColumnKind, FixedText, LongText, UtcDateTime
from infsched.dburl import UrlScheme
from infsched.dialects.base import (
    DatabaseErrorKind,
    Dialect,
    LockTimeoutError,
    MemberStatus,
    RangePartition,
    RowInserter,
    executemany_inserter,
)
from infsched.dialects.mysql_decoders import conversions
from infsched.dialects.sequence_ids import SequenceIds, quote

_ER_DUP_KEYNAME = 1061
#: The server's and the client's error numbers, by what they mean.
_KINDS = {
    1213: DatabaseErrorKind.DEADLOCK,  # ER_LOCK_DEADLOCK
    1047: DatabaseErrorKind.MEMBER_NOT_READY,  # "WSREP has not yet prepared node"
    1205: DatabaseErrorKind.LOCK_TIMEOUT,  # ER_LOCK_WAIT_TIMEOUT
    1062: DatabaseErrorKind.DUPLICATE_KEY,  # ER_DUP_ENTRY
    1146: DatabaseErrorKind.MISSING_TABLE,  # ER_NO_SUCH_TABLE
    1927: DatabaseErrorKind.LOST_CONNECTION,  # ER_CONNECTION_KILLED (MariaDB)
    2003: DatabaseErrorKind.LOST_CONNECTION,  # CR_CONN_HOST_ERROR (connection refused)
    2006: DatabaseErrorKind.LOST_CONNECTION,  # CR_SERVER_GONE_ERROR
    2013: DatabaseErrorKind.LOST_CONNECTION,  # CR_SERVER_LOST
}
#: MySQL refuses longer user-lock names.
_MAX_LOCK_NAME = 64


_ER_LOCK_DEADLOCK = 1213
_ER_NOT_READY = 1047
#: Key of a pooled connection's info: whether its server is a Galera member (wsrep_on).
_GALERA = "infsched.galera"
#: Driver errors that were 1213 on a Galera member.  The server reports a certification
#: failure and a brute-force abort by a replicated write as the deadlock error, and
#: nothing on the error tells them apart from a local deadlock: the connection's server
#: does.  Weak: an error leaves the set when it is gone.
_CERTIFICATION: weakref.WeakSet[BaseException] = weakref.WeakSet()


def _errno(error: BaseException | None) -> int | None:
    """The error number a driver's exception starts with, as PyMySQL's do; else None."""
    args = getattr(error, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _ddl(conn: sa.Connection, statement: str) -> None:
    # exec_driver_sql: partition bounds contain ':' that text() would read as bind parameters.
    conn.exec_driver_sql(statement)


def _remember_galera(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT @@wsrep_on")
        row = cursor.fetchone()
    except Exception as exc:  # the driver's own error (MySQL has no wsrep_on)
        if _errno(exc) is None:
            raise
        row = None
    finally:
        cursor.close()
    record.info[_GALERA] = bool(row and row[0])


def _mark_galera_errors(context: sa.engine.ExceptionContext) -> None:
    error = context.original_exception
    errno = _errno(error)
    if errno == _ER_NOT_READY:
        # A member that left the primary component answers every statement so: drop
        # the pool's connections to it, the next are made to a member that serves.
        context.is_disconnect = True
    connection = context.connection
    if errno == _ER_LOCK_DEADLOCK and connection is not None:
        with contextlib.suppress(sa.exc.ResourceClosedError, sa.exc.InvalidRequestError):
            if connection.info.get(_GALERA):
                _CERTIFICATION.add(error)


class MySQLRangePartitioning:
    """RANGE COLUMNS on a DATETIME column: the server prunes a range predicate to its partitions.

    The catch-all is a ``VALUES LESS THAN (MAXVALUE)`` partition on top.  New
    ranges are split off it with REORGANIZE PARTITION, a metadata change while
    it is empty (rows it holds for the new ranges are copied over); a table
    without one gets it with ADD PARTITION first.

    (RANGE(TO_DAYS(col)) prunes ``col < midnight`` to one partition too many,
    because ``<`` turns into ``<=`` through the function.)
    """

    def __init__(self, dialect: MySQLDialect) -> None:
        self._dialect = dialect

    @staticmethod
    def _definition(partition: RangePartition) -> str:
        bound = "MAXVALUE" if partition.upper is None else f"'{partition.upper:%Y-%m-%d %H:%M:%S}'"
        return f"PARTITION `{partition.name}` VALUES LESS THAN ({bound})"

    def _definitions(self, partitions: Sequence[RangePartition]) -> str:
        return ", ".join(self._definition(p) for p in partitions)

    def scheme(self, column: str) -> str:
        return f"RANGE COLUMNS `{column}`"

    def create_table(
        self,
        conn: sa.Connection,
        table: sa.Table,
        column: str,
        partitions: Sequence[RangePartition],
    ) -> None:
        clause = f" PARTITION BY RANGE COLUMNS(`{column}`) ({self._definitions(partitions)})"
        self._dialect.create_table_with(conn, table, clause)

    @staticmethod
    def _rows(conn: sa.Connection, table: str) -> list[tuple[Any, ...]]:
        return [
            tuple(row)
            for row in conn.execute(
                sa.text(
                    "SELECT PARTITION_NAME, PARTITION_METHOD, PARTITION_EXPRESSION, "
                    "PARTITION_DESCRIPTION FROM information_schema.PARTITIONS "
                    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :table "
                    "ORDER BY PARTITION_ORDINAL_POSITION"
                ),
                {"table": table},
            )
        ]

    def partitions(self, conn: sa.Connection, table: str) -> list[RangePartition] | None:
        rows = self._rows(conn, table)
        if not rows:
            return None
        found: list[RangePartition] = []
        for name, _method, _expression, description in rows:
            if name is None:  # one row without a partition name: a plain table
                return []
            upper = None
            if description != "MAXVALUE":
                upper = datetime.fromisoformat(str(description).strip("'"))
            found.append(RangePartition(name, upper))
        return found

    def partitioned_on(self, conn: sa.Connection, table: str) -> str | None:
        rows = self._rows(conn, table)
        if not rows or rows[0][1] is None:
            return None
        return f"{rows[0][1]} {rows[0][2]}"

    def ensure(
        self,
        conn: sa.Connection,
        table: str,
        existing: Sequence[RangePartition],
        new: Sequence[RangePartition],
        catch_all: str,
    ) -> list[RangePartition]:
        made: list[RangePartition] = []
        top = existing[-1] if existing else None
        if top is None or top.upper is not None:
            top = RangePartition(catch_all, None)
            _ddl(conn, f"ALTER TABLE `{table}` ADD PARTITION ({self._definition(top)})")
            made.append(top)
        if new:
            # The catch-all keeps its name and its MAXVALUE bound above the new ranges.
            _ddl(
                conn,
                f"ALTER TABLE `{table}` REORGANIZE PARTITION `{top.name}` "
                f"INTO ({self._definitions([*new, top])})",
            )
            made[:0] = new
        return made

    def drop_below(
        self, conn: sa.Connection, table: str, partitions: Sequence[RangePartition], bound: datetime
    ) -> list[RangePartition]:
        below = [p for p in partitions if p.upper is not None and p.upper <= bound]
        if below:
            listed = ", ".join(f"`{p.name}`" for p in below)
            _ddl(conn, f"ALTER TABLE `{table}` DROP PARTITION {listed}")
        return below

    def explain_partitions(
        self, conn: sa.Connection, query: sa.Select[*tuple[Any, ...]]
    ) -> list[str]:
        compiled = query.compile(dialect=conn.dialect)
        # MariaDB wants EXPLAIN PARTITIONS; MySQL 8 shows partitions in plain EXPLAIN.
        explain = "EXPLAIN PARTITIONS " if conn.dialect.is_mariadb else "EXPLAIN "  # type: ignore[attr-defined]
        result = conn.exec_driver_sql(explain + str(compiled), compiled.params)
        used: list[str] = []
        for row in result.mappings():
            if row["partitions"]:
                used.extend(str(row["partitions"]).split(","))
        return used


class MariaDBSequenceIds(SequenceIds):
    def create_statement(self, conn: sa.Connection, name: str, maximum: int) -> str:
        # INCREMENT BY 0 steps by auto_increment_increment from auto_increment_offset: 1 and 1
        # on one server, the member count and the member's own offset on Galera, which
        # refuses a cached sequence stepping otherwise (members would hand out the same ids).
        return (
            f"CREATE SEQUENCE IF NOT EXISTS {quote(conn, name)} START WITH 1 MINVALUE 1 "
            f"MAXVALUE {maximum} INCREMENT BY 0 CACHE 1000 NOCYCLE"
        )

    def next_value(self, conn: sa.Connection, name: str) -> str:
        return f"NEXT VALUE FOR {quote(conn, name)}"

    def draws_from(self, default: str | None, name: str) -> bool:
        # information_schema shows the default as nextval(`db`.`name`).
        return default is not None and default.startswith("nextval(") and f"`{name}`)" in default

    def top(self, conn: sa.Connection, name: str) -> int | None:
        try:
            found = conn.execute(sa.text(f"SELECT maximum_value FROM {quote(conn, name)}"))
            return int(found.scalar_one())
        except DBAPIError:
            return None


_SEQUENCES = MariaDBSequenceIds()


class MySQLDialect(Dialect):
    name = "mysql"
    names = ("mysql", "mariadb")
    title = "MySQL/MariaDB"
    url_scheme = UrlScheme(
        dialect="mysql",
        title=title,
        drivers=frozenset({"mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql"}),
        driver="mysql+pymysql",
        server=True,
        default_port=3306,
        example="mysql+pymysql://user:pass@host:3306/db",
    )
    default_repository_backend = "partitioned"
    transactional_ddl = False
    concurrent_writers = True
    max_identifier_length = 64
    # create_engine raises it from MariaDB's 1 MB default.
    aggregate_length_setting = "group_concat_max_len"

    def __init__(self) -> None:
        self.range_partitioning = MySQLRangePartitioning(self)

    def column_type(self, kind: ColumnKind[Any]) -> sa.types.TypeEngine[Any] | None:
        if isinstance(kind, UtcDateTime):
            return mysql.DATETIME(fsp=6)  # DATETIME alone drops the microseconds
        if isinstance(kind, LongText):
            return mysql.MEDIUMTEXT()  # TEXT stops at 64 KiB
        if isinstance(kind, FixedText):
            # CHAR: InnoDB updates a row in place only while its size stays the same.
            return mysql.CHAR(kind.length)
        return None

    def engine_options(self, pool_size: int) -> dict[str, Any]:
        # Sessions run in UTC with READ COMMITTED: claims with SKIP LOCKED then take
        # no gap locks, and DATETIME values are read as the UTC they hold.
        return {
            "pool_size": pool_size,
            "max_overflow": pool_size,
            "pool_pre_ping": True,
            "pool_recycle": 3600,
            "isolation_level": "READ COMMITTED",
            "connect_args": {
                # Room for a fetch batch's ids in one JSON_ARRAYAGG, which MariaDB
                # cuts at group_concat_max_len (1 MB by default).
                "init_command": "SET time_zone = '+00:00', group_concat_max_len = 67108864",
                "connect_timeout": 10,
                "conv": conversions(),
            },
        }

    def configure_engine(self, engine: sa.Engine) -> None:
        # Row locks (FOR UPDATE [SKIP LOCKED]) make read-then-write transactions safe;
        # the session settings (UTC, READ COMMITTED) are `engine_options`.  Galera's locks
        # are a member's own, so a conflict with another member shows at COMMIT as 1213:
        # each connection remembers whether its server is a member, to call it by its name.
        sa.event.listen(engine, "connect", _remember_galera)
        sa.event.listen(engine, "handle_error", _mark_galera_errors)

    def member_status(self, dbapi_connection: Any) -> MemberStatus:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT @@wsrep_on, @@wsrep_node_name")
            on, name = cursor.fetchone()
            if not on:
                return MemberStatus()
            cursor.execute(
                "SHOW GLOBAL STATUS WHERE Variable_name IN "
                "('wsrep_ready', 'wsrep_cluster_status', 'wsrep_local_state_comment')"
            )
            status = {str(k): str(v) for k, v in cursor.fetchall()}
        finally:
            cursor.close()
        ready = status.get("wsrep_ready") == "ON" and status.get("wsrep_cluster_status") == (
            "Primary"
        )
        why = (
            ""
            if ready
            else f"Galera member {status.get('wsrep_local_state_comment', '?')}, "
            f"cluster {status.get('wsrep_cluster_status', '?')}"
        )
        return MemberStatus(str(name), ready, why)

    def create_database(self, engine: sa.Engine, name: str) -> None:
        with engine.begin() as conn:
            _ddl(conn, f"CREATE DATABASE {self._quote(conn, name)} CHARACTER SET utf8mb4")

    def create_table(self, conn: sa.Connection, table: sa.Table) -> None:
        self.create_table_with(conn, table, "")

    def create_table_with(self, conn: sa.Connection, table: sa.Table, suffix: str) -> None:
        """`create_table` with table options (a partition clause) appended as they are."""
        # Indexes go inside the CREATE TABLE: MySQL 8 has no CREATE INDEX IF NOT EXISTS,
        # and one statement leaves no window where the table exists without them.
        ddl = str(CreateTable(table, if_not_exists=True).compile(dialect=conn.dialect)).strip()
        if not ddl.endswith(")"):
            raise AssertionError(f"unexpected CREATE TABLE shape: {ddl[-40:]!r}")
        indexes = [
            f"{'UNIQUE ' if ix.unique else ''}INDEX {self._quote(conn, str(ix.name))} "
            f"({', '.join(self._quote(conn, c.name) for c in ix.columns)})"
            for ix in sorted(table.indexes, key=lambda ix: str(ix.name))
        ]
        body = ddl[:-1].rstrip() + "".join(f",\n\t{ix}" for ix in indexes) + "\n)"
        _ddl(conn, f"{body} ENGINE=InnoDB DEFAULT CHARSET=utf8mb4{suffix}")

    def add_index(self, conn: sa.Connection, index: sa.Index) -> None:
        try:
            _ddl(conn, self.add_index_statement(conn, index))
        except DBAPIError as exc:
            if _errno(exc.orig) != _ER_DUP_KEYNAME:  # another session added it meanwhile
                raise

    def add_index_statement(self, conn: sa.Connection, index: sa.Index) -> str:
        table = index.table
        if table is None:
            raise ValueError(f"index {index.name!r} belongs to no table")
        columns = ", ".join(self._quote(conn, c.name) for c in index.columns)
        # Online (INPLACE, LOCK=NONE): inserts go on while a big history table is indexed.
        return (
            f"ALTER TABLE {self._quote(conn, table.name)} ADD "
            f"{'UNIQUE ' if index.unique else ''}INDEX {self._quote(conn, str(index.name))} "
            f"({columns}), ALGORITHM=INPLACE, LOCK=NONE"
        )

    def not_null_statement(self, conn: sa.Connection, table: str, column: sa.Column[Any]) -> str:
        default = column.server_default
        text = default.arg if isinstance(default, sa.DefaultClause) else None
        return (
            f"ALTER TABLE {self._quote(conn, table)} MODIFY {self._quote(conn, column.name)} "
            f"{column.type.compile(dialect=conn.dialect)} NOT NULL"
            + (f" DEFAULT '{text}'" if isinstance(text, str) else "")
        )

    def indexes_used(self, conn: sa.Connection, query: sa.Select[Any]) -> list[str]:
        compiled = query.compile(dialect=conn.dialect)
        result = conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params)
        return [str(row["key"]) for row in result.mappings() if row["key"]]

    @contextmanager
    def ddl_lock(self, conn: sa.Connection, name: str, timeout: float) -> Iterator[None]:
        # User locks are server-wide: the database name keeps two databases apart.
        database = conn.execute(sa.text("SELECT DATABASE()")).scalar_one()
        full = f"{database}.{name}"
        if len(full) > _MAX_LOCK_NAME:
            full = f"{name[:20]}.{hashlib.sha256(full.encode()).hexdigest()[:40]}"
        got = conn.execute(
            sa.text("SELECT GET_LOCK(:name, :timeout)"), {"name": full, "timeout": timeout}
        ).scalar()
        if got != 1:
            raise LockTimeoutError(
                f"lock {name!r} is held by another session for more than {timeout:g} s"
            )
        try:
            yield
        finally:
            # If the session is gone, its user locks went with it.
            with contextlib.suppress(DBAPIError):
                conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": full})

    # MariaDB: a SEQUENCE shared by all the repository's tables is the id column's
    # DEFAULT, so a plain INSERT without an id gets one.  MySQL has no sequences:
    # the counter table of the base class serves there.

    @staticmethod
    def _has_sequences(conn: sa.Connection) -> bool:
        return bool(getattr(conn.dialect, "is_mariadb", False))

    def create_id_source(self, conn: sa.Connection, name: str, maximum: int) -> None:
        if not self._has_sequences(conn):
            self._create_counter(conn, name, maximum)
            return
        _SEQUENCES.create(conn, name, maximum)

    def id_source_statements(self, conn: sa.Connection, name: str, maximum: int) -> list[str]:
        if not self._has_sequences(conn):
            return super().id_source_statements(conn, name, maximum)
        return [_SEQUENCES.create_statement(conn, name, maximum)]

    def default_ids(
        self, conn: sa.Connection, name: str, tables: Sequence[str], column: str
    ) -> list[str]:
        if not self._has_sequences(conn):
            return []
        return _SEQUENCES.set_defaults(conn, name, tables, column)

    def default_ids_statements(
        self, conn: sa.Connection, name: str, tables: Sequence[str], column: str
    ) -> list[str]:
        if not self._has_sequences(conn):
            return []
        return [sql for _, sql in _SEQUENCES.missing_defaults(conn, name, tables, column)]

    def id_source_problems(
        self, conn: sa.Connection, name: str, maximum: int, tables: Sequence[str], column: str
    ) -> list[str]:
        if not self._has_sequences(conn):
            return self._counter_problems(conn, name, maximum)
        return _SEQUENCES.problems(conn, name, maximum, tables, column)

    def classify_driver_error(self, error: BaseException | None) -> DatabaseErrorKind | None:
        errno = _errno(error)
        if errno == _ER_LOCK_DEADLOCK and error in _CERTIFICATION:
            return DatabaseErrorKind.CERTIFICATION_CONFLICT
        return None if errno is None else _KINDS.get(errno)

    def row_inserter(self, table: sa.Table, columns: Sequence[str]) -> RowInserter:
        # Rows go to PyMySQL as tuples: its executemany sends one multi-row INSERT per
        # ~1 MB, and skips the per-row dict handling of a Core insert (~15% of the time).
        listed = ", ".join(f"`{c}`" for c in columns)
        sql = f"INSERT INTO `{table.name}` ({listed}) VALUES ({', '.join(['%s'] * len(columns))})"
        return executemany_inserter(sql, [table.c[c].type for c in columns])

    def insert_ignore(self, table: sa.Table, keys: Sequence[str]) -> sa.Insert:
        # INSERT IGNORE would also hide truncation and type errors; a no-op
        # ON DUPLICATE KEY UPDATE skips only duplicate keys.
        statement = mysql_insert(table)
        first = keys[0]
        return statement.on_duplicate_key_update({first: statement.inserted[first]})

    def job_key(
        self, repository: str, entity_id: sa.ColumnElement[Any], due: sa.ColumnElement[Any]
    ) -> sa.ColumnElement[str]:
        return sa.func.concat(
            sa.literal(f"{repository}:"),
            entity_id,
            sa.literal(":"),
            sa.func.date_format(due, sa.literal("%Y%m%dT%H%i%s.%fZ")),
            type_=sa.String(),
        )

    def json_field(self, column: sa.ColumnElement[Any], python_type: type) -> sa.ColumnElement[Any]:
        if python_type is datetime:
            return sa.func.date_format(column, sa.literal("%Y-%m-%dT%H:%i:%s.%f"))
        if python_type is date:
            return sa.func.date_format(column, sa.literal("%Y-%m-%d"))
        if python_type is Decimal:
            # As text: a JSON number would come back as a float and lose digits.
            return sa.cast(column, sa.String())
        if python_type in (dict, list):
            return sa.func.json_extract(column, sa.literal("$"))
        return column

    def json_document(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # A JSON function's result is JSON to MariaDB; the bare column would be a string.
        return sa.func.json_compact(column, type_=sa.Text())

    def datetime_from_micros(self, micros: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # DATETIME arithmetic from the epoch: exact, and unlike FROM_UNIXTIME it does not
        # depend on the session's time zone.
        epoch: sa.ColumnElement[Any] = sa.literal_column("TIMESTAMP'1970-01-01 00:00:00'")
        return sa.func.timestampadd(sa.literal_column("MICROSECOND"), micros, epoch)

    def json_rows(
        self, document: str, columns: Sequence[tuple[str, sa.types.TypeEngine[Any]]]
    ) -> sa.Subquery:
        dialect = mysql_dialect()
        definitions = ", ".join(
            f"{name} {type_.compile(dialect=dialect)} PATH '$[{i}]'"
            for i, (name, type_) in enumerate(columns)
        )
        text = sa.text(
            f"SELECT * FROM JSON_TABLE(:document, '$[*]' COLUMNS ({definitions})) AS rows_"
        ).bindparams(document=document)
        return text.columns(*(sa.column(name, type_) for name, type_ in columns)).subquery("v")

    def current_timestamp(self) -> sa.ColumnElement[datetime]:
        return sa.func.utc_timestamp(6, type_=sa.DateTime())

    def lock_skipping_locked(self, query: sa.Select[Any]) -> sa.Select[Any]:
        # MariaDB 10.6+ and MySQL 8.0+; rendered after LIMIT as MySQL requires.
        return query.with_for_update(skip_locked=True)
