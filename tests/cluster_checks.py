"""What the three-node tests check of a cluster's run: every entity ran, nothing lost, clean exits.

Shared by tests/test_cluster.py (nodes lost, frozen, minutes off) and
tests/test_cluster_outage.py (the database or every node gone for a while).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from infsched_bench.harness import Call, Cluster, Node, attempts_in_order, wait_until
from infsched_bench.probe import ProbeEntity

#: Run on MariaDB and PostgreSQL.
ON_BOTH = pytest.mark.parametrize("cluster_database", ["mariadb", "postgresql"], indirect=True)

#: A node's line counting jobs it ran whose outcome came too late (they run again).
LOST = re.compile(r"^\d+ jobs ran here but .* (\d+) such jobs on this node in all$")


def lost_outcomes(node: Node) -> int:
    """The jobs a node counted as run there with an outcome that came too late."""
    return max((int(m.group(1)) for m in map(LOST.match, node.messages()) if m), default=0)


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
