"""Many nodes, one database, nothing lost: real ``infsched run`` processes on MariaDB.

Each test starts node processes (see tests/cluster_harness.py) whose probe
executor records every call (job key, node, pid, attempt, database time) in
a table without a unique key, so a job run twice shows as two rows.  The
default run uses a few thousand entities over seconds; ``-m soak`` runs the
long versions (50,000 entities over minutes, a 30 s outage, 10 minutes of
downtime).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import attrs
import pytest

from infsched.cluster.harness import Call, Cluster, attempts_in_order, duplicates, wait_until
from infsched.cluster.probe import ProbeEntity

if TYPE_CHECKING:
    from tests.cluster_harness import ClusterFactory, PrivateMariaDB

pytest_plugins = ["tests.cluster_harness"]

#: A node's line counting jobs it ran whose outcome came too late (they run again).
LOST = re.compile(r"^(\d+) jobs ran here but")


def sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


def wait_all_ran(cluster: Cluster, entities: Sequence[ProbeEntity], timeout: float) -> None:
    wait_until(
        lambda: cluster.called_entities() >= len(entities) and cluster.hot_jobs() == 0,
        timeout,
        f"all {len(entities)} entities to run",
    )


def assert_each_ran(
    calls: Sequence[Call], entities: Sequence[ProbeEntity], *, in_order: bool = True
) -> None:
    """Every entity ran; a job run again ran with the same key and the next attempt number.

    `in_order`: the attempts also came in call order (not so when the earlier run
    stalled and finished after the next one).
    """
    ran = {c.entity_id for c in calls}
    missing = {e.id for e in entities} - ran
    assert not missing, f"{len(missing)} entities never ran, e.g. {list(missing)[:5]}"
    for key, attempts in attempts_in_order(calls):
        # A run claimed but never started (in flight on a node that died) leaves a gap.
        expected = sorted(set(attempts))
        shown = attempts if in_order else sorted(attempts)
        assert shown == expected, f"{key}: attempts in call order {attempts}"


def assert_clean_exit(cluster: Cluster) -> None:
    codes = cluster.stop_all()
    assert set(codes.values()) == {0}, codes


# -- a node killed and restarted, twice --


@attrs.frozen
class KillPlan:
    entities: int
    #: Entities are due evenly over this many seconds.
    seconds: float
    #: Entities due at once just before each kill, so the killed node has work in flight.
    burst: int
    #: Seconds after the first due time at which node n1 is killed.
    kills: tuple[float, float]


def kill_and_restart(cluster: Cluster, plan: KillPlan) -> None:
    lead = 4.0
    first = cluster.due_at(lead)
    began = time.monotonic()
    entities = cluster.entities(plan.entities - 2 * plan.burst, first, plan.seconds)
    for at in plan.kills:
        entities += cluster.entities(plan.burst, first + timedelta(seconds=at - 0.3), 0, "burst")
    cluster.insert(entities)
    for name in ("n1", "n2", "n3"):
        cluster.start(name)
    assert cluster.fetch_owner() == "n1"
    job_lease = cluster.settings["job_lease"]

    # Kill 1: the others run n1's unfinished jobs once its leases expire, and fetch for it.
    sleep_until(began + lead + plan.kills[0])
    in_flight = [cluster.kill("n1")]
    wait_until(
        lambda: cluster.nodes_json("n2")["n1"]["liveness"] == "dead",
        job_lease + 10,
        "n1 to be judged dead",
    )
    listed = cluster.nodes_json("n2")
    assert {listed[n]["liveness"] for n in ("n2", "n3")} == {"alive"}, listed
    assert all(isinstance(listed[n]["in_flight"], int) for n in listed)
    assert cluster.fetch_owner() in {"n2", "n3"}
    wait_until(lambda: not cluster.claimed_by("n1"), job_lease + 10, "n1's jobs to be recovered")
    cluster.start("n1")

    # Kill 2, and an immediate restart under the same node id: it takes its jobs back.
    sleep_until(began + lead + plan.kills[1])
    in_flight.append(cluster.kill("n1"))
    cluster.start("n1")

    wait_all_ran(cluster, entities, timeout=plan.seconds + 120)
    assert_clean_exit(cluster)
    listed = cluster.nodes_json("n1")
    assert {row["liveness"] for row in listed.values()} == {"stopped"}, listed

    calls = cluster.calls()
    assert_each_ran(calls, entities)
    lost = set().union(*in_flight)
    twice = duplicates(calls)
    assert set(twice) <= lost, f"ran twice though not in flight on n1: {set(twice) - lost}"
    assert len(twice) <= sum(len(s) for s in in_flight)
    assert lost, "the bursts should leave jobs in flight on n1 when it is killed"
    for key in lost:
        assert max(c.attempt for c in calls if c.job_key == key) >= 2, key
    assert cluster.outcomes()["succeeded"] == len({c.job_key for c in calls})
    assert cluster.unscheduled() == 0


def test_killed_node_restarted_twice_loses_nothing(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(sleep=0.02)
    kill_and_restart(cluster, KillPlan(entities=3000, seconds=20, burst=300, kills=(6, 14)))


@pytest.mark.soak
def test_soak_killed_node_restarted_twice_loses_nothing(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(sleep=0.01, settings={"thread_pool_size": 16})
    kill_and_restart(cluster, KillPlan(entities=50_000, seconds=180, burst=1500, kills=(60, 120)))


# -- the fetch lease moves on --


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


def test_nodes_minutes_off_neither_steal_nor_lose_jobs(cluster_factory: ClusterFactory) -> None:
    threshold = 3.0
    cluster = cluster_factory(
        sleep=0.01,
        settings={"misfire_policy": "do_nothing", "misfire_threshold": threshold},
    )
    first = cluster.due_at(3)
    entities = cluster.insert(cluster.entities(1200, first, 12))
    # The node whose clock is five minutes behind holds the fetch lease: were its own
    # clock used to fetch, every job would be late and misfire (do_nothing: never run).
    cluster.start("behind", clock_offset=-300)
    cluster.start("ahead", clock_offset=300)
    cluster.start("exact")
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
    offsets = {n.name: n.messages("warning") for n in cluster.started}
    assert any("300.0 s ahead of the database's" in m for m in offsets["ahead"])
    assert any("300.0 s behind the database's" in m for m in offsets["behind"])


# -- a node stalls past its leases --


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
    cluster.start("n2")
    sleep_until(began + 3.3)
    # n1 stands still with jobs in flight; n2 runs them again once n1's leases expire
    # (all but those n1 holds locks on in a transaction it was in when it froze).
    cluster.freeze("n1")
    stalled = cluster.claimed_by("n1")
    job_lease = cluster.settings["job_lease"]
    wait_until(
        lambda: (
            cluster.lease("fetch:probe").owner == "n2"  # type: ignore[union-attr]
            and len(cluster.claimed_by("n1")) < len(stalled)
        ),
        job_lease + 10,
        "n2 to take over n1's lease and jobs",
    )
    time.sleep(2.0)
    cluster.thaw("n1")
    wait_all_ran(cluster, entities, timeout=30)
    time.sleep(1.0)  # n1 records what it finished after it woke up
    assert cluster.nodes["n1"].running()
    assert_clean_exit(cluster)

    calls = cluster.calls()
    assert_each_ran(calls, entities, in_order=False)
    twice = duplicates(calls)
    assert twice, "n1 had jobs in flight when it stalled; it finished them after n2 did"
    assert set(twice) <= stalled
    assert all(len(group) == 2 for group in twice.values())
    lost = [m for m in map(LOST.match, cluster.nodes["n1"].messages()) if m]
    assert sum(int(m.group(1)) for m in lost) == len(twice)
    assert not any(LOST.match(m) for m in cluster.nodes["n2"].messages())


# -- the database goes away under load --


def database_outage(cluster: Cluster, server: PrivateMariaDB, outage: float, count: int) -> None:
    first = cluster.due_at(2)
    entities = cluster.insert(cluster.entities(count, first, outage + 14))
    began = time.monotonic()
    cluster.start("n1")
    cluster.start("n2")
    sleep_until(began + 2 + 5)
    server.stop()
    time.sleep(outage)
    server.start()

    wait_all_ran(cluster, entities, timeout=outage + 120)
    assert all(node.running() for node in cluster.nodes.values()), "a node died in the outage"
    assert_clean_exit(cluster)

    calls = cluster.calls()
    assert_each_ran(calls, entities)
    twice = duplicates(calls)
    assert all(len(group) == 2 for group in twice.values()), "a job ran more than twice"
    lost = 0
    for node in cluster.started:
        errors = node.messages("error")
        assert len(errors) == 1, errors
        assert errors[0].startswith("database unavailable ("), errors
        back = [m for m in node.messages() if m.startswith("database reachable again after")]
        assert len(back) == 1, node.messages()
        assert "Traceback" not in node.log.read_text()
        lost += sum(int(m.group(1)) for m in map(LOST.match, node.messages()) if m)
    # Each job run again is one whose outcome came too late, and each is counted once.
    assert len(twice) == lost


def test_database_outage_under_load(
    cluster_factory: ClusterFactory, private_mariadb: PrivateMariaDB
) -> None:
    cluster = cluster_factory(private_mariadb.create_database("outage"), sleep=0.005)
    database_outage(cluster, private_mariadb, outage=10, count=3000)


@pytest.mark.soak
def test_soak_database_outage_under_load(
    cluster_factory: ClusterFactory, private_mariadb: PrivateMariaDB
) -> None:
    cluster = cluster_factory(private_mariadb.create_database("outage"), sleep=0.005)
    database_outage(cluster, private_mariadb, outage=30, count=20_000)


# -- every node down while entities come due --


@attrs.define
class Downtime:
    """One cluster through a full downtime: every node stopped while entities come due."""

    cluster: Cluster
    policy: str
    before: list[ProbeEntity] = attrs.Factory(list)
    missed: list[ProbeEntity] = attrs.Factory(list)
    restarted: datetime | None = None

    def stop_everything(self, downtime: float) -> None:
        cluster = self.cluster
        cluster.start("n1")
        cluster.start("n2")
        self.before = cluster.insert(cluster.entities(200, cluster.due_at(1), 2, "before"))
        wait_all_ran(cluster, self.before, timeout=30)
        assert_clean_exit(cluster)
        # Due while every node is down: ten minutes' worth long ago, and more meanwhile.
        stopped = cluster.db_now()
        self.missed = cluster.insert(
            cluster.entities(600, stopped - timedelta(minutes=10), 600, "long ago")
            + cluster.entities(400, stopped + timedelta(seconds=1), downtime - 2, "meanwhile")
        )

    def start_again(self) -> None:
        self.restarted = self.cluster.db_now()
        self.cluster.start("n1")
        self.cluster.start("n2")

    def check(self) -> None:
        cluster = self.cluster
        everything = self.before + self.missed
        wait_until(
            lambda: sum(cluster.outcomes().values()) >= len(everything),
            90,
            "an outcome for every entity",
        )
        assert_clean_exit(cluster)
        calls = cluster.calls()
        assert not duplicates(calls)
        history = cluster.history()
        states = Counter(str(r["state"]) for r in history)
        assert len({r["job_key"] for r in history}) == len(history) == len(everything)
        ran = {c.entity_id for c in calls}
        assert {e.id for e in self.before} <= ran
        assert self.restarted is not None
        threshold = cluster.settings["misfire_threshold"]
        late = {e.id for e in self.missed if (self.restarted - e.due).total_seconds() > threshold}
        assert len(late) > len(self.missed) / 2
        if self.policy == "fire_once_now":
            assert {e.id for e in self.missed} <= ran
            assert states == Counter({"succeeded": len(everything)})
        else:
            assert not late & ran
            assert states["misfired"] >= len(late)
            assert states == Counter(
                {"succeeded": len(ran), "misfired": len(everything) - len(ran)}
            )


def full_downtime(cluster_factory: ClusterFactory, threshold: float, downtime: float) -> None:
    """Both misfire policies, each on a cluster of its own, through the same downtime."""
    runs = [
        Downtime(
            cluster_factory(settings={"misfire_policy": policy, "misfire_threshold": threshold}),
            policy,
        )
        for policy in ("fire_once_now", "do_nothing")
    ]
    for run in runs:
        run.stop_everything(downtime)
    time.sleep(downtime)
    for run in runs:
        run.start_again()
    for run in runs:
        run.check()


def test_full_downtime_runs_each_missed_entity_once_or_records_a_misfire(
    cluster_factory: ClusterFactory,
) -> None:
    full_downtime(cluster_factory, threshold=2.0, downtime=8)


@pytest.mark.soak
def test_soak_full_downtime_of_ten_minutes(cluster_factory: ClusterFactory) -> None:
    full_downtime(cluster_factory, threshold=60.0, downtime=600)
