"""Schedules on three real ``infsched run`` nodes: each occurrence runs once, none is missed.

200 schedules ``every = 1``, declared in every node's ``[[schedules]]``,
run for 60 s on MariaDB and PostgreSQL (not SQLite: one node per SQLite
database).  Then they are paused, the runs made already finish, and the
nodes stop.  The probe executor records every run (schedule, occurrence,
node, attempt); each schedule's occurrences from the first after it was
declared to the last made a job must each have run once, and history must
hold one succeeded outcome per run.

With ``kill``, the node holding the ``schedules`` lease is SIGKILLed half
way: another node takes the lease over and makes the occurrences due
meanwhile jobs (late, within misfire_threshold), so still none is missed;
only the runs the killed node had claimed and not finished may run again,
as their next attempt (a run is at least once across a crash, and its job
key the same, for the executor to deduplicate).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from infsched.schedule_store import ScheduleStore
from infsched.schedules import SCHEDULE_REPOSITORY
from infsched_bench.harness import Cluster, ScheduleCall, wait_until
from infsched_bench.probe import EXECUTOR

if TYPE_CHECKING:
    from tests.cluster_harness import ClusterFactory

pytest_plugins = ["tests.cluster_harness"]

SCHEDULES = 200
#: Wall-clock seconds the schedules run for before they are paused.
SECONDS = 60
NODES = ("n1", "n2", "n3")
SETTINGS = {
    "fetch_interval": 1.0,
    "lookahead_window": 3.0,
    "heartbeat_interval": 0.5,
    "job_lease": 3.0,
    # Far beyond any lag seen (a few seconds at most on a loaded machine): a run
    # that misfired would be one missed, and this test is about none being missed.
    "misfire_threshold": 30.0,
    # 200 runs a second over three nodes, each run one INSERT of the probe.
    "thread_pool_size": 16,
}


#: With `kill`, each run takes this long (so runs are in flight at the kill).
RUN_SECONDS = 0.1
#: With `kill`, this long after a whole second (database time).
KILL_AFTER_SECOND = 0.3


def schedule_names() -> list[str]:
    return [f"every_second_{i:03d}" for i in range(SCHEDULES)]


def run_schedules(cluster: Cluster, names: list[str], *, kill: bool) -> set[str]:
    """Start the nodes, let the schedules run, pause them, wait for their runs, stop the nodes.

    Returns the job keys the killed node had claimed and not finished (none without `kill`).
    """
    for node in [cluster.start(name, wait=False) for name in NODES]:
        cluster.wait_started(node)
    in_flight: set[str] = set()
    began = time.monotonic()
    if kill:
        time.sleep(SECONDS / 2)
        # The runs start at each whole second and take RUN_SECONDS (a few rounds of
        # the pool): a little after one, some are running on every node.
        now = cluster.db_now()
        time.sleep((KILL_AFTER_SECOND - now.microsecond / 1e6) % 1.0)
        lease = cluster.lease("schedules")
        assert lease is not None
        assert lease.owner in NODES, lease
        killed = lease.owner
        in_flight = cluster.kill(killed)
        print(f"killed {killed} with {len(in_flight)} runs in flight")

        def taken_over() -> bool:
            held = cluster.lease("schedules")
            return held is not None and held.owner not in {None, killed}

        wait_until(
            taken_over,
            float(SETTINGS["job_lease"]) + 10,
            f"another node to take the schedules lease over from {killed}",
        )
    time.sleep(max(0.0, began + SECONDS - time.monotonic()))
    cluster.pause_schedules(names)
    wait_until(lambda: cluster.schedule_jobs() == 0, 60, "the schedules' runs made to finish")
    codes = cluster.stop_all()
    assert set(codes.values()) == {0}, codes
    return in_flight


def check_runs(
    cluster: Cluster, names: list[str], calls: list[ScheduleCall], in_flight: set[str]
) -> None:
    stored = {s.name: s for s in ScheduleStore(cluster.database).list()}
    assert sorted(stored) == names
    by_schedule: dict[str, list[ScheduleCall]] = {name: [] for name in names}
    for call in calls:
        by_schedule[call.schedule].append(call)

    for name, found in by_schedule.items():
        row = stored[name]
        assert row.paused, row
        assert row.materialized_until is not None, row
        # Every occurrence after the schedule was declared, up to the last made a job.
        expected = []
        for occurrence in row.schedule.fire_times_after(row.created_at):
            if occurrence > row.materialized_until:
                break
            expected.append(occurrence)
        ran = Counter(c.occurrence for c in found)
        missed = sorted(set(expected) - set(ran))
        assert not missed, f"{name}: {len(missed)} occurrences never ran, e.g. {missed[:5]}"
        assert set(ran) == set(expected), f"{name}: ran {sorted(set(ran) - set(expected))[:5]}"
        # The pause may come while the materializer is part way through its 200
        # schedules, some of them made up to a second or two less far.
        assert len(expected) >= SECONDS - 5, f"{name}: only {len(expected)} occurrences"
        again = {c.job_key for c in found if ran[c.occurrence] > 1}
        assert again <= in_flight, f"{name}: ran twice, not in flight on a killed node: {again}"
        for key in again:
            attempts = sorted(c.attempt for c in found if c.job_key == key)
            assert attempts == list(range(1, len(attempts) + 1)), (key, attempts)

    assert len({c.node for c in calls}) == len(NODES), Counter(c.node for c in calls)
    keys = {c.job_key for c in calls}
    runs = [r for r in cluster.history() if r["repository"] == SCHEDULE_REPOSITORY]
    assert Counter(str(r["state"]) for r in runs) == {"succeeded": len(keys)}
    assert {r["job_key"] for r in runs} == keys
    assert all(r["entity_id"] == r["job_key"].split(":")[1] for r in runs)


# Each case takes about 70 s, so all four are in `make soak` (CI's run stays under 15 min);
# tests/test_schedule_runs.py has the two-node, catch-up and overlap tests of the short run.
@pytest.mark.soak
@pytest.mark.parametrize("cluster_database", ["mariadb", "postgresql"], indirect=True)
@pytest.mark.parametrize("kill", [False, True], ids=["steady", "lease_holder_killed"])
def test_each_occurrence_runs_exactly_once_none_missed(
    cluster_factory: ClusterFactory, kill: bool
) -> None:
    names = schedule_names()
    cluster = cluster_factory(
        settings=SETTINGS,
        sleep=RUN_SECONDS if kill else 0.0,
        schedules=[
            # Runs may overlap (a slow one while the next is due): the overlap policy
            # would otherwise skip occurrences, by design, and this counts them all.
            {"name": name, "executor": EXECUTOR, "every": 1, "overlap": "allow"}
            for name in names
        ],
    )
    began = time.monotonic()
    in_flight = run_schedules(cluster, names, kill=kill)
    calls = cluster.schedule_calls()
    lags = sorted(c.lag for c in calls)
    spans = [
        (s.materialized_until - s.created_at).total_seconds()
        for s in ScheduleStore(cluster.database).list()
        if s.materialized_until is not None
    ]
    print(f"declared to last made: {min(spans):.1f} to {max(spans):.1f} s")
    print(
        f"{len(calls)} runs in {time.monotonic() - began:.1f} s; lag median "
        f"{lags[len(lags) // 2]:.3f} s, max {lags[-1]:.3f} s; in flight at the kill "
        f"{len(in_flight)}; by node {dict(Counter(c.node for c in calls))}"
    )
    check_runs(cluster, names, calls, in_flight)
    if kill:
        assert in_flight, "the killed node should have had runs in flight"
        for key in in_flight:
            assert max(c.attempt for c in calls if c.job_key == key) >= 2, key
