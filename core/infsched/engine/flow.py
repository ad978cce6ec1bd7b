"""FlowControl: the node's side of the flow limits (docs/flow-control.md).

It tells each claim which targets have limits (`rules`, the limits table's
targets read at most once a second, so ``infsched limits set`` reaches every
node within a second or two), and turns a throttled run into a hold on its
lane's target, which every node's next claim respects.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from infsched.flow_limits import Lane, Limit
from infsched.jobstore.base import ClaimedJob, FlowRules
from infsched.limit_store import LimitStore

log = logging.getLogger("infsched.flow")

#: Seconds a throttled target is held when the gateway did not say for how long.
DEFAULT_HOLD = 1.0
#: Seconds a throttled target is held at most, whatever the gateway said: a
#: Retry-After of a day (a misconfigured gateway, a date far ahead) would stop
#: the target for that long; held this long, one call then asks again.
MAX_HOLD = 300.0
#: Seconds ahead a claim gives rate-limited jobs their start slots (rate_buckets.py).
SLOT_HORIZON = 1.0


def lane_of(job: ClaimedJob) -> Lane:
    return Lane(job.repository, job.executor, job.flow_key)


def declared_limits(
    config_limits: Sequence[Limit], executor_limits: Sequence[Limit]
) -> list[tuple[Limit, str]]:
    """Each declared limit with its source: the configuration's (``config``), and the
    executors' (``executor NAME``) where the configuration names no limit for the same
    target (``[[limits]]`` wins over an ExecutorSpec)."""
    configured = {limit.target.id for limit in config_limits}
    found = [(limit, "config") for limit in config_limits]
    found += [
        (limit, f"executor {limit.target.name}")
        for limit in executor_limits
        if limit.target.id not in configured
    ]
    return found


class FlowControl:
    """The limits a node's claims follow, and the holds its throttled runs leave."""

    def __init__(self, limits: LimitStore) -> None:
        self.limits = limits

    def declare(self, config_limits: Sequence[Limit], executor_limits: Sequence[Limit]) -> None:
        """Put the declared limits (`declared_limits`); operator limits stay as they are."""
        for limit, source in declared_limits(config_limits, executor_limits):
            self.limits.declare([limit], source)

    def rules(self) -> FlowRules:
        """What the next claim must respect (cached: a read of the table a second at most)."""
        return FlowRules(limited=self.limits.targets(), horizon=SLOT_HORIZON)

    def hold_target(self, job: ClaimedJob) -> str:
        """The target a throttled run of `job` holds: its lane's most specific limited
        target (key, then repository, then executor), else its executor."""
        limited = self.limits.targets()
        for target in reversed(lane_of(job).targets()):
            if target in limited:
                return target
        return f"executor:{job.executor}"

    def throttled(self, holds: Sequence[tuple[ClaimedJob, datetime]]) -> None:
        """Hold each throttled job's target until its time, across the cluster."""
        latest: dict[str, datetime] = {}
        for job, until in holds:
            target = self.hold_target(job)
            latest[target] = max(until, latest.get(target, until))
        for target, until in latest.items():
            self.limits.hold([target], until)
            log.warning(
                "%s was throttled by the system it calls: holding it until %s",
                target,
                until.isoformat(timespec="milliseconds"),
            )
