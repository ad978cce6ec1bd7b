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
    """Rows per second inserted with the driver's executemany, one commit per batch."""
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
    marks = ", ".join([mark] * len(spec.columns))
    statement = f"INSERT INTO bench_raw ({columns}) VALUES ({marks})"
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            cursor.executemany(statement, rows[i : i + batch])
            raw.commit()
        elapsed = time.perf_counter() - started
        cursor.close()
    finally:
        raw.close()
        # Dropped, so that the same database can be measured again (before and after a stage).
        table.metadata.drop_all(engine)
        engine.dispose()
    return len(rows) / elapsed
