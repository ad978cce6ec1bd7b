"""Claimer: claims due jobs in batches, up to the free capacity, and hands them to the runner.

Memory is bounded: a node never holds more than `max_outstanding` claimed jobs
(queued, running, or waiting to be recorded), and it claims at most
`claim_ahead` jobs beyond those its threads have started, so that a node that
stands still or dies holds little that the others must wait for.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence

from infsched.cluster.outage import DatabaseOutage
from infsched.config import SchedulerConfig
from infsched.engine.binding import BoundExecutor
from infsched.engine.controls import ALL, Controls
from infsched.engine.flow import FlowControl
from infsched.engine.held import HeldJobs
from infsched.engine.runner import Runner
from infsched.jobstore.base import ClaimedJob, JobStore

log = logging.getLogger("infsched.workers")

#: Seconds the claimer sleeps when nothing is due.
IDLE_POLL = 0.1
#: Seconds the claimer waits at most for room to claim (it is woken sooner).
CLAIM_WAIT = 0.1
#: Seconds of its threads' starts a node claims ahead of them, at most (see claim_ahead).
CLAIM_AHEAD_SECONDS = 0.5


def least_claim_ahead(config: SchedulerConfig, executors: Iterable[BoundExecutor]) -> int:
    """The fewest jobs a node claims ahead: enough for each thread twice, or a whole batch call."""
    batches = [b.spec.batch_size for b in executors if b.is_batch]
    return min(config.batch_size, max([2 * config.thread_pool_size, *batches]))


class Claimer:
    """This node's claim loop."""

    def __init__(
        self,
        *,
        node_id: str,
        store: JobStore,
        held: HeldJobs,
        runner: Runner,
        repositories: Sequence[str],
        controls: Controls,
        config: SchedulerConfig,
        outage: DatabaseOutage,
        job_lease: float,
        least_ahead: int,
        flow: FlowControl | None = None,
    ) -> None:
        """`flow`: the limits the claims follow (none: claims follow only due order)."""
        self._node_id = node_id
        self._flow = flow
        self._store = store
        self._held = held
        self._runner = runner
        self._repositories = list(repositories)
        self._controls = controls
        self._batch_size = config.batch_size
        self._outage = outage
        self._job_lease = job_lease
        # Four batches: one being claimed, one running, one being recorded and one
        # spare, so the claimer rarely waits for the recorder (two made the
        # execute benchmark about a fifth slower: docs/performance.md).
        self.max_outstanding = max(2 * config.thread_pool_size, 4 * config.batch_size)
        #: Claimed jobs not yet started (queued, or later in a running chunk) at most
        #: (held.claim_ahead): about CLAIM_AHEAD_SECONDS of this node's starts, within
        #: [least_ahead, batch_size].  A frozen or killed node holds these from the
        #: others; claims come when half of them have started, so each claim still
        #: takes a batch.
        self._least_ahead = least_ahead
        #: (monotonic time, jobs started by then) when the start rate was last measured.
        self._rate_since = (time.monotonic(), 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._claim_loop, name="infsched-claimer", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Claim no more; returns once the claim under way has been dispatched."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # -- claiming --

    def _serving(self) -> list[str]:
        paused = self._controls.paused()
        if ALL in paused:
            return []
        return [name for name in self._repositories if name not in paused]

    def _claim_loop(self) -> None:
        outage = self._outage.watch("claimer")
        held = self._held
        while not self._stop.is_set():
            self._measure_claim_ahead()
            with held.capacity:
                free = min(
                    self.max_outstanding - len(held.ids) - held.hung,
                    held.claim_ahead - held.to_start,
                )
                # Wait for half of claim_ahead to start: claims of a few jobs each
                # would cost a round trip per few jobs.
                if free <= 0 or (held.to_start and 2 * free < held.claim_ahead):
                    held.capacity.wait(timeout=CLAIM_WAIT)
                    continue
            try:
                repositories = self._serving()
                rules = self._flow.rules() if self._flow is not None else None
                sent = time.monotonic()
                claimed = (
                    self._store.claim_due(
                        self._node_id,
                        min(free, self._batch_size),
                        self._job_lease,
                        repositories,
                        rules,
                    )
                    if repositories
                    else []
                )
                outage.ok()
            except Exception as exc:
                self._stop.wait(outage.failed(exc))
                continue
            if not claimed:
                self._stop.wait(IDLE_POLL)
                continue
            claim = held.hold(claimed, sent)
            if time.monotonic() - sent >= self._job_lease / 2:
                self._give_back_late_claim(claimed, time.monotonic() - sent)
                continue
            self._runner.dispatch(claimed, claim)

    def _measure_claim_ahead(self) -> None:
        """Set claim_ahead to CLAIM_AHEAD_SECONDS of the start rate, measured every so often.

        Quick jobs need claims of a whole batch to keep the threads busy; slow ones
        would sit claimed for minutes behind a batch, on a node that may freeze or die.
        """
        now = time.monotonic()
        since, starts = self._rate_since
        if now - since < CLAIM_AHEAD_SECONDS:
            return
        with self._held.lock:
            count = self._held.starts
        self._rate_since = (now, count)
        wanted = math.ceil((count - starts) / (now - since) * CLAIM_AHEAD_SECONDS)
        self._held.claim_ahead = max(self._least_ahead, min(self._batch_size, wanted))

    def _give_back_late_claim(self, claimed: Sequence[ClaimedJob], took: float) -> None:
        """Release a claim that took too long to come back instead of running it.

        Its leases were reckoned from the database's clock when the claim began;
        after half of job_lease (the process or the database stood still, say a
        frozen VM), they may be about to run out, or have run out already, and
        another node may take the jobs while this one runs them.  Released, each
        runs once, here or there; rows another node took meanwhile are left alone.
        """
        log.warning(
            "a claim of %d jobs took %.1f s to come back (job_lease %.1f s); "
            "releasing them rather than running them on leases that may have expired",
            len(claimed),
            took,
            self._job_lease,
        )
        self._held.release(claimed)
