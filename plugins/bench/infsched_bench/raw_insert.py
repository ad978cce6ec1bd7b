"""The yardstick: multi-row INSERTs straight through the driver (PyMySQL, psycopg, sqlite3).

Every other stage is printed beside this rate, measured in the same run on
the same server, so the ratio says what our layers cost over the driver.
The table is the repository's own (same columns and indexes), unpartitioned.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import sqlalchemy as sa

from infsched.database import create_engine
from infsched.dburl import DatabaseUrl
from infsched.entities import entity_spec
from infsched.sentinel_time import EPOCH_TEXT, SentinelDateTime
from infsched_bench.fixtures import BenchMessage


def raw_rows(entities: Sequence[BenchMessage]) -> list[tuple[Any, ...]]:
    spec = entity_spec(BenchMessage)
    names = [c.name for c in spec.columns]
    rows = []
    for e in entities:
        row = []
        for name in names:
            value = getattr(e, name)
            if name == "due":
                value = value.astimezone(UTC).replace(tzinfo=None)
            row.append(value)
        rows.append(tuple(row))
    return rows


def raw_insert_rate(url: DatabaseUrl, entities: Sequence[BenchMessage], batch: int = 1000) -> float:
    """Rows per second inserted as one multi-row INSERT … VALUES per batch, one commit each.

    On a server the statement is written out here rather than left to
    executemany: only PyMySQL rewrites that into a multi-row INSERT; psycopg 3
    sends one INSERT per row (pipelined), which is not the yardstick the speed
    goals name.  An embedded database (SQLite) has no round trips to save and
    keeps executemany of one prepared statement, so its figures stay comparable.
    """
    spec = entity_spec(BenchMessage)
    table = spec.table(sa.MetaData(), "bench_raw")
    table.append_column(
        sa.Column("infsched_job_at", SentinelDateTime(), nullable=False, server_default=EPOCH_TEXT)
    )
    engine = create_engine(url)
    table.metadata.create_all(engine)
    rows = raw_rows(entities)
    columns = ", ".join(c.name for c in spec.columns)
    # The driver's own placeholders: this measures the driver, not SQLAlchemy.
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    group = "(" + ", ".join([mark] * len(spec.columns)) + ")"
    statements: dict[int, str] = {}  # by row count: every batch but perhaps the last is full
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            if not url.scheme.server:
                cursor.executemany(f"INSERT INTO bench_raw ({columns}) VALUES {group}", chunk)
                raw.commit()
                continue
            statement = statements.get(len(chunk))
            if statement is None:
                values = ", ".join([group] * len(chunk))
                statement = statements[len(chunk)] = (
                    f"INSERT INTO bench_raw ({columns}) VALUES {values}"
                )
            cursor.execute(statement, [value for row in chunk for value in row])
            raw.commit()
        elapsed = time.perf_counter() - started
        cursor.close()
    finally:
        raw.close()
        # Dropped, so that the same database can be measured again (before and after a stage).
        table.metadata.drop_all(engine)
        engine.dispose()
    return len(rows) / elapsed
