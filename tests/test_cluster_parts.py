"""The cluster's parts, in process: leases, the nodes table, database time, outages, recovery."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from infsched.clock import FixedClock, OffsetClock, SystemClock
from infsched.cluster.leases import LeaseStore
from infsched.cluster.nodes import NodeIdInUseError, NodeRegistry, NodeState, judge
from infsched.cluster.outage import RETRY_CONFLICT, RETRY_OUTAGE, DatabaseOutage
from infsched.conflict_retries import is_conflict
from infsched.database import create_engine, database_of
from infsched.dbtime import DatabaseClock, database_now
from infsched.dburl import DatabaseUrl
from infsched.jobstore.base import ClaimedJob, Finished, NewJob, Outcome
from infsched.jobstore.sql import SqlJobStore
from infsched.jobstore.tables import jobs
from infsched.metrics.recorder import MetricsRecorder
from infsched.metrics.sink import Labels
from infsched.schema import leases as leases_table
from infsched.schema import nodes

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def store_for(engine: sa.Engine) -> SqlJobStore:
    store = SqlJobStore(database_of(engine))
    store.create_schema()
    return store


# -- leases --


def test_a_lease_has_one_holder_until_it_expires_or_is_released(
    every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    engine = engine_for(every_url)
    store_for(engine)
    clock = FixedClock(NOW)  # SQLite's only clock; a database server judges by its own
    leases = LeaseStore(database_of(engine, clock))
    first = leases.acquire("fetch:sms", "a", 1.0, state={"due_through": "x"})
    assert first.held
    assert not leases.acquire("fetch:sms", "b", 1.0).held
    assert leases.acquire("fetch:sms", "a", 1.0).held  # renewed

    if every_url.scheme.dialect != "sqlite":
        time.sleep(1.1)
    else:
        clock.advance(timedelta(seconds=1.1))
    taken = leases.acquire("fetch:sms", "b", 1.0)
    assert taken.held
    assert (taken.previous_owner, taken.state) == ("a", {"due_through": "x"})
    assert not leases.acquire("fetch:sms", "a", 1.0).held

    assert leases.release("fetch:sms", "b")
    assert not leases.release("fetch:sms", "b")
    assert leases.acquire("fetch:sms", "a", 1.0).held
    now, rows = leases.leases()
    assert [(r.name, r.owner, r.state) for r in rows] == [("fetch:sms", "a", {"due_through": "x"})]
    assert rows[0].held_at(now)


def test_a_node_clock_days_off_cannot_take_a_held_lease(
    mysql_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    engine = engine_for(mysql_url)
    store_for(engine)
    assert LeaseStore(database_of(engine, SystemClock())).acquire("maintain:sms", "a", 30.0).held
    ahead = LeaseStore(database_of(engine, OffsetClock(timedelta(days=2))))
    assert not ahead.acquire("maintain:sms", "b", 30.0).held


def test_a_lease_row_a_frozen_holder_has_locked_is_skipped_not_waited_for(
    mysql_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    engine = engine_for(mysql_url)
    store_for(engine)
    leases = LeaseStore(database_of(engine, SystemClock()))
    assert leases.acquire("fetch:sms", "a", 0.1).held
    time.sleep(0.2)
    with engine.connect() as frozen:
        frozen.begin()
        row = sa.select(leases_table).where(leases_table.c.name == "fetch:sms")
        frozen.execute(row.with_for_update())
        started = time.monotonic()
        grant = leases.acquire("fetch:sms", "b", 30.0)
        assert (grant.held, grant.skipped) == (False, True)
        assert time.monotonic() - started < 5
        frozen.rollback()
    assert leases.acquire("fetch:sms", "b", 30.0).held


def test_racing_nodes_get_a_free_lease_once(
    mysql_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    engine = engine_for(mysql_url)
    store_for(engine)
    barrier = threading.Barrier(8)
    won: list[str] = []

    def race(owner: str) -> None:
        leases = LeaseStore(database_of(engine, SystemClock()))
        barrier.wait()
        if leases.acquire("fetch:orders", owner, 30.0).held:
            won.append(owner)

    threads = [threading.Thread(target=race, args=(f"n{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1


# -- nodes --


@pytest.mark.parametrize(
    ("phase", "silent", "state"),
    [
        ("running", 0.5, NodeState.ALIVE),
        ("running", 10.0, NodeState.ALIVE),
        ("running", 10.1, NodeState.SUSPECTED),
        ("stopping", 30.0, NodeState.SUSPECTED),
        ("running", 30.1, NodeState.DEAD),
        ("stopped", 0.0, NodeState.STOPPED),
        ("stopped", 9999.0, NodeState.STOPPED),
    ],
)
def test_node_states_from_heartbeat_age(phase: str, silent: float, state: NodeState) -> None:
    assert judge(phase, silent, heartbeat_interval=5.0, job_lease=30.0) is state


def registry(engine: sa.Engine, node_id: str = "n1") -> NodeRegistry:
    return NodeRegistry(database_of(engine), node_id, heartbeat_interval=0.5, job_lease=2.0)


def node_row(engine: sa.Engine, node_id: str) -> dict[str, object]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(nodes).where(nodes.c.node_id == node_id)).mappings().one()
    return dict(row)


def test_a_node_id_beating_in_another_live_process_is_refused(
    mysql_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    engine = engine_for(mysql_url)
    store_for(engine)
    other = registry(engine)
    other.pid = 1  # a process that is alive on this host
    other.register()
    with pytest.raises(NodeIdInUseError, match="'n1' is in use by pid 1"):
        registry(engine).register()

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    with engine.begin() as conn:  # that process has exited: its id may be taken over
        conn.execute(nodes.update().values(pid=int(gone.stdout), in_flight=3))
    mine = registry(engine)
    mine.register()
    row = node_row(engine, "n1")
    assert (row["pid"], row["state"], row["in_flight"]) == (mine.pid, "running", 0)

    mine.heartbeat(7)
    mine.mark("stopped")
    row = node_row(engine, "n1")
    assert (row["state"], row["in_flight"]) == ("stopped", 0)
    registry(engine).register()  # a stopped node's id is free


def test_a_node_starts_while_another_is_frozen_inside_its_heartbeat(
    mysql_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    # n1 stopped (SIGSTOP) while its heartbeat's transaction held its row locked; n2's
    # registration forgets long-silent nodes, and must pass over n1's row, not wait on it.
    engine = engine_for(mysql_url)
    store_for(engine)
    registry(engine, "n1").register()
    registry(engine, "old").register()
    with engine.begin() as conn:
        conn.execute(
            nodes.update()
            .where(nodes.c.node_id == "old")
            .values(heartbeat_at=sa.func.utc_timestamp() - sa.text("INTERVAL 2 DAY"))
        )
    impatient = create_engine(mysql_url)
    sa.event.listen(
        impatient,
        "connect",
        lambda dbapi, _record: dbapi.cursor().execute("SET SESSION innodb_lock_wait_timeout = 3"),
    )
    with engine.connect() as frozen:
        frozen.begin()
        frozen.execute(sa.select(nodes).where(nodes.c.node_id == "n1").with_for_update()).all()
        registry(impatient, "n2").register()  # raised "Lock wait timeout exceeded" before
        frozen.rollback()
    with engine.connect() as conn:
        ids = set(conn.execute(sa.select(nodes.c.node_id)).scalars())
    assert ids == {"n1", "n2"}  # the long-silent node is forgotten all the same
    impatient.dispose()


# -- database time --


def test_the_database_clock_corrects_a_node_clock_that_is_off(
    mysql_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    engine = engine_for(mysql_url)
    dialect = database_of(engine).dialect
    clock = DatabaseClock(OffsetClock(timedelta(seconds=-300)), dialect)
    with engine.connect() as conn:
        offset = clock.measure(conn)
        db = database_now(conn, dialect, SystemClock())
    assert offset == pytest.approx(300, abs=1)
    assert abs((clock.now() - db).total_seconds()) < 1


def test_without_a_database_clock_the_node_clock_serves(
    sqlite_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    engine = engine_for(sqlite_url)
    dialect = database_of(engine).dialect
    clock = DatabaseClock(FixedClock(NOW), dialect)
    with engine.connect() as conn:
        assert clock.measure(conn) == 0.0
        assert database_now(conn, dialect, FixedClock(NOW)) == NOW
    assert clock.now() == NOW


# -- outages --


def db_error(errno: int, message: str) -> sa.exc.OperationalError:
    return sa.exc.OperationalError("SELECT 1", {}, Exception(errno, message))


def test_an_outage_is_one_line_when_it_starts_and_one_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "infsched.database")
    outage = DatabaseOutage()
    claimer, recorder, fetcher = (outage.watch(n) for n in ("claimer", "recorder", "fetcher"))
    refused = db_error(2003, "Can't connect to MySQL server on '127.0.0.1'")
    for _ in range(50):
        assert claimer.failed(refused) == RETRY_OUTAGE
        assert recorder.failed(refused) == RETRY_OUTAGE
    fetcher.failed(refused)
    down: list[bool] = [outage.down]
    claimer.ok()
    fetcher.idle()  # stopped trying (lost its lease): no longer holds the outage open
    down.append(outage.down)
    recorder.ok()
    down.append(outage.down)
    assert down == [True, True, False]
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0][0] == "ERROR"
    assert messages[0][1].startswith(
        "database unavailable (OperationalError: (2003, \"Can't connect to MySQL server on "
        "'127.0.0.1'\"), noticed by the claimer)"
    )
    assert messages[1][0] == "WARNING"
    assert messages[1][1].startswith("database reachable again after")
    assert outage.count == 1


class CountingSink:
    """A metrics sink that keeps the counters it was given, in order."""

    def __init__(self) -> None:
        self.increments: list[tuple[str, dict[str, str]]] = []

    def increment(self, name: str, value: float = 1.0, labels: Labels | None = None) -> None:
        self.increments.append((name, dict(labels or {})))

    def set_gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        pass

    def observe(self, name: str, value: float, labels: Labels | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def test_lock_conflicts_are_retried_soon_and_bugs_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted = CountingSink()
    outage = DatabaseOutage(metrics=MetricsRecorder([counted]))
    watch = outage.watch("lease keeper")
    deadlock = db_error(1213, "Deadlock found when trying to get lock")
    locked = sa.exc.OperationalError("", {}, Exception("database is locked"))
    assert is_conflict(deadlock)
    assert is_conflict(locked)
    assert not is_conflict(db_error(2013, "Lost connection to MySQL server"))
    # Soon, at a random moment: two writers that collided must not collide again at once.
    waits = [watch.failed(deadlock), watch.failed(locked)]
    assert all(RETRY_CONFLICT * 0.5 <= w <= RETRY_CONFLICT * 1.5 for w in waits)
    assert (outage.down, outage.conflicts) == (False, 2)
    # Counted by kind: a deadlock and a lock timeout tell an operator different things.
    assert counted.increments == [
        ("db_conflicts_total", {"component": "lease keeper", "kind": "deadlock"}),
        ("db_conflicts_total", {"component": "lease keeper", "kind": "lock timeout"}),
    ]
    for _ in range(3):
        assert watch.failed(KeyError("payload")) == RETRY_OUTAGE
    assert not outage.down
    assert [r.getMessage() for r in caplog.records] == [
        "lease keeper: unexpected KeyError, carrying on (logged once)"
    ]
    assert caplog.records[0].exc_info is not None


# -- recovery --


def add_jobs(store: SqlJobStore, count: int, priority: Callable[[int], int] = lambda i: 0) -> None:
    """`count` due jobs of repository "r"; job i has priority `priority(i)`."""
    with store.engine.begin() as conn:
        store.add_jobs(
            conn,
            [
                NewJob(f"r:{i}:k", "r", "x", str(i), NOW - timedelta(minutes=1), priority(i), "{}")
                for i in range(count)
            ],
        )


def claimed_and_expired(engine: sa.Engine, count: int) -> tuple[SqlJobStore, list[ClaimedJob]]:
    """`count` jobs claimed by node n1 whose leases have already expired."""
    store = store_for(engine)
    add_jobs(store, count)
    claimed = store.claim_due("n1", count, 0.1, ["r"])
    assert len(claimed) == count
    time.sleep(0.2)
    return store, claimed


def test_recovery_skips_rows_a_stalled_transaction_holds(
    mysql_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    engine = engine_for(mysql_url)
    store, claimed = claimed_and_expired(engine, 5)
    with engine.connect() as stalled:
        stalled.begin()
        # A node that froze inside a transaction holding one of the rows.
        stalled.execute(sa.select(jobs.c.id).where(jobs.c.id == claimed[0].id).with_for_update())
        started = time.monotonic()
        assert store.recover_expired() == 4
        assert time.monotonic() - started < 5
        stalled.rollback()
    assert store.recover_expired() == 1
    again = store.claim_due("live-node", 5, 30.0, ["r"])
    assert sorted(j.attempt for j in again) == [2] * 5  # the same keys, the next attempt


def test_a_restarted_node_id_takes_back_its_claimed_jobs_at_once(
    every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    engine = engine_for(every_url)
    store = store_for(engine)
    add_jobs(store, 4)
    store.claim_due("n1", 3, 300.0, ["r"])
    store.claim_due("n2", 1, 300.0, ["r"])
    assert store.reclaim_own("n1") == 3
    with engine.connect() as conn:
        owners = conn.execute(sa.select(jobs.c.owner, jobs.c.attempt)).all()
    assert sorted(owners, key=str) == sorted([(None, 1)] * 3 + [("n2", 1)], key=str)


def test_a_restarted_node_id_leaves_a_row_its_stalled_process_holds_to_lease_expiry(
    server_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    # The old process froze inside a transaction holding one of its rows; the new
    # one must start at once, not wait for that lock (it used to wait, by UPDATE).
    engine = engine_for(server_url)
    store = store_for(engine)
    add_jobs(store, 4)
    claimed = store.claim_due("n1", 4, 300.0, ["r"])
    with engine.connect() as stalled:
        stalled.begin()
        stalled.execute(sa.select(jobs.c.id).where(jobs.c.id == claimed[0].id).with_for_update())
        started = time.monotonic()
        assert store.reclaim_own("n1") == 3
        assert time.monotonic() - started < 5
        stalled.rollback()
    assert store.reclaim_own("n1") == 1


@pytest.mark.parametrize("distinct", [3, 20])
def test_claims_take_the_highest_priority_first_however_many_priorities(
    every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine], distinct: int
) -> None:
    # Up to MAX_PRIORITY_PROBES priorities are read one MAX() at a time, beyond
    # that with one SELECT DISTINCT: both must give every priority, in order.
    store = store_for(engine_for(every_url))
    add_jobs(store, 40, lambda i: i % distinct)
    order = [j.priority for j in store.claim_due("n1", 40, 30.0, ["r"])]
    assert order == sorted((i % distinct for i in range(40)), reverse=True)


def test_an_unowned_job_row_holds_blanks_that_read_back_as_none(
    every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    # Fixed-width, never-NULL owner and lease let a claim update the row in place.
    engine = engine_for(every_url)
    store = store_for(engine)
    add_jobs(store, 2)
    store.claim_due("n1", 1, 300.0, ["r"])
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT owner, lease_until FROM infsched_jobs ORDER BY id")
        ).all()
        read = conn.execute(sa.select(jobs.c.owner, jobs.c.lease_until).order_by(jobs.c.id)).all()
    assert stored[0][0] == "n1"
    assert stored[1][0] == ""
    assert str(stored[1][1]).startswith("1970-01-01 00:00:00")
    assert read[0].owner == "n1"
    assert read[0].lease_until is not None
    assert tuple(read[1]) == (None, None)


def test_a_late_outcome_leaves_the_run_that_replaced_it_alone(
    every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    engine = engine_for(every_url)
    store = store_for(engine)
    add_jobs(store, 2)
    first = store.claim_due("n1", 2, 300.0, ["r"])
    # n1's leases lapsed and n1 itself claimed both jobs again (attempt 2) before
    # the outcomes of attempt 1 arrived: one success, one failure with a retry.
    assert store.reclaim_own("n1") == 2
    second = store.claim_due("n1", 2, 300.0, ["r"])
    assert sorted(j.attempt for j in second) == [2, 2]
    late = [
        Finished(first[0], Outcome.SUCCEEDED, NOW, NOW),
        Finished(first[1], Outcome.FAILED, NOW, NOW, "boom", NOW + timedelta(minutes=5)),
    ]
    # Both outcomes came too late: the store says so, and touches neither row.
    assert store.finish("n1", late, lambda conn, results: None) == 2
    with engine.connect() as conn:
        rows = conn.execute(sa.select(jobs.c.state, jobs.c.attempt, jobs.c.owner)).all()
    assert sorted(rows) == [("claimed", 2, "n1")] * 2  # neither deleted nor rescheduled
    # The outcomes of the runs that hold the rows now are recorded as usual.
    by_id = {j.id: j for j in second}
    current = [
        Finished(by_id[first[0].id], Outcome.SUCCEEDED, NOW, NOW),
        Finished(by_id[first[1].id], Outcome.FAILED, NOW, NOW, "boom", NOW),
    ]
    assert store.finish("n1", current, lambda conn, results: None) == 0
    with engine.connect() as conn:
        rows = conn.execute(sa.select(jobs.c.id, jobs.c.state, jobs.c.attempt)).all()
    assert rows == [(first[1].id, "waiting", 2)]


def test_outcomes_of_jobs_claimed_again_meanwhile_are_found(
    mysql_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    engine = engine_for(mysql_url)
    store, mine = claimed_and_expired(engine, 4)
    assert store.recover_expired() == 4
    by_n2 = store.claim_due("n2", 2, 30.0, ["r"])
    by_n1_again = store.claim_due("n1", 1, 30.0, ["r"])  # n1 itself, a new attempt
    with engine.begin() as conn:
        conn.execute(jobs.delete().where(jobs.c.id == by_n2[1].id))  # n2 ran it and recorded it
        held = store.still_held(conn, "n1", [(j.id, j.attempt) for j in mine])
    # Only the job nobody claimed again is still the first claim's: its outcome counts.
    again = {j.id for j in by_n2 + by_n1_again}
    assert held == {j.id for j in mine} - again
    assert len(held) == 1
