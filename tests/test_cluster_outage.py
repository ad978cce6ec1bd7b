"""The database, or every node, gone for a while under load: real ``infsched run`` processes.

As tests/test_cluster.py (its module docstring says how the probe records
calls), on MariaDB and PostgreSQL.  The outage tests stop a private server of
their own; the downtime tests stop every node while entities come due.  The
default run has seconds of outage and downtime, ``-m soak`` 30 s and ten
minutes.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import attrs
import pytest

from infsched_bench.harness import Cluster, duplicates, sleep_until, wait_until
from infsched_bench.probe import ProbeEntity
from tests.cluster_checks import (
    ON_BOTH,
    assert_clean_exit,
    assert_each_ran,
    lost_outcomes,
    wait_all_ran,
)

if TYPE_CHECKING:
    from tests.cluster_harness import ClusterFactory, PrivateServer

pytest_plugins = ["tests.cluster_harness"]


# -- the database goes away under load --


def database_outage(cluster: Cluster, server: PrivateServer, outage: float, count: int) -> None:
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
        lost += lost_outcomes(node)
    # Each job run again is one whose outcome came too late, and each is counted. A
    # write retried after the connection broke cannot tell its own commit (answer lost)
    # from another node's work, so it counts by the lease check and may count a job that
    # did not run again (docs/clustering.md); seen once in about ten runs.
    assert len(twice) <= lost <= len(twice) + 2 * int(cluster.settings["batch_size"])


# PostgreSQL's variant in -m soak: it failed once in 13 runs, beside the Galera tests
# on the other test worker (2026-12-04, output not kept; the 10 runs after it passed,
# 4 of them under CPU load), so it stays out of CI's run until a failure shows why.
@pytest.mark.parametrize(
    "cluster_database",
    ["mariadb", pytest.param("postgresql", marks=pytest.mark.soak)],
    indirect=True,
)
def test_database_outage_under_load(
    cluster_factory: ClusterFactory, private_server: PrivateServer
) -> None:
    cluster = cluster_factory(private_server.create_database("outage"), sleep=0.005)
    database_outage(cluster, private_server, outage=10, count=3000)


@pytest.mark.soak
@ON_BOTH
def test_soak_database_outage_under_load(
    cluster_factory: ClusterFactory, private_server: PrivateServer
) -> None:
    cluster = cluster_factory(private_server.create_database("outage"), sleep=0.005)
    database_outage(cluster, private_server, outage=30, count=20_000)


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


@ON_BOTH
def test_full_downtime_runs_each_missed_entity_once_or_records_a_misfire(
    cluster_factory: ClusterFactory,
) -> None:
    full_downtime(cluster_factory, threshold=2.0, downtime=8)


@pytest.mark.soak
@ON_BOTH
def test_soak_full_downtime_of_ten_minutes(cluster_factory: ClusterFactory) -> None:
    full_downtime(cluster_factory, threshold=60.0, downtime=600)
