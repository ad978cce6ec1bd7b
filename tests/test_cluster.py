"""Many nodes, one database, nothing lost: real ``infsched run`` processes, MariaDB and PostgreSQL.

Each test starts node processes (see tests/cluster_harness.py) whose probe
executor records every call (job key, node, pid, attempt, database time) in
a table without a unique key, so a job run twice shows as two rows.  The
default run uses a few thousand entities over seconds; ``-m soak`` runs the
long versions (50,000 entities over minutes).  Here: nodes killed, frozen,
stalled and minutes off; tests/test_cluster_outage.py has the database and
every node gone for a while.

The tests take the database as a parameter of `cluster_database` (`ON_BOTH`:
MariaDB and PostgreSQL), in the default run and in the soak run alike.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from infsched.dburl import DatabaseUrl
from infsched.jobstore.base import JobState
from infsched.jobstore.tables import jobs
from infsched_bench.harness import (
    Call,
    Cluster,
    FailoverReport,
    KillPlan,
    duplicates,
    kill_and_restart,
    sleep_until,
    wait_until,
)
from infsched_bench.probe import ProbeEntity, calls
from tests.cluster_checks import (
    LOST,
    ON_BOTH,
    assert_clean_exit,
    assert_each_ran,
    lost_outcomes,
    wait_all_ran,
)

if TYPE_CHECKING:
    from tests.cluster_harness import ClusterFactory

pytest_plugins = ["tests.cluster_harness"]


# -- a node killed and restarted, twice --


def check_failover(report: FailoverReport) -> None:
    assert report.fetch_owners[0] == "n1"
    # Once n1 is dead, the others run its unfinished jobs and one of them fetches.
    assert report.fetch_owners[1] in {"n2", "n3"}
    listed = report.listed_after_kill
    assert {listed[n]["liveness"] for n in ("n2", "n3")} == {"alive"}, listed
    assert all(isinstance(row["in_flight"], int) for row in listed.values())
    assert set(report.exit_codes.values()) == {0}, report.exit_codes
    assert {row["liveness"] for row in report.listed_at_end.values()} == {"stopped"}

    calls = report.calls
    assert_each_ran(calls, report.entities)
    in_flight = set().union(*report.in_flight)
    twice = report.ran_twice
    assert set(twice) <= in_flight, f"ran twice, not in flight on n1: {set(twice) - in_flight}"
    assert len(twice) <= sum(len(s) for s in report.in_flight)
    assert in_flight, "the bursts should leave jobs in flight on n1 when it is killed"
    for key in in_flight:
        assert max(c.attempt for c in calls if c.job_key == key) >= 2, key
    assert report.outcomes["succeeded"] == len({c.job_key for c in calls})
    assert report.unscheduled == 0


@ON_BOTH
def test_killed_node_restarted_twice_loses_nothing(cluster_factory: ClusterFactory) -> None:
    # Runs of 0.1 s keep work in flight on every node at each kill: with 0.02 s
    # the node that claimed a burst could finish it before the kill.
    cluster = cluster_factory(sleep=0.1)
    plan = KillPlan(entities=3000, seconds=20, burst=300, kills=(6, 14))
    check_failover(kill_and_restart(cluster, plan))


@pytest.mark.soak
@ON_BOTH
def test_soak_killed_node_restarted_twice_loses_nothing(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(sleep=0.01, settings={"thread_pool_size": 16})
    plan = KillPlan(entities=50_000, seconds=180, burst=1500, kills=(60, 120))
    check_failover(kill_and_restart(cluster, plan))


# -- the fetch lease moves on --


@ON_BOTH
def test_fetch_lease_moves_on_within_two_heartbeats(cluster_factory: ClusterFactory) -> None:
    hb = 1.0
    cluster = cluster_factory(
        sleep=0.01,
        settings={"heartbeat_interval": hb, "job_lease": 4.0, "lookahead_window": 1.5},
    )
    first = cluster.due_at(3)
    entities = cluster.insert(cluster.entities(1500, first, 15))
    began = time.monotonic()
    cluster.start("n1")
    cluster.start("n2")
    sleep_until(began + 3 + 6)

    killed_at = cluster.db_now()
    in_flight = cluster.kill("n1")
    wait_until(lambda: cluster.fetch_owner() == "n2", 10, "n2 to take the fetch lease")
    lease = cluster.fetch_lease()
    assert lease is not None
    takeover = (lease.updated_at - killed_at).total_seconds()
    assert takeover <= 2 * hb, f"took {takeover:.2f} s"
    assert any("took lease fetch:probe over from n1" in m for m in cluster.nodes["n2"].messages())

    wait_all_ran(cluster, entities, timeout=60)
    lease = cluster.fetch_lease()
    assert lease is not None
    assert lease.owner == "n2"
    assert lease.state is not None
    assert datetime.fromisoformat(lease.state["last_cycle_at"]) > killed_at
    assert_clean_exit(cluster)

    calls = cluster.calls()
    assert_each_ran(calls, entities)
    assert set(duplicates(calls)) <= in_flight
    # Entities due once n2 holds the lease are fetched and run on time.
    resumed = killed_at + timedelta(seconds=2 * hb + 0.5)
    late = [c for c in calls if c.due > resumed and c.lag > 1.5]
    assert not late, f"{len(late)} calls late after the hand-over, e.g. {late[:3]}"


# -- clocks minutes off --


@ON_BOTH
def test_nodes_minutes_off_neither_steal_nor_lose_jobs(cluster_factory: ClusterFactory) -> None:
    threshold = 3.0
    cluster = cluster_factory(
        sleep=0.01,
        # Leases of 3 s, not 0.75 s: this test is about clocks, and a loaded machine can
        # hold a heartbeat thread back longer than the fast settings' lease.
        settings={
            "misfire_policy": "do_nothing",
            "misfire_threshold": threshold,
            "heartbeat_interval": 2.0,
            "job_lease": 6.0,
        },
    )
    # The node whose clock is five minutes behind holds the fetch lease: were its own
    # clock used to fetch, every job would be late and misfire (do_nothing: never run).
    cluster.start("behind", clock_offset=-300)
    # "started" is logged before the first fetch cycle takes the lease: on a loaded
    # machine the next node could take it first, and the test would prove nothing.
    wait_until(lambda: cluster.fetch_owner() == "behind", 30, "the behind node's fetch lease")
    cluster.start("ahead", clock_offset=300)
    cluster.start("exact")
    # Due once every node runs: on a loaded machine starting three nodes takes
    # seconds, and jobs due meanwhile could come late for a reason of no interest here.
    first = cluster.due_at(3)
    entities = cluster.insert(cluster.entities(1200, first, 12))
    owners: Counter[str | None] = Counter()

    def all_done() -> bool:
        owners[cluster.fetch_owner()] += 1
        return len(cluster.outcomes()) > 0 and sum(cluster.outcomes().values()) >= len(entities)

    wait_until(all_done, 60, "an outcome for every entity")
    listed = cluster.nodes_json("exact")
    assert {row["liveness"] for row in listed.values()} == {"alive"}, listed
    assert_clean_exit(cluster)

    assert owners == Counter({"behind": owners["behind"]}), owners
    calls = cluster.calls()
    assert_each_ran(calls, entities)
    assert not duplicates(calls)
    assert {c.attempt for c in calls} == {1}
    assert cluster.outcomes() == Counter({"succeeded": len(entities)})
    assert {c.node for c in calls} == {"behind", "ahead", "exact"}
    assert max(c.lag for c in calls) < threshold
    lost = [m for n in cluster.started for m in n.messages() if "lost lease" in m]
    assert not lost, "a live node lost a lease it held"
    offsets = {n.name: n.messages("warning") for n in cluster.started}
    assert any("300.0 s ahead of the database's" in m for m in offsets["ahead"])
    assert any("300.0 s behind the database's" in m for m in offsets["behind"])


# -- a node stalls past its leases --


def calls_on(cluster: Cluster, node: str) -> int:
    """The probe calls node `node` recorded so far."""
    query = sa.select(sa.func.count()).select_from(calls).where(calls.c.node == node)
    with cluster.record_engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def freeze_running(cluster: Cluster, name: str, by: float) -> None:
    """Freeze node `name` once it runs jobs and holds more claimed than it has threads.

    On a loaded machine a node can start so late that a fixed moment finds it
    with nothing claimed yet, or claimed and not started; the test would then
    freeze a node with nothing in flight.
    """
    threads = int(cluster.settings["thread_pool_size"])
    wait_until(
        lambda: calls_on(cluster, name) > 0 and len(cluster.claimed_by(name)) > threads,
        by,
        f"{name} to run the burst with more of it claimed",
    )
    cluster.freeze(name)


def thaw_and_finish(
    cluster: Cluster, entities: Sequence[ProbeEntity], timeout: float
) -> list[Call]:
    """Thaw n1, let every entity run, stop the nodes; the calls, each entity's among them."""
    cluster.thaw("n1")
    wait_all_ran(cluster, entities, timeout=timeout)
    time.sleep(1.0)  # n1 records what it finished after it woke up
    assert cluster.nodes["n1"].running()
    assert_clean_exit(cluster)
    calls = cluster.calls()
    assert_each_ran(calls, entities, in_order=False)
    return calls


@ON_BOTH
def test_stalled_node_counts_each_outcome_that_came_too_late(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(sleep=0.05)
    first = cluster.due_at(3)
    entities = cluster.insert(
        cluster.entities(400, first, 0, "burst") + cluster.entities(600, first, 10)
    )
    began = time.monotonic()
    cluster.start("n1")
    sleep_until(began + 3.3)
    # n1 stands still with the burst in flight (a frozen VM, a long pause).  n2 takes
    # its lease and, once n1's job leases expire, runs its jobs again: all but those
    # n1 holds locks on in a transaction it was in when it froze.
    freeze_running(cluster, "n1", by=10)
    # A COMMIT n1 sent just before it stopped still completes in the server: wait for
    # it, or its jobs would be held by n1 but missing from the set read below.
    time.sleep(0.3)
    stalled = cluster.claimed_by("n1")
    assert stalled
    cluster.start("n2")
    wait_until(lambda: cluster.fetch_owner() == "n2", 10, "n2 to take the fetch lease")
    wait_until(
        lambda: len(cluster.claimed_by("n1")) < len(stalled),
        cluster.settings["job_lease"] + 10,
        "n2 to recover n1's jobs",
    )
    time.sleep(2.0)
    calls = thaw_and_finish(cluster, entities, timeout=30)
    twice = duplicates(calls)
    assert twice, "n1 had jobs in flight when it stalled; it finished them after n2 did"
    assert set(twice) <= stalled
    assert all(len(group) == 2 for group in twice.values())
    said = [m for m in cluster.nodes["n1"].messages() if LOST.match(m)]
    assert lost_outcomes(cluster.nodes["n1"]) == len(twice), (len(twice), said)
    assert lost_outcomes(cluster.nodes["n2"]) == 0


def claims_of(cluster: Cluster, node: str) -> dict[str, int]:
    """The jobs `node` holds claimed now: job key -> the attempt of that claim."""
    query = sa.select(jobs.c.job_key, jobs.c.attempt).where(
        jobs.c.owner == node, jobs.c.state == JobState.CLAIMED.value
    )
    with cluster.engine.connect() as conn:
        return dict(conn.execute(query).all())


@ON_BOTH
def test_a_node_frozen_past_its_leases_starts_none_of_its_claimed_jobs(
    cluster_factory: ClusterFactory,
) -> None:
    # Runs of 0.05 s on 8 threads a node: the burst takes seconds to drain, so n1 holds
    # claimed jobs it has not started when it freezes.
    cluster = cluster_factory(sleep=0.05)
    threads = int(cluster.settings["thread_pool_size"])
    job_lease = float(cluster.settings["job_lease"])
    first = cluster.due_at(3)
    entities = cluster.insert(cluster.entities(1500, first, 0, "burst"))
    began = time.monotonic()
    cluster.start("n1")
    cluster.start("n2")
    sleep_until(began + 3.5)
    freeze_running(cluster, "n1", by=10)
    frozen_at = time.monotonic()
    time.sleep(0.3)  # a COMMIT n1 sent just before it stopped still completes
    held = claims_of(cluster, "n1")
    assert len(held) > threads, "n1 should hold claimed jobs beyond those it runs"
    # A node claims about half a second of its starts ahead (claim_ahead), not four
    # batches (800 here) as it did: the rest of the burst stays for the other nodes.
    assert len(held) <= int(cluster.settings["batch_size"]), len(held)
    wait_until(
        lambda: len(claims_of(cluster, "n1")) < len(held),
        job_lease + 10,
        "n2 to recover n1's jobs",
    )
    sleep_until(frozen_at + job_lease + 2)
    thawed = cluster.db_now()
    calls = thaw_and_finish(cluster, entities, timeout=60)
    # n1's runs under the claims it held at the freeze.  The probe records a call when its
    # sleep ends: recorded before the thaw, the run ended before the freeze (its outcome
    # was not written); after it, the run was under way at the freeze.  n1 started none.
    n1_pid = cluster.started[0].pid
    held_runs = [c for c in calls if c.pid == n1_pid and held.get(c.job_key) == c.attempt]
    running_at_freeze = [c for c in held_runs if c.at > thawed]
    assert len(running_at_freeze) <= threads, running_at_freeze
    twice = duplicates(calls)
    assert set(twice) <= {c.job_key for c in held_runs}
    messages = cluster.nodes["n1"].messages()
    given_back = [m for m in messages if m.startswith("did not start ")]
    assert given_back, messages[-20:]
    assert all(len(group) == 2 for group in twice.values())
    assert lost_outcomes(cluster.nodes["n1"]) == len(twice)
    assert cluster.outcomes()["failed"] == 0


# -- several nodes on one SQLite file --


def test_three_nodes_on_one_sqlite_file_run_each_job_once(
    cluster_factory: ClusterFactory,
    sqlite_url: DatabaseUrl,
    mysql_database_factory: Callable[[], DatabaseUrl],
) -> None:
    cluster = cluster_factory(sqlite_url, record_url=mysql_database_factory(), sleep=0.005)
    first = cluster.due_at(3)
    entities = cluster.insert(
        cluster.entities(1200, first, 0, "burst") + cluster.entities(1200, first, 4)
    )
    for name in ("n1", "n2", "n3"):
        cluster.start(name)
    wait_all_ran(cluster, entities, timeout=90)
    assert_clean_exit(cluster)

    calls = cluster.calls()
    assert len(calls) == len(entities)
    assert_each_ran(calls, entities)
    assert not duplicates(calls)
    assert {c.attempt for c in calls} == {1}
    assert {c.node for c in calls} == {"n1", "n2", "n3"}
    assert cluster.outcomes() == Counter({"succeeded": len(entities)})
    for node in cluster.started:
        assert lost_outcomes(node) == 0, node.messages()
        assert not node.messages("error"), node.messages("error")
