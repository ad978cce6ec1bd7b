"""Workers: this node's executing side, wired together and started and stopped as one.

Four parts, one module each, sharing the held jobs' lock and counts (held.py):

- the `Claimer` (claimer.py) takes due jobs in batches, up to the free capacity
  and claim_ahead, and hands them to the runner;
- the `Runner` (runner.py) runs executors on a bounded pool, in chunks of one
  job per call or one batch call, checking each claim's lease before each start;
- the `OutcomeRecorder` (outcomes.py) writes finished jobs in batches, one
  transaction each, and keeps them in memory while the database is away;
- the `LeaseKeeper` (lease_keeper.py) renews this node's leases, returns
  expired ones to waiting, and on each turn lets the runner fail runs that
  overran their executor's timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from infsched.clock import Clock
from infsched.cluster.outage import DatabaseOutage
from infsched.config import SchedulerConfig
from infsched.engine.binding import BoundExecutor, RepositoryBinding
from infsched.engine.claimer import Claimer, least_claim_ahead
from infsched.engine.controls import Controls
from infsched.engine.flow import FlowControl
from infsched.engine.held import HeldJobs
from infsched.engine.history import History
from infsched.engine.lease_keeper import LeaseKeeper
from infsched.engine.outcomes import OutcomeRecorder
from infsched.engine.runner import Runner
from infsched.engine.schedule_gate import ScheduleGate
from infsched.jobstore.base import JobStore
from infsched.metrics.recorder import MetricsRecorder
from infsched.schedules import SCHEDULE_REPOSITORY

log = logging.getLogger("infsched.workers")


class Workers:
    """This node's executing side: a claimer, a runner, a recorder and a lease keeper."""

    def __init__(
        self,
        *,
        node_id: str,
        store: JobStore,
        history: History,
        bindings: Mapping[str, RepositoryBinding],
        executors: Mapping[str, BoundExecutor],
        config: SchedulerConfig,
        clock: Clock,
        metrics: MetricsRecorder,
        controls: Controls,
        job_lease: float = 30.0,
        outage: DatabaseOutage | None = None,
        runs_schedules: bool = True,
        late_executor: Callable[[str], BoundExecutor | None] | None = None,
        flow: FlowControl | None = None,
    ) -> None:
        """With `runs_schedules`, this node also claims and runs schedules' runs
        (`SCHEDULE_REPOSITORY`), binding their executors through `late_executor`."""
        self.executors = dict(executors)
        outage = outage or DatabaseOutage()
        least_ahead = least_claim_ahead(config, self.executors.values())
        self.held = HeldJobs(store, node_id, claim_ahead=least_ahead)
        self.keeper = LeaseKeeper(
            node_id=node_id,
            store=store,
            held=self.held,
            clock=clock,
            metrics=metrics,
            outage=outage,
            job_lease=job_lease,
            heartbeat_interval=config.heartbeat_interval,
        )
        self.recorder = OutcomeRecorder(
            node_id=node_id,
            store=store,
            history=history,
            held=self.held,
            keeper=self.keeper,
            batch_size=config.batch_size,
            clock=clock,
            metrics=metrics,
            outage=outage,
            flow=flow,
        )
        self.runner = Runner(
            node_id=node_id,
            held=self.held,
            keeper=self.keeper,
            recorder=self.recorder,
            bindings=dict(bindings),
            executors=self.executors,
            config=config,
            clock=clock,
            metrics=metrics,
            gate=ScheduleGate(store, config.misfire_threshold) if runs_schedules else None,
            late_executor=late_executor,
        )
        serving = list(bindings) + ([SCHEDULE_REPOSITORY] if runs_schedules else [])
        self.claimer = Claimer(
            node_id=node_id,
            store=store,
            held=self.held,
            runner=self.runner,
            repositories=serving,
            controls=controls,
            config=config,
            outage=outage,
            job_lease=job_lease,
            least_ahead=least_ahead,
            flow=flow,
        )

    @property
    def outstanding(self) -> int:
        return self.held.outstanding

    def start(self) -> None:
        # The keeper first: it reckons the leases from now, before the first claim.
        self.keeper.start(every_turn=self.runner.fail_overdue)
        self.recorder.start()
        self.claimer.start()

    def stop(self, grace: float) -> None:
        """Stop claiming, release unstarted jobs, let running ones finish within `grace`."""
        self.runner.stop_starting()
        self.claimer.stop()
        self.held.release(self.runner.cancel_queued())
        self.runner.wait_for_runs(grace)
        self.held.release(self.runner.take_unstarted())
        self.keeper.stop()
        self.recorder.stop()
        self.recorder.flush_all()
        left = self.held.outstanding
        if left:
            log.warning(
                "%d jobs still running after the grace period; their leases will "
                "expire and another run will pick them up",
                left,
            )
        self.recorder.log_lost()
        self.keeper.log_unsure(at_once=True)
        self.runner.shutdown()
