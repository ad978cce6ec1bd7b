"""``infsched bench --stage cluster``: execute throughput per node count, and a failover run.

Throughput: for each node count, a throwaway database gets `jobs` due jobs
(straight into the job table: this measures executing, not fetching) while
every repository is paused; that many ``infsched run`` processes start with
a no-op executor, and once they all beat the pause is lifted.  The rate is
jobs over the time from the first run's start to the last one's finish, as
history records them; the wall time from resume to an empty job table is
reported beside it.  The node counts take turns, round after round, and
each count's median is reported (with every sample): a shared machine's
other load comes and goes, and should not favour one count.

Failover: the soak test's scenario (see `harness.kill_and_restart`): three
nodes, 50,000 entities over three minutes, one node SIGKILLed and restarted
twice; reports entities that never ran, ran twice, and were in flight on the
killed node.

MySQL/MariaDB or PostgreSQL: several nodes do not share a SQLite file.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from infsched.dburl import DatabaseUrl
from infsched.dialects import registered_dialect
from infsched.errors import UnsupportedDatabaseError
from infsched_bench.harness import Cluster, KillPlan, kill_and_restart, wait_until
from infsched_bench.workspace import throwaway_database

Result = dict[str, Any]

#: The failover run: the soak test's plan.
FAILOVER = KillPlan(entities=50_000, seconds=180, burst=1500, kills=(60, 120))
#: Node settings for the throughput runs: the defaults, with leases that outlast a busy node.
THROUGHPUT_SETTINGS: dict[str, Any] = {
    "fetch_interval": 25.0,
    "lookahead_window": 30.0,
    "heartbeat_interval": 5.0,
    "job_lease": 30.0,
    "batch_size": 1000,
    "thread_pool_size": 20,
}


def execute_throughput(
    server: DatabaseUrl,
    jobs: int,
    nodes: int,
    progress: Callable[[str], None],
    *,
    members: Sequence[DatabaseUrl] = (),
) -> Result:
    """Jobs per second `nodes` node processes execute, a no-op executor, `jobs` due jobs.

    `members`: the servers of a replicated database (`server` is one of them); node i
    is given all of them starting from member i, so each node writes through its own.
    """
    with (
        throwaway_database(server) as url,
        tempfile.TemporaryDirectory(prefix="infsched-cluster-") as tmp,
    ):
        names = [f"bench{i + 1}" for i in range(nodes)]
        databases = [m.with_database(url.database or "") for m in members]
        node_urls = {
            name: DatabaseUrl.members([*databases[i:], *databases[:i]])
            for i, name in enumerate(names)
            if databases
        }
        cluster = Cluster(
            url, Path(tmp), settings=THROUGHPUT_SETTINGS, record=False, node_urls=node_urls
        )
        try:
            cluster.pause_all(True)
            progress(f"cluster/{nodes} nodes: adding {jobs} due jobs")
            now = cluster.db_now()
            cluster.add_jobs(cluster.entities(jobs, now - timedelta(seconds=60), 50))
            for name in names:
                cluster.start(name, wait=False)
            for name in names:
                cluster.wait_started(cluster.nodes[name])
            progress(f"cluster/{nodes} nodes: executing")
            began = time.monotonic()
            cluster.pause_all(False)
            wait_until(lambda: cluster.hot_jobs() == 0, 600, "the job table to empty")
            wall = time.monotonic() - began
            done, window = cluster.history_window()
            codes = cluster.stop_all()
            conflicts = sum(
                node.counter("db_conflicts_total", kind=kind)
                for node in cluster.started
                for kind in ("certification conflict", "deadlock")
            )
        finally:
            cluster.close()
    return {
        "stage": "cluster",
        "nodes": nodes,
        "jobs": done,
        "jobs_per_s": round(done / window) if window else None,
        "wall_jobs_per_s": round(jobs / wall),
        "conflicts": round(conflicts),
        "clean_exit": set(codes.values()) == {0},
    }


def failover(server: DatabaseUrl, progress: Callable[[str], None]) -> Result:
    """The soak scenario: three nodes, one SIGKILLed and restarted twice."""
    with (
        throwaway_database(server) as url,
        tempfile.TemporaryDirectory(prefix="infsched-cluster-") as tmp,
    ):
        cluster = Cluster(url, Path(tmp), sleep=0.01, settings={"thread_pool_size": 16})
        try:
            progress(
                f"cluster/failover: {FAILOVER.entities} entities over {FAILOVER.seconds:g} s, "
                f"three nodes, one killed at {FAILOVER.kills[0]:g} s and {FAILOVER.kills[1]:g} s"
            )
            report = kill_and_restart(cluster, FAILOVER)
        finally:
            cluster.close()
    return {"stage": "cluster-failover", "nodes": 3, **report.summary()}


def cluster_stage(
    server: DatabaseUrl,
    jobs: int,
    nodes: Sequence[int],
    *,
    with_failover: bool,
    progress: Callable[[str], None],
    rounds: int = 3,
) -> list[Result]:
    if not registered_dialect(server.scheme.dialect).concurrent_writers:
        raise UnsupportedDatabaseError(
            "the cluster stage needs a MySQL/MariaDB or PostgreSQL server "
            "(--db mysql+pymysql://… or postgresql+psycopg://…)"
        )
    samples: dict[int, list[Result]] = {n: [] for n in nodes}
    for _ in range(rounds):
        for n in nodes:
            samples[n].append(execute_throughput(server, jobs, n, progress))
    results = []
    for n, runs in samples.items():
        rates = [r["jobs_per_s"] for r in runs if r["jobs_per_s"]]
        results.append(
            {
                "stage": "cluster",
                "nodes": n,
                "jobs": jobs,
                "jobs_per_s": round(statistics.median(rates)) if rates else None,
                "samples": rates,
                "wall_jobs_per_s": round(statistics.median(r["wall_jobs_per_s"] for r in runs)),
                "clean_exit": all(r["clean_exit"] for r in runs),
            }
        )
    one = next((r["jobs_per_s"] for r in results if r["nodes"] == 1), None)
    for result in results:
        if one and result["jobs_per_s"]:
            result["vs_one_node"] = round(result["jobs_per_s"] / one, 2)
    if with_failover:
        results.append(failover(server, progress))
    return results
