"""LeaseKeeper: renews this node's job leases and tells the others whether they still hold.

Its thread, each KEEPER_TURN: notices when the whole process stood still (and
adds that to `stalled`, which run timeouts discount), lets the runner fail
overdue runs, and every heartbeat_interval renews the leases of the held jobs
and returns other nodes' expired ones to waiting.

A pool thread starts a job only while the node can be sure of its lease by
its own monotonic clock (`sure`): the claim was sent (or the last renewal that
covered it was sent) less than job_lease ago, with a margin.  A node that stood
still longer (a long pause, a frozen VM, a stopped container) gives the
unstarted jobs back instead of running them on leases another node may have
taken over (`give_back_unsure`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from infsched.clock import Clock
from infsched.cluster.outage import DatabaseOutage
from infsched.engine.held import Claim, HeldJobs
from infsched.jobstore.base import ClaimedJob, Finished, JobStore
from infsched.metrics.recorder import MetricsRecorder

log = logging.getLogger("infsched.workers")

#: Seconds the keeper sleeps between turns.
KEEPER_TURN = 0.25
#: A keeper turn this many seconds later than it should be means the process stood still.
STALL = 1.0
#: Seconds between two log lines about jobs given back unstarted.
UNSURE_LOG_INTERVAL = 5.0


class LeaseKeeper:
    """This node's job leases: renewing them, and judging whether they still hold."""

    def __init__(
        self,
        *,
        node_id: str,
        store: JobStore,
        held: HeldJobs,
        clock: Clock,
        metrics: MetricsRecorder,
        outage: DatabaseOutage,
        job_lease: float,
        heartbeat_interval: float,
    ) -> None:
        self._node_id = node_id
        self._store = store
        self._held = held
        self._clock = clock
        self._metrics = metrics
        self._outage = outage
        self.job_lease = job_lease
        self._heartbeat_interval = heartbeat_interval
        #: Until this monotonic time none of this node's job leases can have expired
        #: in the database: the last renewal (or the start) plus job_lease.
        self._leases_good_until = float("inf")
        #: Jobs claimed before this (database time) may have lost their lease: a renewal
        #: came too late once, and another node may have taken them meanwhile.
        self._suspect_before = datetime.min.replace(tzinfo=UTC)
        #: (monotonic time of the held-set snapshot, good-until) of the last renewal:
        #: claims held by then had their leases renewed until good-until.
        self._renewal = (float("-inf"), float("-inf"))
        #: (snapshot time, send time) of the last renewal that came too late: claims
        #: held by the snapshot whose own lease ran out before the send may be lost.
        self._lapse = (float("-inf"), float("-inf"))
        #: Seconds this process stood still (keeper turns far too late), in all: a run
        #: is not failed for a timeout for the time its own thread was stopped.
        self.stalled = 0.0
        self.unsure_not_started = 0
        self._unsure_unlogged = 0
        self._unsure_oldest = 0.0
        self._unsure_examples: list[str] = []
        self._unsure_logged_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self, every_turn: Callable[[], None]) -> None:
        """Reckon the leases from now and start the keeper; `every_turn` runs on each turn."""
        self._leases_good_until = time.monotonic() + self.job_lease
        self._renewal = (time.monotonic(), self._leases_good_until)
        self._thread = threading.Thread(
            target=self._keep_loop, args=(every_turn,), name="infsched-keeper", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # -- judging leases --

    def sure(self, claim: Claim) -> bool:
        """Whether jobs of `claim` surely hold their leases for a while yet (monotonic clock).

        Their lease ran from no earlier than the claim's send, and from a renewal's
        send if that renewal covered them, unless that renewal came too late.
        """
        renewed_at, renewed_until = self._renewal  # before _lapse: the keeper writes it last
        lapsed_at, lapse_sent = self._lapse
        until = claim.sent + self.job_lease
        if claim.held_at <= lapsed_at and until <= lapse_sent:
            return False
        if claim.held_at <= renewed_at:
            until = max(until, renewed_until)
        return time.monotonic() + self.margin < until

    def may_have_lapsed(self, results: Sequence[Finished]) -> bool:
        """Whether a lease of these outcomes' jobs may have expired before they are written."""
        # Read in the opposite order to the keeper's writes (see _keep_loop).
        good_until = self._leases_good_until
        if any(r.job.claimed_at < self._suspect_before for r in results):
            return True
        return time.monotonic() + self.margin >= good_until

    @property
    def margin(self) -> float:
        """Seconds a lease must have left for this node to count on it."""
        return min(1.0, self.job_lease / 4)

    def give_back_unsure(self, jobs: Sequence[ClaimedJob], claim: Claim) -> None:
        """Release claimed jobs not started in time: their leases may have run out.

        The process stood still (its threads did not run) for about job_lease;
        another node may have recovered and claimed these jobs meanwhile.  The
        release leaves alone rows that another node holds now.
        """
        self._metrics.increment("jobs_not_started_lease_unsure_total", len(jobs))
        with self._held.lock:
            self.unsure_not_started += len(jobs)
            self._unsure_unlogged += len(jobs)
            self._unsure_oldest = max(self._unsure_oldest, time.monotonic() - claim.sent)
            self._unsure_examples = (self._unsure_examples + [j.job_key for j in jobs[:3]])[:3]
        self._held.release(jobs)
        self.log_unsure()

    def log_unsure(self, *, at_once: bool = False) -> None:
        """One line for the jobs given back unstarted since the last, at most every few seconds."""
        with self._held.lock:
            if not self._unsure_unlogged or (
                not at_once and time.monotonic() - self._unsure_logged_at < UNSURE_LOG_INTERVAL
            ):
                return
            count, oldest, examples = (
                self._unsure_unlogged,
                self._unsure_oldest,
                self._unsure_examples,
            )
            self._unsure_unlogged, self._unsure_oldest, self._unsure_examples = 0, 0.0, []
            self._unsure_logged_at = time.monotonic()
        log.warning(
            "did not start %d claimed jobs, claimed up to %.1f s ago (job_lease %.1f s): "
            "this process stood still and their leases may have run out; released them "
            "to run once, here or on another node (e.g. %s); %d such jobs on this node in all",
            count,
            oldest,
            self.job_lease,
            ", ".join(examples),
            self.unsure_not_started,
        )

    # -- keeping --

    def _keep_loop(self, every_turn: Callable[[], None]) -> None:
        outage = self._outage.watch("lease keeper")
        next_lease_work = 0.0
        while True:
            turn = time.monotonic()
            if self._stop.wait(KEEPER_TURN):
                break
            late = time.monotonic() - turn - KEEPER_TURN
            if late >= STALL:  # the whole process stood still (SIGSTOP, a frozen VM)
                self.stalled += late
            every_turn()
            self.log_unsure()
            if time.monotonic() < next_lease_work:
                continue
            next_lease_work = time.monotonic() + self._heartbeat_interval
            try:
                sent = time.monotonic()
                lapsed = sent >= self._leases_good_until
                held, snapshot_at = self._held.snapshot()
                self._store.renew_leases(self._node_id, held, self.job_lease)
                if lapsed:  # set before the renewal moves on: see may_have_lapsed, sure
                    self._suspect_before = self._clock.now() + timedelta(seconds=1)
                    self._lapse = (snapshot_at, sent)
                self._renewal = (snapshot_at, sent + self.job_lease)
                self._leases_good_until = sent + self.job_lease
                recovered = self._store.recover_expired()
                outage.ok()
            except Exception as exc:
                if outage.failed(exc) < 1.0:
                    next_lease_work = 0.0  # a lock conflict: again at the next turn
                continue
            if recovered:
                log.warning("returned %d jobs with expired leases to waiting", recovered)
                self._metrics.increment("jobs_recovered_total", recovered)
