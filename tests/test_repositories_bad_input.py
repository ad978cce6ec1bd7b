"""Bad input gets an error naming what is wrong, before any SQL runs, and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from infsched.clock import FixedClock
from infsched.dburl import DatabaseUrl
from infsched.errors import ConfigError, EntityError
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import DuplicateEntityError, RetentionError
from infsched.repositories.day_sharded import DayShardedRepository
from infsched.repositories.multi_table import MultiTableRepository
from infsched.repositories.partitioned import PartitionedRepository
from infsched_orders.entity import OrderAction, OrderEntity
from tests.repositories_support import (
    BACKENDS,
    DAY,
    NOW,
    TODAY,
    Backend,
    Label,
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
    repo = backend.make()
    repo.maintain()  # lay the tables out now, so that later statements are only the call's
    return repo


def refused_before_sql(backend: Backend, call: Callable[[], object]) -> EntityError:
    with statements(backend.engine) as sent, pytest.raises(EntityError) as refused:
        call()
    assert sent == []
    return refused.value


def test_a_naive_sharding_key_is_refused(backend: Backend, repo: Repo) -> None:
    naive = reminder(datetime(2024, 3, 10, 12, 0))
    error = refused_before_sql(backend, lambda: repo.insert_many([reminder(NOW), naive]))
    assert "Reminder.due: naive datetime 2024-03-10T12:00:00 refused" in str(error)
    assert repo.count_by_date_range(TODAY, TODAY + DAY) == 0


def test_a_missing_sharding_key_is_refused(backend: Backend, repo: Repo) -> None:
    error = refused_before_sql(backend, lambda: repo.insert(reminder(None)))  # type: ignore[arg-type]
    assert "Reminder.due: a value is required, got None" in str(error)


def test_a_wrong_type_is_refused_naming_the_field(backend: Backend, repo: Repo) -> None:
    bad = Reminder(due=NOW, text="x", count="3")  # type: ignore[arg-type]
    error = refused_before_sql(backend, lambda: repo.insert_many([reminder(NOW), bad]))
    assert "Reminder.count: expected int, got str" in str(error)


def test_an_over_long_string_is_refused_naming_the_field(backend: Backend, repo: Repo) -> None:
    error = refused_before_sql(backend, lambda: repo.insert(reminder(NOW, "y" * 21)))
    assert "Reminder.text: 21 characters, longer than the column's 20" in str(error)


def test_another_entity_type_is_refused(backend: Backend, repo: Repo) -> None:
    order = OrderEntity(
        due_at=NOW,
        order_id="o-1",
        customer_id="c-1",
        action=OrderAction.EXPIRE_UNPAID,
        amount=__import__("decimal").Decimal("1.00"),
        currency="EUR",
    )
    error = refused_before_sql(backend, lambda: repo.insert(order))  # type: ignore[arg-type]
    assert "expected a Reminder, got OrderEntity" in str(error)


def test_naive_range_arguments_are_refused_naming_the_argument(repo: Repo) -> None:
    naive = datetime(2024, 3, 10)
    with pytest.raises(ValueError, match="start is a naive datetime"):
        repo.find_all_by_date_range(naive, NOW)
    with pytest.raises(ValueError, match="end is a naive datetime"):
        repo.count_by_date_range(NOW, naive)
    with pytest.raises(ValueError, match="when is a naive datetime"), repo.engine.begin() as conn:
        repo.mark_scheduled(conn, [], naive)
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
        list(repo.find_all_after(NOW, batch_size=0))


def test_an_entity_older_than_retention_is_refused(backend: Backend, repo: Repo) -> None:
    horizon = repo.retention_horizon()
    old = reminder(horizon - timedelta(microseconds=1))
    with pytest.raises(
        RetentionError, match="before the retention horizon 2024-03-08T00:00:00"
    ) as e:
        repo.insert_many([reminder(NOW), old])
    assert "Reminder.due" in str(e.value)
    assert repo.insert(reminder(horizon)).id is not None  # the horizon itself is kept
    assert repo.count_by_date_range(horizon - DAY, NOW + DAY) == 1
    with pytest.raises(RetentionError):
        repo.update_by_id(1, {"due": horizon - DAY})


# -- duplicate ids --


def test_a_duplicate_id_on_the_same_day(repo: Repo) -> None:
    repo.insert(Reminder(id=5, due=NOW, text="first"))
    batch = [Reminder(id=6, due=NOW, text="a"), Reminder(id=5, due=NOW, text="again")]
    with pytest.raises(DuplicateEntityError, match="Reminder id 5 is already stored") as error:
        repo.insert_many(batch)
    assert error.value.entity_id == 5
    assert repo.find_by_id(6) is None  # the rest of the batch is not half-written
    found = repo.find_by_id(5)
    assert found is not None
    assert found.text == "first"


def test_a_duplicate_id_on_another_day(repo: Repo) -> None:
    repo.insert(Reminder(id=5, due=NOW - DAY, text="first"))
    batch = [Reminder(id=7, due=NOW + DAY, text="a"), Reminder(id=5, due=NOW + DAY, text="b")]
    with pytest.raises(DuplicateEntityError, match="id 5 is already stored") as error:
        repo.insert_many(batch)
    assert error.value.entity_id == 5
    assert repo.count_by_date_range(TODAY - DAY, TODAY + 2 * DAY) == 1


def test_an_id_twice_in_one_batch(backend: Backend, repo: Repo) -> None:
    batch = [Reminder(id=9, due=NOW, text="a"), Reminder(id=9, due=NOW + DAY, text="b")]
    with statements(backend.engine) as sent, pytest.raises(DuplicateEntityError, match="twice"):
        repo.insert_many(batch)
    assert sent == []


def test_a_duplicate_the_database_catches_rolls_back_the_whole_call(backend: Backend) -> None:
    first = backend.make(id_generator=twin_ids())
    stored = first.insert(reminder(NOW))
    second = backend.make(id_generator=twin_ids())
    with pytest.raises(DuplicateEntityError, match=f"id {stored.id} is already stored") as error:
        second.insert_many([Reminder(id=1, due=NOW - DAY, text="x"), reminder(NOW)])
    assert error.value.entity_id == stored.id
    assert second.find_by_id(1) is None
    assert second.count_by_date_range(TODAY - DAY, TODAY + DAY) == 1


def test_a_duplicate_the_database_catches_in_the_callers_transaction(backend: Backend) -> None:
    first = backend.make(id_generator=twin_ids())
    stored = first.insert_many([reminder(NOW), reminder(NOW)])
    second = backend.make(id_generator=twin_ids())
    second.insert(reminder(NOW - DAY))  # takes the first twin id, on another day
    with backend.engine.connect() as conn:
        with pytest.raises(DuplicateEntityError) as error:
            second.insert_many([reminder(NOW)], conn=conn)
        conn.rollback()
    assert error.value.entity_id == stored[1].id


def test_a_str_id_must_be_supplied(backend: Backend) -> None:
    labels: DayShardedRepository[Label, str] = backend.make(Label, name="labels")
    with pytest.raises(EntityError, match=r"Label\.id: a str id must be supplied"):
        labels.insert(Label(due=NOW, text="x"))
    labels.insert(Label(id="a-1", due=NOW, text="x"))
    found = labels.find_by_id("a-1")
    assert found is not None
    assert found.text == "x"
    with pytest.raises(DuplicateEntityError, match="'a-1' is already stored"):
        labels.insert(Label(id="a-1", due=NOW + DAY, text="y"))


# -- names and databases --


@pytest.mark.parametrize("bad", ["sms; DROP TABLE x", "sms_%", "1sms", "sms-x", "", "s" * 49])
def test_a_table_prefix_that_is_no_identifier_is_refused(
    bad: str, sqlite_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    engine = engine_for(sqlite_url)
    with pytest.raises(ValueError, match=r"invalid|too long"):
        RepositoryOptions(name="sms", table=bad, entity_type=Reminder, engine=engine)
    with pytest.raises(ValueError, match=r"invalid|too long"):
        RepositoryOptions(name=bad, entity_type=Reminder, engine=engine)


def test_the_partitioned_backend_is_refused_on_sqlite(
    sqlite_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    engine = engine_for(sqlite_url)
    options = RepositoryOptions(
        name="sms", entity_type=Reminder, engine=engine, clock=FixedClock(NOW)
    )
    with pytest.raises(
        ConfigError, match="needs a database with RANGE partitions; SQLite has none"
    ):
        PartitionedRepository(options)
    assert MultiTableRepository(options).name == "sms"
