"""A real 3-member MariaDB Galera Cluster: nodes on different members, conflicts, a member killed.

The module starts its own cluster on free loopback ports in a temporary
directory (`infsched_bench.galera`), never the shared server, and stops only
the members it started.  Each node is given every member's URL, its own
member first (n1: m1, m2, m3; n2: m2, m3, m1; n3: m3, m1, m2): the worst case
for Galera, where claims on the same rows from different members meet at
certification.  The probe records its calls on the shared server's throwaway
database, so a record never depends on the member being killed.

The default run has the dialect's cases, three nodes on three members with
2,000 entities, and a member killed under 2,000; ``-m soak`` the 20,000 entity
cases, whose figures docs/scaling.md quotes (run with ``-s``: they print what
they measured).
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from infsched.database import open_database
from infsched.dburl import DatabaseUrl
from infsched.dialects import DatabaseErrorKind
from infsched.member_route import member_of
from infsched_bench.galera import GaleraCluster, missing_tools
from infsched_bench.harness import Call, Cluster, duplicates, wait_until
from tests.cluster_checks import assert_clean_exit, assert_each_ran

if TYPE_CHECKING:
    from tests.cluster_harness import ClusterFactory

pytest_plugins = ["tests.cluster_harness"]

#: Each node's members, its own first.
ORDERS = {"n1": ("m1", "m2", "m3"), "n2": ("m2", "m3", "m1"), "n3": ("m3", "m1", "m2")}
CERTIFICATION = DatabaseErrorKind.CERTIFICATION_CONFLICT.value
#: Node settings: the harness's fast ones, with leases that outlast a member's departure
#: (Galera stalls commits until the others declare it gone: evs.suspect_timeout, 3 s).
SETTINGS = {"job_lease": 10.0, "batch_size": 200, "thread_pool_size": 8}


@pytest.fixture(scope="module")
def galera() -> Iterator[GaleraCluster]:
    missing = missing_tools()
    if missing:
        pytest.fail(f"the Galera tests need {', '.join(missing)}; `make test` installs them")
    cluster = GaleraCluster(3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def galera_database(galera: GaleraCluster) -> str:
    """A fresh database on the cluster (every member holds it)."""
    name = f"infsched_g_{uuid.uuid4().hex[:10]}"
    galera.create_database(name)
    return name


def members_url(galera: GaleraCluster, database: str, order: tuple[str, ...]) -> DatabaseUrl:
    return DatabaseUrl.members(galera.urls(database, order))


def galera_cluster(
    cluster_factory: ClusterFactory,
    galera: GaleraCluster,
    database: str,
    record: DatabaseUrl,
    **kwargs: Any,
) -> Cluster:
    urls = {node: members_url(galera, database, order) for node, order in ORDERS.items()}
    return cluster_factory(
        urls["n1"],
        node_urls=urls,
        record_url=record,
        settings={**SETTINGS, **kwargs.pop("settings", {})},
        **kwargs,
    )


def conflicts(cluster: Cluster) -> float:
    """Certification conflicts the nodes counted and retried (their last metrics lines)."""
    return sum(node.counter("db_conflicts_total", kind=CERTIFICATION) for node in cluster.started)


def members_in_use(cluster: Cluster) -> dict[str, str | None]:
    with cluster.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT node_id, database_member FROM infsched_nodes"))
        return {str(node): member for node, member in rows}


# -- what the dialect makes of Galera --


def test_a_claim_two_members_both_took_fails_at_commit_as_a_certification_conflict(
    galera: GaleraCluster, galera_database: str
) -> None:
    first = open_database(DatabaseUrl(galera.member("m1").url(galera_database)))
    second = open_database(DatabaseUrl(galera.member("m2").url(galera_database)))
    try:
        with first.engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (id INT PRIMARY KEY, owner VARCHAR(8))"))
            conn.execute(sa.text("INSERT INTO t VALUES (1, NULL)"))
        wait_until(lambda: _rows(second.engine) == 1, 10, "the row to reach m2")
        claim = sa.text("SELECT id FROM t WHERE owner IS NULL FOR UPDATE SKIP LOCKED")
        with first.engine.connect() as a, second.engine.connect() as b:
            # SKIP LOCKED locks are a member's own: both take the row.
            assert a.execute(claim).scalars().all() == [1]
            assert b.execute(claim).scalars().all() == [1]
            a.execute(sa.text("UPDATE t SET owner = 'a' WHERE id = 1"))
            b.execute(sa.text("UPDATE t SET owner = 'b' WHERE id = 1"))
            assert member_of(a) == f"m1 at 127.0.0.1:{galera.member('m1').ports.sql}"
            a.commit()
            with pytest.raises(sa.exc.DBAPIError) as raised:
                b.commit()
        kind = second.dialect.classify(raised.value)
        assert kind is DatabaseErrorKind.CERTIFICATION_CONFLICT
        assert kind.is_conflict
        with second.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT owner FROM t")).scalar_one() == "a"
    finally:
        first.dispose()
        second.dispose()


def _rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT COUNT(*) FROM t")).scalar_one())


def test_ids_from_a_repository_sequence_differ_across_members(
    galera: GaleraCluster, galera_database: str
) -> None:
    # A cached sequence on Galera steps by the member count from each member's offset.
    engines = [open_database(DatabaseUrl(m.url(galera_database))) for m in galera.members]
    try:
        dialect = engines[0].dialect
        with engines[0].engine.begin() as conn:
            dialect.create_id_source(conn, "ids_seq", 10**12)
        drawn: list[int] = []
        for database in engines:
            with database.engine.connect() as conn:
                for _ in range(5):
                    drawn.append(
                        int(conn.execute(sa.text("SELECT NEXT VALUE FOR ids_seq")).scalar_one())
                    )
        assert len(set(drawn)) == len(drawn), drawn
    finally:
        for database in engines:
            database.dispose()


def test_a_member_outside_the_primary_component_is_passed_over_and_its_connections_dropped(
    galera: GaleraCluster, galera_database: str
) -> None:
    """m3 cut off from the group (gmcast.isolate) answers 1047 to every statement."""
    isolated = open_database(DatabaseUrl(galera.member("m3").url(galera_database)))
    routed = open_database(members_url(galera, galera_database, ("m3", "m1", "m2")))
    try:
        with routed.engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (id INT PRIMARY KEY)"))
        wait_until(lambda: _rows(isolated.engine) == 0, 10, "the table to reach m3")
        with isolated.engine.connect() as conn:
            conn.execute(sa.text("SELECT COUNT(*) FROM t"))
            conn.exec_driver_sql("SET GLOBAL wsrep_provider_options = 'gmcast.isolate=1'")
            wait_until(lambda: galera.member("m3").status().get("wsrep_ready") == "OFF", 30, "m3")
            with pytest.raises(sa.exc.DBAPIError) as raised:
                conn.execute(sa.text("SELECT COUNT(*) FROM t"))
        # The pool dropped the connection: the next one goes to a member that serves.
        assert raised.value.connection_invalidated
        assert isolated.dialect.classify(raised.value) is DatabaseErrorKind.LOST_CONNECTION
        # The routed pool's connection to m3 passes its ping (SELECT 1 needs no table) and
        # fails at its first statement, which drops the whole pool; the next goes to m1.
        with routed.engine.connect() as conn:
            assert (member_of(conn) or "").startswith("m3 at ")
            with pytest.raises(sa.exc.DBAPIError) as first:
                conn.execute(sa.text("SELECT COUNT(*) FROM t"))
        assert first.value.connection_invalidated
        with routed.engine.connect() as conn:
            assert (member_of(conn) or "").startswith("m1 at ")
            assert conn.execute(sa.text("SELECT COUNT(*) FROM t")).scalar_one() == 0
    finally:
        with contextlib.suppress(Exception):
            admin = galera.member("m3").connect()
            with admin.cursor() as cursor:
                cursor.execute("SET GLOBAL wsrep_provider_options = 'gmcast.isolate=0'")
            admin.close()
        isolated.dispose()
        routed.dispose()
    galera.wait_size(3, timeout=60)


# -- three nodes on three members --


def run_on_three_members(
    cluster_factory: ClusterFactory,
    galera: GaleraCluster,
    database: str,
    record: DatabaseUrl,
    count: int,
    seconds: float,
    *,
    kill_at: float | None = None,
) -> dict[str, Any]:
    """`count` entities due over `seconds` on three nodes, each on its own member; with
    `kill_at`, m1 is SIGKILLed that many seconds into the run (and restarted at the end).

    Returns what was measured; asserts each entity ran, none twice beyond the bound.
    """
    cluster = galera_cluster(cluster_factory, galera, database, record)
    for node in ORDERS:
        cluster.start(node)
    wait_until(lambda: all(members_in_use(cluster).get(n) for n in ORDERS), 20, "three heartbeats")
    # As `infsched nodes` shows them.
    at_start = {n: row["database_member"] for n, row in cluster.nodes_json("n1").items()}
    first = datetime.now(UTC) + timedelta(seconds=2)
    entities = cluster.insert(cluster.entities(count, first, seconds))
    measured: dict[str, Any] = {"entities": count, "members_at_start": at_start}
    in_flight: set[str] = set()
    killed_at: datetime | None = None
    try:
        if kill_at is not None:
            time.sleep(max(0.0, (first - datetime.now(UTC)).total_seconds() + kill_at))
            killed_at = datetime.now(UTC)
            galera.kill("m1")
            killed = time.monotonic()
            wait_until(
                lambda: (members_in_use(cluster).get("n1") or "m1").split()[0] != "m1",
                60,
                "n1 to move off the killed member",
            )
            measured["n1_moved_after_s"] = round(time.monotonic() - killed, 2)
            in_flight = cluster.claimed_by("n1")
            measured["n1_members_after"] = members_in_use(cluster)["n1"]
        wait_until(
            lambda: cluster.called_entities() >= count and cluster.hot_jobs() == 0,
            seconds + 180,
            f"all {count} entities to run",
        )
        assert_clean_exit(cluster)
    finally:
        if kill_at is not None and not galera.member("m1").running:
            galera.start_member("m1")
    calls = cluster.calls()
    assert_each_ran(calls, entities, in_order=False)
    twice = duplicates(calls)
    assert set(twice) <= in_flight, f"ran twice, not in flight on n1: {set(twice) - in_flight}"
    measured["ran_twice"] = len(twice)
    measured["certification_conflicts"] = conflicts(cluster)
    measured["calls_per_node"] = {n: sum(1 for c in calls if c.node == n) for n in ORDERS}
    starts = sorted(c.started or c.at for c in calls)
    measured["run_seconds"] = round((starts[-1] - starts[0]).total_seconds(), 2)
    if killed_at is not None:
        measured.update(recovery(calls, killed_at))
    print(f"galera run: {measured}")
    return measured


def recovery(calls: list[Call], killed_at: datetime) -> dict[str, float]:
    """How long the cluster started no job around the kill: Galera holds every commit
    until the survivors declare the member gone, then n1 moves to the next member."""
    found: dict[str, float] = {}
    # The longest pause in the cluster's starts around the kill.
    near = sorted(
        c.started
        for c in calls
        if c.started and killed_at - timedelta(seconds=5) < c.started < killed_at + timedelta(60)
    )
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(near)]
    found["longest_pause_in_starts_s"] = round(max(gaps, default=0.0), 2)
    return found


def test_three_nodes_on_three_members_run_each_entity_once(
    cluster_factory: ClusterFactory,
    galera: GaleraCluster,
    galera_database: str,
    mysql_database_factory: Callable[[], DatabaseUrl],
) -> None:
    measured = run_on_three_members(
        cluster_factory, galera, galera_database, mysql_database_factory(), 2000, 4.0
    )
    assert measured["ran_twice"] == 0
    assert {m.split()[0] for m in measured["members_at_start"].values()} == {"m1", "m2", "m3"}
    # Claims from three members on the same due rows: some meet at certification, and
    # are counted and tried again.
    assert measured["certification_conflicts"] > 0
    assert all(n > 0 for n in measured["calls_per_node"].values())


def test_a_killed_member_s_node_moves_to_the_next_and_nothing_is_lost(
    cluster_factory: ClusterFactory,
    galera: GaleraCluster,
    galera_database: str,
    mysql_database_factory: Callable[[], DatabaseUrl],
) -> None:
    measured = run_on_three_members(
        cluster_factory, galera, galera_database, mysql_database_factory(), 2000, 6.0, kill_at=2.0
    )
    # n1's list after m1 is m2.
    assert measured["n1_members_after"].split()[0] == "m2"
    assert measured["n1_moved_after_s"] < 15
    assert measured["longest_pause_in_starts_s"] < 15


@pytest.mark.soak
@pytest.mark.parametrize("kill", [False, True], ids=["steady", "member-killed"])
def test_soak_20000_entities_on_three_members(
    cluster_factory: ClusterFactory,
    galera: GaleraCluster,
    galera_database: str,
    mysql_database_factory: Callable[[], DatabaseUrl],
    kill: bool,
) -> None:
    measured = run_on_three_members(
        cluster_factory,
        galera,
        galera_database,
        mysql_database_factory(),
        20_000,
        30.0,
        kill_at=10.0 if kill else None,
    )
    assert measured["certification_conflicts"] > 0
    if kill:
        assert measured["n1_members_after"].split()[0] == "m2"
