"""insert_many is batched: multi-row statements, one transaction, round trips counted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from infsched.repositories.base import DuplicateEntityError
from infsched.repositories.day_sharded import DayShardedRepository
from tests.repositories_support import (
    BACKENDS,
    DAY,
    NOW,
    TODAY,
    Backend,
    Reminder,
    backend_fixture,
    reminder,
    statements,
    twin_ids,
)

Repo = DayShardedRepository[Reminder, int]


backend = backend_fixture(*BACKENDS)


@pytest.fixture
def repo(backend: Backend) -> Repo:
    repo = backend.make(precreate_days=3)
    repo.maintain()
    return repo


@contextmanager
def commits(engine: sa.Engine) -> Iterator[list[Any]]:
    done: list[Any] = []

    def record(conn: Any) -> None:
        done.append(conn)

    sa.event.listen(engine, "commit", record)
    try:
        yield done
    finally:
        sa.event.remove(engine, "commit", record)


def inserts(sent: list[str]) -> list[str]:
    """The statements that write rows: an INSERT, or PostgreSQL's COPY … FROM STDIN."""
    return [s for s in sent if s.lstrip().upper().startswith(("INSERT", "COPY"))]


def test_a_thousand_rows_of_one_day_are_one_statement_and_one_commit(
    backend: Backend, repo: Repo
) -> None:
    batch = [reminder(TODAY + timedelta(seconds=i), f"r{i}") for i in range(1000)]
    with statements(backend.engine) as sent, commits(backend.engine) as done:
        repo.insert_many(batch)
    assert len(inserts(sent)) == 1
    assert len(sent) == 1  # generated ids need no look-up
    assert len(done) == 1
    assert repo.count_by_date_range(TODAY, TODAY + DAY) == 1000


def test_larger_batches_go_in_statements_of_a_thousand_rows(backend: Backend, repo: Repo) -> None:
    batch = [reminder(TODAY + timedelta(seconds=i)) for i in range(2500)]
    with statements(backend.engine) as sent, commits(backend.engine) as done:
        repo.insert_many(batch)
    assert len(inserts(sent)) == 3
    assert len(done) == 1


def test_rows_of_several_days_need_one_statement_per_table(backend: Backend, repo: Repo) -> None:
    batch = [reminder(NOW + (i % 3) * DAY) for i in range(30)]
    with statements(backend.engine) as sent:
        repo.insert_many(batch)
    assert len(inserts(sent)) == (1 if backend.is_partitioned else 3)


def test_supplied_ids_cost_one_look_up_across_all_days(backend: Backend, repo: Repo) -> None:
    batch = [Reminder(id=i + 1, due=NOW + (i % 3) * DAY, text="x") for i in range(30)]
    with statements(backend.engine) as sent:
        repo.insert_many(batch)
    look_ups = [s for s in sent if s not in inserts(sent)]
    # multi-table: list the tables, then one UNION ALL over them; partitioned: one SELECT.
    assert len(look_ups) == (1 if backend.is_partitioned else 2)


def test_a_duplicate_in_a_later_statement_leaves_nothing_written(backend: Backend) -> None:
    # The clash is in the third statement; the first two are undone.
    first = backend.make(id_generator=twin_ids())
    there = first.insert_many([reminder(NOW) for _ in range(2001)])
    second = backend.make(id_generator=twin_ids())
    batch = [reminder(NOW - DAY) for _ in range(2000)] + [reminder(NOW)]
    with statements(backend.engine) as sent, pytest.raises(DuplicateEntityError) as error:
        second.insert_many(batch)
    # Every id of the call clashes with one stored on some day; the smallest is named.
    assert error.value.entity_id == there[0].id
    assert len(inserts(sent)) == 3
    assert second.count_by_date_range(TODAY - DAY, TODAY) == 0


multi_table = backend_fixture("multi_table-mysql", "multi_table-postgresql", "multi_table-sqlite")


@pytest.mark.parametrize("given_conn", [False, True], ids=["own", "callers"])
def test_a_day_table_dropped_meanwhile_is_made_again(
    multi_table: Backend, given_conn: bool
) -> None:
    repo = multi_table.make(precreate_days=3)
    repo.maintain()
    first = repo.insert_many([reminder(NOW, "first")])
    # Another process drops today's table; this repository still thinks it is there.
    with multi_table.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE reminders_{TODAY:%Y%m%d}")
    batch = [reminder(NOW + timedelta(seconds=i), f"r{i}") for i in range(3)]
    if given_conn:
        with multi_table.engine.begin() as conn:
            stored = repo.insert_many(batch, conn=conn)
    else:
        stored = repo.insert_many(batch)
    assert sorted(r.text for r in repo.find_all_by_date_range(TODAY, TODAY + DAY)) == [
        "r0",
        "r1",
        "r2",
    ]
    assert repo.find_by_id(first[0].id) is None
    assert [repo.find_by_id(r.id) for r in stored] == stored


on_mysql = backend_fixture("multi_table-mysql", "partitioned-mysql")


def test_the_server_receives_one_insert_statement_per_thousand_rows(on_mysql: Backend) -> None:
    repo = on_mysql.make()
    repo.maintain()

    def inserts_run(conn: sa.Connection) -> int:
        row = conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Com_insert'").one()
        return int(row[1])

    with repo.engine.begin() as conn:
        before = inserts_run(conn)
        repo.insert_many([reminder(TODAY + timedelta(seconds=i)) for i in range(2000)], conn=conn)
        assert inserts_run(conn) - before == 2
