"""Every repository method on each backend: multi-table (MariaDB, SQLite), partitioned (MariaDB)."""

from __future__ import annotations

import enum
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from infsched.entities import column, id_field, sharding_key
from infsched.errors import EntityError
from infsched.repositories.day_sharded import DayShardedRepository
from infsched.repositories.ids import id_created_at
from tests.repositories_support import (
    BACKENDS,
    DAY,
    NOW,
    TODAY,
    Backend,
    Reminder,
    backend_fixture,
    id_of,
    reminder,
    statements,
)

Repo = DayShardedRepository[Reminder, int]
#: A read of entity rows from a table of the repository.
PAGE = re.compile(r"FROM\s+\W?reminders\w*\W?\s.*ORDER BY", re.DOTALL)
END_OF_TODAY = TODAY + DAY - timedelta(microseconds=1)


backend = backend_fixture(*BACKENDS)


@pytest.fixture
def repo(backend: Backend) -> Repo:
    return backend.make()


def ids(entities: list[Reminder]) -> list[int | None]:
    return [e.id for e in entities]


def ordered(entities: list[Reminder]) -> list[Reminder]:
    return sorted(entities, key=lambda e: (e.due, e.id))


# -- insert and find by id --


def test_insert_generates_a_time_ordered_id_and_find_by_id_returns_the_entity(repo: Repo) -> None:
    before = datetime.now(UTC)
    stored = repo.insert(reminder(NOW, "hello", kind="sms", count=3, done=True, note="n"))
    assert stored.id is not None
    assert before - timedelta(seconds=1) <= id_created_at(stored.id) <= datetime.now(UTC)
    assert repo.find_by_id(id_of(stored)) == stored
    assert stored.due.tzinfo is not None


def test_a_supplied_id_is_kept(repo: Repo) -> None:
    stored = repo.insert(Reminder(id=42, due=NOW, text="mine"))
    assert stored.id == 42
    found = repo.find_by_id(42)
    assert found is not None
    assert found.text == "mine"


def test_insert_many_returns_entities_in_order_with_ids_and_leaves_the_inputs_alone(
    repo: Repo,
) -> None:
    given = [reminder(NOW, "a"), Reminder(id=7, due=NOW + DAY, text="b"), reminder(NOW, "c")]
    stored = repo.insert_many(given)
    assert [e.text for e in stored] == ["a", "b", "c"]
    assert stored[1].id == 7
    assert stored[0].id is not None
    assert stored[2].id is not None
    assert stored[0].id < stored[2].id
    assert given[0].id is None  # the caller's objects are not changed
    assert repo.insert_many([]) == []


def test_find_by_id_never_returns_another_days_row(repo: Repo) -> None:
    # The original library's per-day AUTO_INCREMENT gave id 1 on every day.
    first = repo.insert_many([reminder(NOW - DAY, f"y{i}") for i in range(3)])
    second = repo.insert_many([reminder(NOW + DAY, f"t{i}") for i in range(3)])
    for entity in first + second:
        assert repo.find_by_id(id_of(entity)) == entity
    assert len(set(ids(first + second))) == 6


def test_find_by_id_of_an_unknown_or_mistyped_id(repo: Repo) -> None:
    repo.insert(reminder(NOW))
    assert repo.find_by_id(123456789) is None
    with pytest.raises(EntityError, match=r"Reminder\.id: expected int, got str"):
        repo.find_by_id("1")  # type: ignore[arg-type]
    with pytest.raises(EntityError, match="an id is required"):
        repo.find_by_id(None)  # type: ignore[arg-type]


def test_find_by_id_and_date_range_is_half_open(repo: Repo) -> None:
    stored = repo.insert(reminder(TODAY))
    assert repo.find_by_id_and_date_range(id_of(stored), TODAY, TODAY + DAY) == stored
    assert repo.find_by_id_and_date_range(id_of(stored), TODAY - DAY, TODAY) is None
    assert (
        repo.find_by_id_and_date_range(id_of(stored), TODAY + timedelta(microseconds=1), NOW)
        is None
    )


# -- day boundaries and ranges --


def test_day_boundaries_fall_on_the_right_side(backend: Backend, repo: Repo) -> None:
    last_of_today, first_of_tomorrow = repo.insert_many(
        [reminder(END_OF_TODAY, "late"), reminder(TODAY + DAY, "early")]
    )
    assert list(repo.find_all_by_date_range(TODAY, TODAY + DAY)) == [last_of_today]
    assert list(repo.find_all_by_date_range(TODAY + DAY, TODAY + 2 * DAY)) == [first_of_tomorrow]
    assert repo.count_by_date_range(END_OF_TODAY, TODAY + DAY + timedelta(microseconds=1)) == 2
    by_day = {s.day: s.rows for s in repo.status()}
    assert by_day[TODAY.date()] == 1
    assert by_day[(TODAY + DAY).date()] == 1


def test_a_datetime_in_another_zone_is_stored_by_its_utc_day(repo: Repo) -> None:
    plus_two = timezone_plus(2)
    # 01:00 at +02:00 on the 11th is 23:00 UTC on the 10th.
    stored = repo.insert(reminder(datetime(2024, 3, 11, 1, 0, tzinfo=plus_two)))
    assert [e.id for e in repo.find_all_by_date_range(TODAY, TODAY + DAY)] == [stored.id]
    found = repo.find_by_id(id_of(stored))
    assert found is not None
    assert found.due == datetime(2024, 3, 10, 23, 0, tzinfo=UTC)


def timezone_plus(hours: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=hours))


def test_find_all_by_date_range_streams_pages_ordered_by_key_then_id(
    backend: Backend, repo: Repo
) -> None:
    # Several rows share one key, so pages must break ties by id.
    due_times = [TODAY + timedelta(hours=h) for h in (5, 5, 5, 5, 1, 23, 23)]
    due_times += [TODAY + DAY + timedelta(hours=h) for h in (0, 0, 7)]
    stored = repo.insert_many([reminder(t, f"r{i}") for i, t in enumerate(due_times)])
    with statements(backend.engine) as sent:
        stream = repo.find_all_by_date_range(TODAY, TODAY + 3 * DAY, batch_size=3)
        first = next(stream)
        pages_before = [s for s in sent if PAGE.search(s)]
        rest = list(stream)
    assert [first, *rest] == ordered(stored)
    # One page is read before the first entity is handed out, not the whole range,
    # and every read of rows is a page of at most batch_size.
    assert len(pages_before) == 1
    pages = [s for s in sent if PAGE.search(s)]
    assert len(pages) >= 4
    assert all("LIMIT" in s for s in pages)


def test_ranges_across_many_days(repo: Repo) -> None:
    # Ten days back to front: past the precreated days, into on-demand tables or the catch-all.
    stored = repo.insert_many(
        [reminder(TODAY + i * DAY + timedelta(hours=i), f"d{i}") for i in range(10)]
    )
    assert list(repo.find_all_by_date_range(TODAY, TODAY + 10 * DAY, batch_size=4)) == stored
    assert repo.count_by_date_range(TODAY + 2 * DAY, TODAY + 7 * DAY) == 5
    assert ids(list(repo.find_all_by_date_range(TODAY + 3 * DAY, TODAY + 5 * DAY))) == ids(
        stored[3:5]
    )


def test_empty_ranges(repo: Repo) -> None:
    repo.insert(reminder(NOW))
    assert list(repo.find_all_by_date_range(NOW, NOW)) == []
    assert list(repo.find_all_by_date_range(NOW + DAY, NOW)) == []
    assert repo.count_by_date_range(NOW, NOW) == 0
    assert repo.delete_all_by_date_range(NOW, NOW) == 0
    # Days that have no table at all are simply empty.
    far = datetime(2031, 1, 1, tzinfo=UTC)
    assert list(repo.find_all_by_date_range(far, far + 30 * DAY)) == []
    assert repo.count_by_date_range(far, far + DAY) == 0
    assert repo.find_all_by_ids_and_date_range([1, 2], far, far + DAY) == []
    assert repo.find_unscheduled(far, far + DAY, 10) == []


def test_find_all_by_ids_and_date_range(repo: Repo) -> None:
    a, b, c, d = repo.insert_many(
        [reminder(NOW + DAY), reminder(NOW), reminder(NOW - DAY), reminder(NOW + 2 * DAY)]
    )
    found = repo.find_all_by_ids_and_date_range(
        [*map(id_of, (a, b, c, d, b)), 999], TODAY, TODAY + 2 * DAY
    )
    assert found == [b, a]  # in range, ordered by key; unknown and repeated ids ignored


def test_find_all_before_and_after_are_half_open(repo: Repo) -> None:
    early, at, late = repo.insert_many([reminder(NOW - DAY), reminder(NOW), reminder(NOW + DAY)])
    assert list(repo.find_all_before(NOW)) == [early]
    assert list(repo.find_all_after(NOW, batch_size=1)) == [at, late]
    assert list(repo.find_all_before(NOW + timedelta(microseconds=1))) == [early, at]


def test_find_all_by_column(repo: Repo) -> None:
    sms, _, later_sms = repo.insert_many(
        [reminder(NOW, kind="sms"), reminder(NOW, kind="mail"), reminder(NOW + DAY, kind="sms")]
    )
    assert list(repo.find_all_by_column("kind", "sms", TODAY, TODAY + 3 * DAY)) == [sms, later_sms]
    with pytest.raises(EntityError, match="Reminder has no field 'kindd'"):
        repo.find_all_by_column("kindd", "sms", TODAY, TODAY + DAY)


def test_count_by_date_range(repo: Repo) -> None:
    repo.insert_many([reminder(NOW + i * timedelta(hours=7)) for i in range(12)])
    assert repo.count_by_date_range(TODAY, TODAY + 5 * DAY) == 12
    assert repo.count_by_date_range(NOW, NOW + timedelta(hours=14)) == 2


# -- updates and deletes --


def test_update_by_id(repo: Repo) -> None:
    stored = repo.insert(reminder(NOW, "before"))
    assert repo.update_by_id(id_of(stored), {"text": "after", "note": None, "done": True})
    found = repo.find_by_id(id_of(stored))
    assert found is not None
    assert (found.text, found.note, found.done) == ("after", None, True)
    assert not repo.update_by_id(999, {"text": "nobody"})


def test_update_refuses_what_is_not_an_entity_field(repo: Repo) -> None:
    stored = repo.insert(reminder(NOW))
    with pytest.raises(EntityError, match="Reminder has no field 'infsched_job_at'"):
        repo.update_by_id(id_of(stored), {"infsched_job_at": NOW})
    with pytest.raises(EntityError, match="Reminder has no field 'colour'"):
        repo.update_by_id(id_of(stored), {"colour": "red"})
    with pytest.raises(EntityError, match=r"Reminder\.id: the id cannot be updated"):
        repo.update_by_id(id_of(stored), {"id": 5})
    with pytest.raises(EntityError, match=r"Reminder\.count: expected int, got str"):
        repo.update_by_id(id_of(stored), {"count": "3"})
    with pytest.raises(EntityError, match=r"Reminder\.text: 21 characters"):
        repo.update_by_id(id_of(stored), {"text": "x" * 21})
    with pytest.raises(EntityError, match="nothing to update"):
        repo.update_by_id(id_of(stored), {})


def test_moving_the_sharding_key_to_another_day_moves_the_row(repo: Repo) -> None:
    stored = repo.insert(reminder(NOW, "moving"))
    with repo.engine.begin() as conn:
        repo.mark_scheduled(conn, [stored], NOW)
    assert repo.update_by_id(id_of(stored), {"due": NOW + 2 * DAY})
    assert list(repo.find_all_by_date_range(TODAY, TODAY + DAY)) == []
    moved = repo.find_by_id(id_of(stored))
    assert moved is not None
    assert moved.due == NOW + 2 * DAY
    assert moved.text == "moving"
    # A new due time needs a new job: the engine sees it as unscheduled again.
    assert repo.find_unscheduled(TODAY, TODAY + 5 * DAY, 10) == [moved]


def test_update_by_id_and_date_range_only_inside_the_range(repo: Repo) -> None:
    stored = repo.insert(reminder(NOW, "old"))
    assert not repo.update_by_id_and_date_range(
        id_of(stored), NOW + DAY, NOW + 2 * DAY, {"text": "x"}
    )
    assert repo.update_by_id_and_date_range(id_of(stored), TODAY, TODAY + DAY, {"text": "new"})
    found = repo.find_by_id(id_of(stored))
    assert found is not None
    assert found.text == "new"


def test_delete_by_id(repo: Repo) -> None:
    kept, gone = repo.insert_many([reminder(NOW), reminder(NOW + DAY)])
    assert repo.delete_by_id(id_of(gone))
    assert repo.find_by_id(id_of(gone)) is None
    assert not repo.delete_by_id(id_of(gone))
    assert repo.find_by_id(id_of(kept)) == kept


def test_delete_all_by_date_range(repo: Repo) -> None:
    stored = repo.insert_many([reminder(TODAY + i * timedelta(hours=6)) for i in range(12)])
    assert repo.delete_all_by_date_range(NOW, NOW + DAY) == 4
    left = list(repo.find_all_by_date_range(TODAY - DAY, TODAY + 4 * DAY))
    assert left == stored[:2] + stored[6:]


# -- the engine's bookkeeping --


def test_find_unscheduled_and_mark_scheduled(repo: Repo) -> None:
    stored = repo.insert_many([reminder(TODAY + i * timedelta(hours=9)) for i in range(8)])
    first = repo.find_unscheduled(TODAY, TODAY + 4 * DAY, 3)
    assert first == stored[:3]
    with repo.engine.begin() as conn:
        repo.mark_scheduled(conn, first, NOW)
    assert repo.find_unscheduled(TODAY, TODAY + 4 * DAY, 100) == stored[3:]
    assert repo.find_unscheduled(TODAY, TODAY + 4 * DAY, 0) == []
    # Marking is part of the caller's transaction: rolled back, nothing is marked.
    with repo.engine.connect() as conn:
        repo.mark_scheduled(conn, stored[3:], NOW)
        conn.rollback()
    assert repo.find_unscheduled(TODAY, TODAY + 4 * DAY, 100) == stored[3:]


def test_lock_unscheduled_returns_ids_and_key_range_and_skips_what_another_holds(
    backend: Backend, repo: Repo
) -> None:
    stored = repo.insert_many([reminder(TODAY + i * timedelta(hours=5)) for i in range(8)])
    end = TODAY + 3 * DAY
    with repo.engine.begin() as conn:
        locked = repo.lock_unscheduled(conn, TODAY, end, 3)
        assert sorted(i for lot in locked for i in lot.ids) == ids(stored[:3])
        assert (locked[0].first, locked[-1].last) == (
            stored[0].due.replace(tzinfo=None),
            stored[2].due.replace(tzinfo=None),
        )
        if backend.url.scheme.dialect == "mysql":
            # Another transaction skips the three.  (On a partitioned table the first
            # scan also holds the first row of each later partition it merged in,
            # until it commits: those are skipped too, and taken by a later batch.)
            with repo.engine.begin() as other:
                rest = {i for lot in repo.lock_unscheduled(other, TODAY, end, 10) for i in lot.ids}
                assert set(ids(stored[3:5])) <= rest <= set(ids(stored[3:]))
        repo.mark_locked(conn, locked, NOW)
    left = repo.find_unscheduled(TODAY, end, 100)
    assert left == stored[3:]


def test_lock_unscheduled_fails_loudly_when_the_ids_do_not_fit(backend: Backend) -> None:
    if backend.url.scheme.dialect != "mysql":
        pytest.skip("only MariaDB cuts the aggregate (group_concat_max_len)")
    repo = backend.make()
    repo.insert_many([reminder(TODAY + i * timedelta(minutes=1)) for i in range(50)])
    with repo.engine.begin() as conn:
        conn.execute(sa.text("SET SESSION group_concat_max_len = 64"))
        with pytest.raises(RuntimeError, match="50 entities were locked but the database"):
            repo.lock_unscheduled(conn, TODAY, TODAY + DAY, 50)
        conn.execute(sa.text("SET SESSION group_concat_max_len = 67108864"))
        # Nothing was marked: the same batch is whole the next time.
        assert (
            sum(len(lot.ids) for lot in repo.lock_unscheduled(conn, TODAY, TODAY + DAY, 50)) == 50
        )


def test_mark_scheduled_spans_days_and_large_batches(repo: Repo) -> None:
    stored = repo.insert_many(
        [reminder(TODAY + timedelta(minutes=2 * i)) for i in range(1500)]  # two days
    )
    with repo.engine.begin() as conn:
        repo.mark_scheduled(conn, stored[:1400], NOW)
    assert ids(repo.find_unscheduled(TODAY, TODAY + 3 * DAY, 1000)) == ids(stored[1400:])


def test_a_repository_built_unscheduled_has_no_bookkeeping_and_refuses_scheduling(
    backend: Backend,
) -> None:
    repo = backend.make(name="stored", scheduled=False)
    stored = repo.insert_many([reminder(TODAY + i * timedelta(hours=9)) for i in range(3)])
    assert list(repo.find_all_by_date_range(TODAY, TODAY + 2 * DAY)) == stored
    with backend.engine.connect() as conn:
        tables = [t for t in sa.inspect(conn).get_table_names() if t.startswith("stored")]
        assert tables
        for table in tables:
            columns = {c["name"] for c in sa.inspect(conn).get_columns(table)}
            assert "infsched_job_at" not in columns, table
    # Moving an entity to another day needs no bookkeeping either.
    assert repo.update_by_id(id_of(stored[0]), {"due": TODAY + DAY})
    with pytest.raises(EntityError, match="'stored' was built with scheduled=False"):
        repo.find_unscheduled(TODAY, TODAY + 2 * DAY, 10)
    with backend.engine.begin() as conn, pytest.raises(EntityError, match="scheduled=False"):
        repo.lock_unscheduled(conn, TODAY, TODAY + 2 * DAY, 10)
    with backend.engine.begin() as conn, pytest.raises(EntityError, match="scheduled=False"):
        repo.mark_scheduled(conn, stored, NOW)


def test_retention_horizon_is_the_start_of_the_oldest_retained_day(backend: Backend) -> None:
    repo = backend.make(retention_days=4)
    assert repo.retention_horizon() == TODAY - 4 * DAY
    assert repo.engine is backend.engine


def test_insert_many_in_the_callers_transaction(backend: Backend, repo: Repo) -> None:
    far = NOW + 20 * DAY  # a day with no table yet
    with repo.engine.connect() as conn:
        repo.insert_many([reminder(NOW), reminder(far)], conn=conn)
        conn.rollback()
    assert repo.count_by_date_range(TODAY - DAY, far + DAY) == 0
    with repo.engine.begin() as conn:
        stored = repo.insert_many([reminder(NOW), reminder(far)], conn=conn)
    assert list(repo.find_all_by_date_range(TODAY, far + DAY)) == stored


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.define(kw_only=True)
class Everything:
    """One field of each supported type: every value must come back as it went in."""

    id: int | None = id_field()
    due: datetime = sharding_key()
    text: str = column(length=30)
    long_text: str = column()
    number: float = column()
    flag: bool = column()
    amount: Decimal = column(precision=10, scale=2)
    day: date = column()
    colour: Colour = column()
    attributes: dict[str, Any] = column()
    tags: list[str] = column()
    maybe: int | None = column(default=None)
    when: datetime | None = column(default=None)


def test_every_column_type_round_trips(backend: Backend) -> None:
    repo: DayShardedRepository[Everything, int] = backend.make(Everything, name="everything")
    given = Everything(
        due=NOW,
        text="ünïcode ✓",
        long_text="x" * 5000,
        number=2.5,
        flag=True,
        amount=Decimal("12345678.91"),
        day=date(2024, 2, 29),
        colour=Colour.BLUE,
        attributes={"a": [1, 2], "b": None},
        tags=["x", "y"],
        when=NOW - DAY,
    )
    stored = repo.insert(given)
    assert repo.find_by_id(id_of(stored)) == stored
    assert repo.update_by_id(id_of(stored), {"attributes": {"c": 3}, "flag": False, "maybe": 7})
    found = repo.find_by_id(id_of(stored))
    assert found is not None
    assert (found.attributes, found.flag, found.maybe) == ({"c": 3}, False, 7)
    assert list(repo.find_all_by_column("colour", Colour.BLUE, TODAY, TODAY + DAY)) == [found]


def test_a_first_insert_in_a_callers_transaction_that_already_wrote(backend: Backend) -> None:
    fresh = backend.make(name="fresh")  # never used: its tables are not laid out yet
    with backend.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE other (x INTEGER)"))
    with backend.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO other VALUES (1)"))  # holds SQLite's write lock
        stored = fresh.insert_many([reminder(NOW)], conn=conn)
    assert fresh.find_by_id(id_of(stored[0])) == stored[0]


def test_bad_input_is_refused_before_the_first_use_lays_anything_out(backend: Backend) -> None:
    fresh = backend.make(name="fresh")
    with statements(backend.engine) as sent, pytest.raises(EntityError, match=r"Reminder\.text"):
        fresh.insert(reminder(NOW, "z" * 30))
    assert sent == []
