"""The tables declare kinds of column; each database stores them in its dialect's own types."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa

from infsched.dburl import DatabaseUrl
from infsched.jobstore.tables import create_job_tables, jobs

EngineFor = Callable[[DatabaseUrl], sa.Engine]


def test_mariadb_gets_microseconds_fixed_width_owners_and_long_payloads(
    mysql_url: DatabaseUrl, engine_for: EngineFor
) -> None:
    engine = engine_for(mysql_url)
    create_job_tables(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'infsched_jobs'"
            )
        )
        found = {str(name): str(type_) for name, type_ in rows}
    assert {name: found[name] for name in ("id", "due_at", "lease_until", "owner", "payload")} == {
        "id": "bigint(20)",
        "due_at": "datetime(6)",
        "lease_until": "datetime(6)",
        "owner": "char(128)",
        "payload": "mediumtext",
    }


def test_postgresql_gets_naive_utc_microseconds_unpadded_owners_and_numbered_ids(
    postgresql_url: DatabaseUrl, engine_for: EngineFor
) -> None:
    engine = engine_for(postgresql_url)
    create_job_tables(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT column_name, data_type, datetime_precision, column_default "
                "FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = 'infsched_jobs'"
            )
        )
        found = {
            str(name): (str(type_), precision, default) for name, type_, precision, default in rows
        }
    assert {
        name: found[name][:2] for name in ("id", "due_at", "lease_until", "owner", "payload")
    } == {
        "id": ("bigint", None),
        "due_at": ("timestamp without time zone", 6),
        "lease_until": ("timestamp without time zone", 6),
        # Not char(128): PostgreSQL would read the padding back.
        "owner": ("character varying", None),
        # Stored parsed; read back as its text (the store decodes snapshots itself).
        "payload": ("jsonb", None),
    }
    assert str(found["id"][2]).startswith("nextval(")


def test_sqlite_numbers_the_job_ids_itself(sqlite_url: DatabaseUrl, engine_for: EngineFor) -> None:
    engine = engine_for(sqlite_url)
    create_job_tables(engine)
    now = datetime(2024, 3, 10, 12, 0, 0, 123456)
    row = {
        "repository": "sms",
        "executor": "sms",
        "entity_id": "1",
        "due_at": now,
        "run_at": now,
        "payload": "{}",
        "created_at": now,
    }
    with engine.begin() as conn:
        # The id is the table's rowid only when it is an INTEGER PRIMARY KEY.
        [declared] = [c["type"] for c in sa.inspect(conn).get_columns("infsched_jobs")][:1]
        assert str(declared) == "INTEGER"
        conn.execute(jobs.insert(), [{**row, "job_key": f"k{i}"} for i in range(3)])
        stored = conn.execute(sa.select(jobs.c.id, jobs.c.due_at).order_by(jobs.c.id)).all()
    assert [tuple(r) for r in stored] == [(1, now), (2, now), (3, now)]
