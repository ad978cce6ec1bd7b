"""Another application writing entity rows with plain SQL, by docs/integrating.md.

Run as a separate process; it imports nothing from infsched (only the
standard library, PyMySQL and psycopg).  Reads a plan as JSON on stdin::

    {"database": {"sqlite": PATH} | {"mysql": {"host", "port", "user", "database"}}
                  | {"postgresql": CONNINFO},
     "backend": "multi_table" | "partitioned", "table": "reminders",
     "groups": [{"label": "timely", "due": ISO-8601 UTC, "count": 5,
                 "table_day": "YYYY-MM-DD" | null}]}

`table_day` writes a multi_table group into that day's table instead of the
table of its due day: the mistake the engine must survive.  Prints
``{label: [ids]}`` on stdout.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pymysql


def sql_time(value: datetime) -> str:
    """Naive UTC with all six fractional digits, as the contract asks."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class Writer:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.backend: str = plan["backend"]
        self.table: str = plan["table"]
        database = plan["database"]
        self.mysql = "mysql" in database
        self.postgresql = "postgresql" in database
        if self.mysql:
            self.db: Any = pymysql.connect(**database["mysql"], autocommit=False)
        elif self.postgresql:
            self.db = psycopg.connect(database["postgresql"], autocommit=False)
        else:
            self.db = sqlite3.connect(database["sqlite"], isolation_level=None, timeout=30)

    def target(self, day: str) -> str:
        if self.backend == "partitioned":
            return self.table  # the server picks the partition; pmax takes far days
        return f"{self.table}_{day.replace('-', '')}"

    def day_tables(self) -> list[str]:
        if self.mysql:
            with self.db.cursor() as cur:
                cur.execute("SHOW TABLES")
                names = [row[0] for row in cur.fetchall()]
        elif self.postgresql:
            rows = self.db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchall()
            names = [row[0] for row in rows]
        else:
            names = [
                row[0]
                for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
        prefix = self.table + "_"
        return sorted(n for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit())

    def ensure_table(self, name: str) -> None:
        """A day without a table: a copy of an existing day table (the doc's option 2)."""
        if self.backend == "partitioned" or name in self.day_tables():
            return
        template = self.day_tables()[0]
        if self.mysql:
            with self.db.cursor() as cur:
                cur.execute(f"CREATE TABLE IF NOT EXISTS `{name}` LIKE `{template}`")
            return
        if self.postgresql:
            # The lock infsched takes on the name too; then columns, defaults and
            # constraints, and the template's indexes under the new table's names.
            self.db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))
            self.db.execute(
                f"CREATE TABLE IF NOT EXISTS {name} (LIKE {template} INCLUDING ALL "
                "EXCLUDING INDEXES, PRIMARY KEY (id))"
            )
            indexes = self.db.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename = %s AND indexname <> %s",
                (template, f"{template}_pkey"),
            ).fetchall()
            for (sql,) in indexes:
                sql = sql.replace(template, name)
                sql = sql.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1)
                sql = sql.replace("CREATE UNIQUE INDEX ", "CREATE UNIQUE INDEX IF NOT EXISTS ", 1)
                self.db.execute(sql)
            self.db.commit()
            return
        statements = self.db.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL "
            "ORDER BY type DESC",
            (template,),
        ).fetchall()
        for (sql,) in statements:
            sql = sql.replace(template, name)
            sql = sql.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1)
            sql = sql.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1)
            self.db.execute(sql)

    def write(self, due: datetime, count: int, table_day: str | None) -> list[int]:
        table = self.target(table_day or due.astimezone(UTC).strftime("%Y-%m-%d"))
        self.ensure_table(table)
        rows = [(sql_time(due + timedelta(milliseconds=i)), f"raw {i}", 0) for i in range(count)]
        if self.postgresql:
            # The id column defaults to nextval() of the repository's sequence.
            ids = [
                int(
                    self.db.execute(
                        f"INSERT INTO {table} (due, text, priority) VALUES (%s, %s, %s) "
                        "RETURNING id",
                        row,
                    ).fetchone()[0]
                )
                for row in rows
            ]
            self.db.commit()
            return ids
        if self.mysql:
            # The id column defaults to NEXT VALUE FOR the repository's sequence.
            ids = []
            with self.db.cursor() as cur:
                for row in rows:
                    cur.execute(
                        f"INSERT INTO `{table}` (due, text, priority) VALUES (%s, %s, %s) "
                        "RETURNING id",
                        row,
                    )
                    ids.append(int(cur.fetchone()[0]))
            self.db.commit()
            return ids
        self.db.execute("BEGIN IMMEDIATE")
        counter = f"{self.table}_id_seq"
        self.db.execute(f"UPDATE {counter} SET next_id = next_id + ? WHERE slot = 1", (count,))
        (first,) = self.db.execute(
            f"SELECT next_id - ? FROM {counter} WHERE slot = 1", (count,)
        ).fetchone()
        ids = list(range(first, first + count))
        self.db.executemany(
            f"INSERT INTO {table} (id, due, text, priority) VALUES (?, ?, ?, ?)",
            [(i, *row) for i, row in zip(ids, rows, strict=True)],
        )
        self.db.execute("COMMIT")
        return ids


def main() -> None:
    plan = json.load(sys.stdin)
    writer = Writer(plan)
    written: dict[str, list[int]] = {}
    for group in plan["groups"]:
        due = datetime.fromisoformat(group["due"])
        written.setdefault(group["label"], []).extend(
            writer.write(due, group["count"], group.get("table_day"))
        )
    writer.db.close()
    json.dump(written, sys.stdout)


if __name__ == "__main__":
    main()
