"""PostgreSQL's declarative partitioning: ``PARTITION BY RANGE`` with a DEFAULT catch-all.

Each partition is a table of its own, ``<table>_pYYYYMMDD`` (``<table>_pmax``
for the DEFAULT one), cut to the 63-character identifier limit with a hash
of the table name where it would not fit.  The partition name the rest of
infsched sees (`RangePartition.name`) is the part after the table's prefix.

A day partition is made in the maintenance transaction, always as a plain
table that is then attached:

1. ``LOCK TABLE parent IN SHARE ROW EXCLUSIVE MODE``.  It waits for every
   transaction that wrote to the table to end, and makes new writers wait
   (an INSERT takes ROW EXCLUSIVE on the parent before it routes its rows);
   readers (ACCESS SHARE) and row locks for claims (ROW SHARE) go on, but
   from step 3 to the commit those that read the DEFAULT partition wait.
2. ``CREATE TABLE new (LIKE parent ...)``, and the rows the DEFAULT
   partition holds for the new range move into it in one statement
   (``WITH moved AS (DELETE ... RETURNING *) INSERT ... SELECT``).
3. ``ALTER TABLE parent ATTACH PARTITION new FOR VALUES FROM ... TO ...``:
   SHARE UPDATE EXCLUSIVE on the parent, ACCESS EXCLUSIVE on the new table
   and on the DEFAULT partition, whose rows it scans to prove that none
   belongs to the new range (PostgreSQL 12+; the ALTER TABLE reference).

At the commit the new partition appears with its rows.  A writer that waited
in step 1 then reads the new partition bounds and routes its rows there.
The lock in step 1 is needed for this.  Without it, an INSERT that had
already chosen the DEFAULT partition would wait only for the ACCESS EXCLUSIVE
lock on it, then check the DEFAULT partition's new constraint and fail.
CREATE TABLE ... PARTITION OF is not used because it holds ACCESS EXCLUSIVE
on the parent until the commit, which would block readers of every day.

Each day's split runs in a savepoint.  A fetch that holds row locks on the
DEFAULT partition and then marks rows waits for the lock of step 1 while the
ATTACH waits for the fetch: PostgreSQL breaks that deadlock by failing one of
them.  When it is the split, the savepoint rolls back (releasing its locks,
so the fetch finishes) and the split is tried again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import RESERVED_WORDS
from sqlalchemy.schema import CreateIndex, CreateTable

from infsched.dialects.base import RangePartition

_PLAIN_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_MAX_IDENTIFIER = 63
_UPPER = re.compile(r"TO \('([^']*)'\)\s*$")


def _q(name: str) -> str:
    """`name` quoted where PostgreSQL needs it, as its catalog functions write it back."""
    if _PLAIN_IDENTIFIER.match(name) and name not in RESERVED_WORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


#: Splits of one day tried, when PostgreSQL breaks a deadlock by rolling the split back.
_SPLIT_ATTEMPTS = 5


def _is_deadlock(exc: sa.exc.DBAPIError) -> bool:
    """Whether PostgreSQL rolled the statement back to break a deadlock (SQLSTATE 40P01)."""
    return getattr(exc.orig, "sqlstate", None) == "40P01"


def _literal(moment: datetime) -> str:
    return f"'{moment.isoformat(sep=' ')}'"


def partition_table(table: str, partition: str) -> str:
    """The name of the table holding `table`'s partition `partition` (``pYYYYMMDD``, ``pmax``)."""
    full = f"{table}_{partition}"
    if len(full) <= _MAX_IDENTIFIER:
        return full
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    keep = _MAX_IDENTIFIER - len(partition) - len(digest) - 2
    return f"{table[:keep]}_{digest}_{partition}"


@attrs.frozen
class _Child:
    """One partition as the catalog has it: its own table and its bound."""

    relname: str
    partition: RangePartition


class PostgreSQLRangePartitioning:
    """Native RANGE partitions on a timestamp column, the DEFAULT partition as the catch-all."""

    def scheme(self, column: str) -> str:
        return f"RANGE ({_q(column)})"

    # -- the catalog --

    @staticmethod
    def _relation(conn: sa.Connection, table: str) -> tuple[int, str] | None:
        row = conn.execute(
            sa.text(
                "SELECT c.oid, c.relkind FROM pg_class c "
                "WHERE c.relnamespace = current_schema()::regnamespace "
                "AND c.relname = :table AND c.relkind IN ('r', 'p')"
            ),
            {"table": table},
        ).first()
        return None if row is None else (int(row[0]), str(row[1]))

    def _children(self, conn: sa.Connection, table: str) -> list[_Child] | None:
        relation = self._relation(conn, table)
        if relation is None:
            return None
        oid, kind = relation
        if kind != "p":
            return []
        rows = conn.execute(
            sa.text(
                "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = :oid"
            ),
            {"oid": oid},
        )
        children = []
        for relname, bound in rows:
            suffix = str(relname).rsplit("_", 1)[-1]
            name = suffix if partition_table(table, suffix) == relname else str(relname)
            match = _UPPER.search(str(bound))
            upper = datetime.fromisoformat(match.group(1)) if match else None
            children.append(_Child(str(relname), RangePartition(name, upper)))
        # In key order, the catch-all (DEFAULT, or a range up to MAXVALUE) last.
        children.sort(key=lambda c: (c.partition.upper is None, c.partition.upper or datetime.min))
        return children

    def partitions(self, conn: sa.Connection, table: str) -> list[RangePartition] | None:
        children = self._children(conn, table)
        return None if children is None else [c.partition for c in children]

    def partitioned_on(self, conn: sa.Connection, table: str) -> str | None:
        found = conn.execute(
            sa.text(
                "SELECT pg_get_partkeydef(c.oid) FROM pg_class c "
                "WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = :table"
            ),
            {"table": table},
        ).scalar()
        return None if found is None else str(found)

    @staticmethod
    def _key_column(conn: sa.Connection, table: str) -> str:
        """The column `table` is partitioned on (read back: `ensure` is given no column)."""
        return str(
            conn.execute(
                sa.text(
                    "SELECT a.attname FROM pg_partitioned_table p JOIN pg_attribute a "
                    "ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
                    "WHERE p.partrelid = (current_schema() || '.' || quote_ident(:table))::regclass"
                ),
                {"table": table},
            ).scalar_one()
        )

    # -- DDL --

    @staticmethod
    def _bounds(lower: datetime | None, upper: datetime) -> str:
        start = "MINVALUE" if lower is None else _literal(lower)
        return f"FOR VALUES FROM ({start}) TO ({_literal(upper)})"

    def create_table(
        self,
        conn: sa.Connection,
        table: sa.Table,
        column: str,
        partitions: Sequence[RangePartition],
    ) -> None:
        # As the dialect's create_table: a lock on the name, so that a racing session waits.
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"),
            {"name": table.name},
        )
        ddl = str(CreateTable(table, if_not_exists=True).compile(dialect=conn.dialect)).strip()
        conn.exec_driver_sql(f"{ddl} PARTITION BY RANGE ({_q(column)})")
        # On the parent: every partition, made now or attached later, gets them too.
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            conn.execute(CreateIndex(index, if_not_exists=True))
        parent = _q(table.name)
        lower: datetime | None = None  # the lowest partition takes every row below its bound
        for partition in partitions:
            name = _q(partition_table(table.name, partition.name))
            if partition.upper is None:
                conn.exec_driver_sql(f"CREATE TABLE {name} PARTITION OF {parent} DEFAULT")
                continue
            bounds = self._bounds(lower, partition.upper)
            conn.exec_driver_sql(f"CREATE TABLE {name} PARTITION OF {parent} {bounds}")
            lower = partition.upper

    def ensure(
        self,
        conn: sa.Connection,
        table: str,
        existing: Sequence[RangePartition],
        new: Sequence[RangePartition],
        catch_all: str,
    ) -> list[RangePartition]:
        parent = _q(table)
        children = self._children(conn, table) or []
        default = next((c.relname for c in children if c.partition.upper is None), None)
        if default is not None and not new:
            return []
        made: list[RangePartition] = []
        if default is None:
            conn.exec_driver_sql(f"LOCK TABLE {parent} IN SHARE ROW EXCLUSIVE MODE")
            default = partition_table(table, catch_all)
            conn.exec_driver_sql(f"CREATE TABLE {_q(default)} PARTITION OF {parent} DEFAULT")
            made.append(RangePartition(catch_all, None))
        uppers = [p.upper for p in existing if p.upper is not None]
        lower = max(uppers) if uppers else None
        key = _q(self._key_column(conn, table)) if new else ""
        for partition in new:
            if partition.upper is None:
                raise ValueError(f"new partition {partition.name!r} has no upper bound")
            for attempt in range(1, _SPLIT_ATTEMPTS + 1):
                try:
                    with conn.begin_nested():
                        bounds = (lower, partition.upper)
                        self._split(conn, table, default, key, bounds, partition.name)
                    break
                except sa.exc.DBAPIError as exc:
                    if attempt == _SPLIT_ATTEMPTS or not _is_deadlock(exc):
                        raise
            lower = partition.upper
        made[:0] = new
        return made

    def _split(
        self,
        conn: sa.Connection,
        table: str,
        default: str,
        key: str,
        bounds: tuple[datetime | None, datetime],
        partition: str,
    ) -> None:
        """Steps 1 to 3 of the module's docstring: day `partition`, `bounds`, off `default`."""
        parent = _q(table)
        lower, upper = bounds
        # Writers wait from here to the commit, then route to the new partitions
        # (the module's docstring says why this lock comes first).
        conn.exec_driver_sql(f"LOCK TABLE {parent} IN SHARE ROW EXCLUSIVE MODE")
        name = _q(partition_table(table, partition))
        conn.exec_driver_sql(
            f"CREATE TABLE {name} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        below = f"{key} < {_literal(upper)}"
        within = below if lower is None else f"{key} >= {_literal(lower)} AND {below}"
        conn.exec_driver_sql(
            f"WITH moved AS (DELETE FROM {_q(default)} WHERE {within} RETURNING *) "
            f"INSERT INTO {name} SELECT * FROM moved"
        )
        conn.exec_driver_sql(
            f"ALTER TABLE {parent} ATTACH PARTITION {name} {self._bounds(lower, upper)}"
        )

    def drop_below(
        self, conn: sa.Connection, table: str, partitions: Sequence[RangePartition], bound: datetime
    ) -> list[RangePartition]:
        below = [p for p in partitions if p.upper is not None and p.upper <= bound]
        children = {c.partition.name: c.relname for c in self._children(conn, table) or []}
        for partition in below:
            relname = children.get(partition.name)
            if relname is not None:
                conn.exec_driver_sql(f"DROP TABLE {_q(relname)}")
        default = next(
            (c.relname for c in self._children(conn, table) or [] if c.partition.upper is None),
            None,
        )
        if below and default is not None:
            # Once the lowest partition is gone, a row written below the lowest bound lands
            # in the DEFAULT partition; it goes with the days past retention.
            key = _q(self._key_column(conn, table))
            conn.exec_driver_sql(f"DELETE FROM {_q(default)} WHERE {key} < {_literal(bound)}")
        return below

    def explain_partitions(
        self, conn: sa.Connection, query: sa.Select[*tuple[Any, ...]]
    ) -> list[str]:
        names: dict[str, str] = {}
        for source in query.get_final_froms():
            if isinstance(source, sa.Table):
                for child in self._children(conn, source.name) or []:
                    names[child.relname] = child.partition.name
        compiled = query.compile(dialect=conn.dialect)
        plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params)
        document = plan.scalar_one()
        used: list[str] = []

        def walk(node: dict[str, Any]) -> None:
            relation = node.get("Relation Name")
            if relation in names and names[relation] not in used:
                used.append(names[relation])
            for child in node.get("Plans", ()):
                walk(child)

        for entry in document if isinstance(document, list) else json.loads(document):
            walk(entry["Plan"])
        return used
