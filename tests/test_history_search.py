"""``infsched jobs history``: filters, keyset pages across days, --json, the indexes read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from infsched.dburl import DatabaseUrl
from infsched.dialects import dialect_for
from infsched.engine.history import HISTORY_REPOSITORY, JobOutcome
from infsched.engine.scheduler import history_repository
from infsched.jobstore.base import Outcome, job_key
from infsched.management.history_search import Cursor, HistoryFilter, HistorySearch
from tests.management_support import Cli, Seed, clean_cli

#: Noon yesterday: every seeded outcome lies on one of the three days before today.
NOON = datetime.combine(datetime.now(UTC).date() - timedelta(days=1), time(12), UTC)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    return clean_cli(capsys, monkeypatch, tmp_path)


@pytest.fixture
def seed(every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]) -> Seed:
    return Seed(engine_for(every_url))


def db(seed: Seed) -> str:
    return seed.engine.url.render_as_string(hide_password=False)


def outcome(
    entity_id: int,
    finished: datetime,
    *,
    state: Outcome = Outcome.SUCCEEDED,
    repository: str = "sms",
    executor: str | None = None,
    node: str = "node-a",
) -> JobOutcome:
    due = finished - timedelta(seconds=1)
    return JobOutcome(
        finished_at=finished,
        job_key=job_key(repository, entity_id, due),
        repository=repository,
        entity_id=str(entity_id),
        executor=executor or repository,
        state=state,
        attempt=1,
        due_at=due,
        started_at=None if state is Outcome.MISFIRED else due,
        node=node,
        error="boom" if state in (Outcome.FAILED, Outcome.DEAD) else None,
    )


def store(seed: Seed, outcomes: Sequence[JobOutcome]) -> list[JobOutcome]:
    """The outcomes written, with their ids."""
    return seed.history.repository.insert_many(outcomes)


def entities(result: Any) -> list[str]:
    return [o["entity_id"] for o in result["outcomes"]]


def test_each_filter_selects_its_outcomes_newest_first(cli: Cli, seed: Seed) -> None:
    store(
        seed,
        [
            outcome(1, NOON - timedelta(days=2)),
            outcome(2, NOON - timedelta(days=1), state=Outcome.FAILED),
            outcome(3, NOON - timedelta(days=1, hours=1), state=Outcome.DEAD, repository="orders"),
            outcome(4, NOON, state=Outcome.MISFIRED, node="node-b"),
            outcome(5, NOON + timedelta(hours=1), state=Outcome.CANCELLED, executor="bulk"),
            outcome(6, NOON + timedelta(hours=2), repository="orders", node="node-b"),
        ],
    )

    def found(*args: str) -> list[str]:
        result = cli("jobs", "history", "--db", db(seed), "--json", *args)
        assert result.code == 0, result.err
        return entities(result.json())

    assert found() == ["6", "5", "4", "2", "3", "1"]
    assert found("--state", "failed") == ["2"]
    assert found("--state", "dead") == ["3"]
    assert found("--state", "misfired") == ["4"]
    assert found("--state", "cancelled") == ["5"]
    assert found("--state", "succeeded") == ["6", "1"]
    assert found("--repo", "orders") == ["6", "3"]
    assert found("--executor", "bulk") == ["5"]
    assert found("--executor", "sms") == ["4", "2", "1"]
    assert found("--node", "node-b") == ["6", "4"]
    since, until = (NOON - timedelta(days=1, hours=1)).isoformat(), NOON.isoformat()
    # --since is inclusive, --until exclusive.
    assert found("--since", since, "--until", until) == ["2", "3"]
    assert found("--since", NOON.isoformat()) == ["6", "5", "4"]
    assert found("--repo", "orders", "--node", "node-b", "--state", "succeeded") == ["6"]
    assert found("--repo", "nowhere") == []


def test_pages_run_across_several_days_without_gaps_or_repeats(cli: Cli, seed: Seed) -> None:
    seeded = [outcome(i, NOON - timedelta(hours=5 * i)) for i in range(1, 16)]  # over 3 days
    # Two outcomes of one instant: the id decides their order, and a page may split them.
    seeded += [outcome(100, NOON - timedelta(hours=10)), outcome(101, NOON - timedelta(hours=10))]
    stored = store(seed, seeded)
    expected = [
        o.entity_id for o in sorted(stored, key=lambda o: (o.finished_at, o.id or 0), reverse=True)
    ]
    days = {o.finished_at.date() for o in seeded}
    assert len(days) >= 3

    pages: list[list[str]] = []
    after: list[str] = []
    while True:
        result = cli("jobs", "history", "--db", db(seed), "--json", "--limit", "4", *after)
        assert result.code == 0, result.err
        page = result.json()
        pages.append(entities(page))
        if page["next"] is None:
            break
        after = ["--after", page["next"]]
    assert [len(p) for p in pages] == [4, 4, 4, 4, 1]
    assert [e for p in pages for e in p] == expected

    # The text form prints the same cursor at the end of the page.
    text = cli("jobs", "history", "--db", db(seed), "--limit", "4")
    assert text.code == 0, text.err
    first = cli("jobs", "history", "--db", db(seed), "--limit", "4", "--json").json()
    assert f"next page: --after {first['next']}" in text.out
    assert "+00:00" in text.out  # every time printed carries its offset
    last = cli("jobs", "history", "--db", db(seed), "--limit", "100")
    assert "17 outcomes; the last page" in last.out


def test_a_filtered_page_follows_its_cursor_across_days(seed: Seed) -> None:
    seeded = [
        outcome(i, NOON - timedelta(hours=7 * i), state=Outcome.DEAD if i % 3 else Outcome.FAILED)
        for i in range(1, 13)
    ]
    store(seed, seeded)
    search = HistorySearch(seed.database)
    where = HistoryFilter(state="dead")
    pages = [search.page(where, limit=3)]
    while pages[-1].next is not None:
        pages.append(search.page(where, after=pages[-1].next, limit=3))
    got = [o.entity_id for p in pages for o in p.outcomes]
    assert got == [str(i) for i in range(1, 13) if i % 3]
    assert all(o.state is Outcome.DEAD for p in pages for o in p.outcomes)


def _seed_for_plans(seed: Seed) -> None:
    """Enough rows of one day that a plan has indexes to choose between."""
    rows = []
    for i in range(600):
        state = Outcome.SUCCEEDED if i % 20 else Outcome.DEAD
        repository = "orders" if i % 25 == 0 else "sms"
        node = "node-b" if i % 2 else "node-a"
        rows.append(
            outcome(i, NOON + timedelta(seconds=i), state=state, repository=repository, node=node)
        )
    store(seed, rows)
    with seed.engine.begin() as conn:
        for name in sa.inspect(conn).get_table_names():
            if name.startswith(HISTORY_REPOSITORY):
                conn.exec_driver_sql(f"ANALYZE TABLE {name}" if _is_mysql(seed) else "ANALYZE")


def _is_mysql(seed: Seed) -> bool:
    return seed.engine.dialect.name in {"mysql", "mariadb"}


def test_each_filter_is_served_by_an_index(seed: Seed) -> None:
    _seed_for_plans(seed)
    search = HistorySearch(seed.database)
    after = Cursor(NOON + timedelta(seconds=300), 0)

    def used(where: HistoryFilter, cursor: Cursor | None = None) -> list[str]:
        # A page of 10 in 600 rows: a real history's proportions, not the whole table.
        plans = search.explain(where, after=cursor, limit=10)
        assert plans, "a page reads at least one table"
        return [index for indexes in plans.values() for index in indexes]

    def named(indexes: list[str], suffix: str) -> bool:
        return bool(indexes) and all(ix.endswith(suffix) for ix in indexes)

    assert named(used(HistoryFilter(state="dead")), "_state_by_key")
    assert named(used(HistoryFilter(state="dead"), after), "_state_by_key")
    assert named(used(HistoryFilter(repository="orders")), "_repository_by_key")
    assert named(used(HistoryFilter(repository="orders"), after), "_repository_by_key")
    assert named(used(HistoryFilter()), "_finished_at")
    assert named(used(HistoryFilter(node="node-b"), after), "_finished_at")
    assert named(used(HistoryFilter(executor="sms")), "_finished_at")


def test_a_time_range_reads_only_its_days(seed: Seed) -> None:
    store(seed, [outcome(i, NOON - timedelta(days=i)) for i in range(3)])
    search = HistorySearch(seed.database)
    one_day = HistoryFilter(since=NOON - timedelta(hours=1), until=NOON + timedelta(hours=1))
    assert [o.entity_id for o in search.page(one_day).outcomes] == ["0"]
    parts = dialect_for(seed.engine).range_partitioning
    if parts is not None:  # MariaDB and PostgreSQL: one partitioned table, pruned to the day
        [table] = search.explain(one_day)
        query = search.query(table, one_day, limit=10)
        with seed.engine.connect() as conn:
            assert parts.explain_partitions(conn, query) == [f"p{NOON:%Y%m%d}"]
    else:
        assert list(search.explain(one_day)) == [f"{HISTORY_REPOSITORY}_{NOON:%Y%m%d}"]
        # A cursor on a day leaves the newer days' tables unread (older ones follow).
        cursor = Cursor(NOON - timedelta(days=1), 10**18)
        read = list(search.explain(HistoryFilter(), after=cursor))
        assert read[0] == f"{HISTORY_REPOSITORY}_{NOON - timedelta(days=1):%Y%m%d}"
        assert read == sorted(read, reverse=True)


def test_maintenance_adds_the_index_to_tables_of_an_older_release(cli: Cli, seed: Seed) -> None:
    store(seed, [outcome(1, NOON)])
    repository = seed.history.repository
    with seed.engine.begin() as conn:
        # A PostgreSQL partition's index is the partitioned table's: the table stands for both.
        partitions = dialect_for(seed.engine).partition_table_names(conn)
        tables = [
            n
            for n in sa.inspect(conn).get_table_names()
            if n.startswith(HISTORY_REPOSITORY) and n not in partitions
        ]
        for name in tables:  # as an older release made them
            for found in sa.inspect(conn).get_indexes(name):
                if str(found["name"]).endswith("_state_by_key"):
                    on = f" ON {name}" if _is_mysql(seed) else ""
                    conn.exec_driver_sql(f"DROP INDEX {found['name']}{on}")

    def state_indexes() -> dict[str, bool]:
        with seed.engine.connect() as conn:
            return {
                name: any(
                    str(ix["name"]).endswith("_state_by_key")
                    for ix in sa.inspect(conn).get_indexes(name)
                )
                for name in tables
            }

    assert not any(state_indexes().values())
    # The search still answers, and says what is missing and what adds it.
    missing = sorted(f"{n}.ix_{n}_state_by_key" for n in tables)
    noted = cli("jobs", "history", "--db", db(seed))
    assert noted.code == 0, noted.err
    assert noted.err.strip().startswith(f"note: {len(missing)} history index")
    assert "a node's maintenance adds them" in noted.err
    as_json = cli("jobs", "history", "--db", db(seed), "--json").json()
    assert sorted(as_json["missing_indexes"]) == missing
    assert [o["entity_id"] for o in as_json["outcomes"]] == ["1"]
    # First use by a new process adds it ...
    fresh = history_repository(seed.database, 7)
    fresh.insert(outcome(2, NOON + timedelta(seconds=1)))
    assert all(state_indexes().values())
    # ... and so does maintenance, which says so.
    with seed.engine.begin() as conn:
        name = tables[0]
        ix = next(
            str(i["name"])
            for i in sa.inspect(conn).get_indexes(name)
            if str(i["name"]).endswith("_state_by_key")
        )
        conn.exec_driver_sql(f"DROP INDEX {ix}" + (f" ON {name}" if _is_mysql(seed) else ""))
    report = history_repository(seed.database, 7).maintain()
    assert f"{name}.{ix}" in report.indexed
    assert all(state_indexes().values())
    assert cli("jobs", "history", "--db", db(seed), "--json").json()["missing_indexes"] == []
    assert [o.entity_id for o in HistorySearch(seed.database).page(HistoryFilter()).outcomes] == [
        "2",
        "1",
    ]
    assert repository.name == HISTORY_REPOSITORY


def test_bad_cursor_time_and_range_each_give_one_line(cli: Cli, seed: Seed) -> None:
    store(seed, [outcome(1, NOON)])
    base = ("jobs", "history", "--db", db(seed))
    bad_cursor = cli(*base, "--after", "yesterday")
    assert bad_cursor.code == 1
    assert bad_cursor.err.strip().splitlines() == [
        "error: cursor 'yesterday' is not one that `jobs history` printed "
        "(TIME:ID, e.g. 20250101T120000.000000Z:123456)"
    ]
    no_date = cli(*base, "--after", "20261399T000000.000000Z:1")
    assert no_date.code == 1
    assert no_date.err.startswith("error: cursor '20261399T000000.000000Z:1' is not one")
    too_big = cli(*base, "--after", f"20261130T000000.000000Z:{2**63}")
    assert too_big.code == 1
    assert too_big.err.startswith("error: cursor '20261130T000000.000000Z:9223372036854775808'")
    as_json = cli(*base, "--after", "yesterday", "--json")
    assert as_json.code == 1
    assert as_json.out == ""
    assert as_json.err.strip().startswith('{"error": "cursor ')
    backwards = cli(*base, "--since", NOON.isoformat(), "--until", NOON.isoformat())
    assert backwards.code == 1
    assert len(backwards.err.strip().splitlines()) == 1
    assert "is not before until" in backwards.err
    naive = cli(*base, "--since", "2025-01-01T00:00:00")
    assert naive.code == 2
    assert "has no timezone" in naive.err
    state = cli(*base, "--state", "lost")
    assert state.code == 2
    assert "'lost' is not one of" in state.err
    empty = cli(*base, "--state", "dead")
    assert empty.code == 0
    assert empty.out.strip() == "no outcomes match"
