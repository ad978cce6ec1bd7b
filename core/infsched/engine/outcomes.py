"""OutcomeRecorder: turns runs into outcomes and writes them in batches, one transaction each.

Pool threads hand it each run's end (`conclude`) or a job that was not run
(`not_run`); its thread writes them with the history rows, at most batch_size
per transaction, and keeps them in memory while the database is away.  An
outcome whose job was claimed again meanwhile (its lease had expired) counts
in jobs_outcome_lost_total: that job runs again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa

from infsched.clock import Clock
from infsched.cluster.outage import DatabaseOutage
from infsched.engine.binding import BoundExecutor
from infsched.engine.flow import DEFAULT_HOLD, MAX_HOLD, FlowControl
from infsched.engine.held import HeldJobs
from infsched.engine.history import History
from infsched.engine.joblog import job_logger
from infsched.engine.lease_keeper import LeaseKeeper
from infsched.executors import PermanentError, ThrottledError
from infsched.jobstore.base import ClaimedJob, Finished, JobStore, Outcome
from infsched.metrics.recorder import MetricsRecorder

log = logging.getLogger("infsched.workers")

#: Seconds between two log lines about outcomes that came too late.
LOST_LOG_INTERVAL = 5.0


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def job_labels(job: ClaimedJob) -> dict[str, str]:
    return {"repository": job.repository, "executor": job.executor}


class OutcomeRecorder:
    """This node's outcomes, from the pool threads to the job store and the history."""

    def __init__(
        self,
        *,
        node_id: str,
        store: JobStore,
        history: History,
        held: HeldJobs,
        keeper: LeaseKeeper,
        batch_size: int,
        clock: Clock,
        metrics: MetricsRecorder,
        outage: DatabaseOutage,
        flow: FlowControl | None = None,
    ) -> None:
        """`flow` holds the targets of throttled runs (none: they only wait again)."""
        self._node_id = node_id
        self._flow = flow
        #: Throttled runs and when they may run again, for the recorder's thread.
        self._throttled: queue.SimpleQueue[tuple[ClaimedJob, datetime]] = queue.SimpleQueue()
        self._store = store
        self._history = history
        self._held = held
        self._keeper = keeper
        self._batch_size = batch_size
        self._clock = clock
        self._metrics = metrics
        self._outage = outage
        self._finished: queue.SimpleQueue[Finished] = queue.SimpleQueue()
        self._leftover: list[Finished] = []
        self.lost_outcomes = 0
        #: The last write of outcomes failed: the next cannot tell its own commit from
        #: another node's work by the rows alone (see _write).
        self._write_failed = False
        self._lost_unlogged = 0
        self._lost_examples: list[str] = []
        self._lost_why = ""
        self._lost_logged_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._record_loop, name="infsched-recorder", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the recorder's thread; what it did not write waits for flush_all."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # -- outcomes (pool threads, the keeper) --

    def conclude(
        self,
        job: ClaimedJob,
        bound: BoundExecutor,
        started: datetime,
        error: BaseException | None,
        succeeded: Counter[tuple[str, str]] | None = None,
    ) -> None:
        """Record a run's outcome; a success is counted in `succeeded` if given, else at once."""
        now = self._clock.now()
        if error is None:
            if succeeded is None:
                self._metrics.increment("jobs_executed_total", 1, job_labels(job))
            else:
                succeeded[job.repository, job.executor] += 1
            self._finished.put(Finished(job, Outcome.SUCCEEDED, started, now, None, None))
            return
        labels = job_labels(job)
        if isinstance(error, ThrottledError):
            # Not a failure: the job waits again, no attempt counted, and its target is held.
            hold = error.retry_after if error.retry_after is not None else DEFAULT_HOLD
            hold = min(max(0.0, hold), MAX_HOLD)
            self._metrics.increment("jobs_throttled_total", 1, labels)
            self._throttled.put((job, now + timedelta(seconds=hold)))
            return
        self._metrics.increment("jobs_failed_total", 1, labels)
        text = describe(error)
        job_log = job_logger(job.job_key, job.repository)
        # One line per failure; its stack trace only at --log-level debug.
        trace = error if job_log.isEnabledFor(logging.DEBUG) else None
        if bound.retry.gives_up(job.attempt, error):
            reason = (
                "permanent error"
                if isinstance(error, PermanentError)
                else (f"attempt {job.attempt} of {bound.retry.max_attempts}")
            )
            job_log.error("dead-lettered (%s): %s", reason, text, exc_info=trace)
            self._metrics.increment("jobs_dead_lettered_total", 1, labels)
            self._finished.put(Finished(job, Outcome.DEAD, started, now, text, None))
        else:
            retry_at = bound.retry.next_run(job.attempt, now)
            job_log.warning(
                "attempt %d failed, retrying at %s: %s",
                job.attempt,
                retry_at.isoformat(),
                text,
                exc_info=trace,
            )
            self._metrics.increment("jobs_retried_total", 1, labels)
            self._finished.put(Finished(job, Outcome.FAILED, started, now, text, retry_at))

    def not_run(self, job: ClaimedJob, outcome: Outcome, error: str, now: datetime) -> None:
        """Record a claimed job that is not run: no executor, unreadable entity, or misfired."""
        with self._held.lock:
            self._held.count_started(1)  # recorded without a run
        if outcome in (Outcome.DEAD, Outcome.MISFIRED):
            # Not run at all (no executor, unreadable entity, do_nothing misfire): say so once.
            dead = outcome is Outcome.DEAD
            job_log = job_logger(job.job_key, job.repository)
            job_log.log(logging.ERROR if dead else logging.WARNING, "not run: %s", error)
            if dead:
                self._metrics.increment("jobs_dead_lettered_total", 1, job_labels(job))
        self._finished.put(Finished(job, outcome, None, now, error, None))

    # -- writing --

    def _drain(self, pending: list[Finished], limit: int, wait: float) -> None:
        try:
            if not pending:
                pending.append(self._finished.get(timeout=wait))
            while len(pending) < limit:
                pending.append(self._finished.get_nowait())
        except queue.Empty:
            pass

    def _write(self, batch: Sequence[Finished]) -> None:
        lost: list[Finished] = []

        def write_history(conn: sa.Connection, results: Sequence[Finished]) -> None:
            self._history.write(conn, results, self._store.job_rows)
            # Just before the job rows are touched: if a lease may have expired (the
            # database or this process stood still longer than job_lease), find out which
            # jobs were claimed again meanwhile; the check locks them until the commit.
            if self._keeper.may_have_lapsed(results):
                held = self._store.still_held(
                    conn, self._node_id, [(r.job.id, r.job.attempt) for r in results]
                )
                lost[:] = [r for r in results if r.job.id not in held]

        # The store says how many outcomes found their job claimed again (or gone): the
        # exact count, whether or not the check above ran; the check names examples.
        # After a failed write the rows may be gone because that write did commit (its
        # answer was lost with the connection): then only the check's count is sure.
        retried = self._write_failed
        stale = self._store.finish(self._node_id, batch, write_history)
        self._write_failed = False
        count = len(lost) if retried else stale
        if count:
            self._count_lost(
                count,
                [r.job.job_key for r in lost],
                "their leases had expired before the outcomes were written",
            )

    def _count_lost(
        self, count: int, examples: Sequence[str], why: str, *, at_once: bool = False
    ) -> None:
        """Count `count` outcomes written too late or not at all: those jobs run again.

        Logged at most every LOST_LOG_INTERVAL seconds, as one line for the lot,
        with up to three of the job keys in `examples`.
        """
        self.lost_outcomes += count
        self._metrics.increment("jobs_outcome_lost_total", count)
        self._lost_unlogged += count
        self._lost_examples = (self._lost_examples + list(examples))[:3]
        self._lost_why = why
        if at_once or time.monotonic() - self._lost_logged_at >= LOST_LOG_INTERVAL:
            self.log_lost()

    def log_lost(self) -> None:
        """One line for the outcomes counted lost since the last."""
        if not self._lost_unlogged:
            return
        examples = f" (e.g. {', '.join(self._lost_examples)})" if self._lost_examples else ""
        log.warning(
            "%d jobs ran here but %s%s; they run again, with the same job key and "
            "the next attempt number; %d such jobs on this node in all",
            self._lost_unlogged,
            self._lost_why,
            examples,
            self.lost_outcomes,
        )
        self._lost_unlogged = 0
        self._lost_examples = []
        self._lost_logged_at = time.monotonic()

    def _defer_throttled(self) -> None:
        """Throttled runs wait again until their time, and their targets are held."""
        throttled: list[tuple[ClaimedJob, datetime]] = []
        try:
            while len(throttled) < self._batch_size:
                throttled.append(self._throttled.get_nowait())
        except queue.Empty:
            pass
        if not throttled:
            return
        try:
            if self._flow is not None:
                self._flow.throttled(throttled)
            self._store.defer(self._node_id, [(job.id, until) for job, until in throttled])
        except Exception:
            for item in throttled:
                self._throttled.put(item)
            raise
        self._held.settle([job.id for job, _until in throttled])

    def _record_loop(self) -> None:
        outage = self._outage.watch("recorder")
        pending: list[Finished] = []
        while not self._stop.is_set():
            self._drain(pending, self._batch_size, 0.05)
            try:
                self._defer_throttled()
            except Exception as exc:
                self._stop.wait(outage.failed(exc))
                continue
            if not pending:
                continue
            try:
                self._write(pending)
                outage.ok()
            except Exception as exc:
                self._write_failed = True
                self._stop.wait(outage.failed(exc))
                continue
            self._held.settle([r.job.id for r in pending])
            pending = []
        self._leftover = pending

    def flush_all(self) -> None:
        """Write every outcome left (after stop), counting those that cannot be written."""
        try:
            while not self._throttled.empty():
                self._defer_throttled()
        except sa.exc.DBAPIError:
            # Their leases run out and another node runs them: nothing is lost.
            log.warning("throttled jobs could not be given back at shutdown")
        pending = self._leftover
        self._drain(pending, 10**9, 0.0)
        for i in range(0, len(pending), self._batch_size):
            batch = pending[i : i + self._batch_size]
            try:
                self._write(batch)
            except sa.exc.DBAPIError as exc:
                self._write_failed = True
                self._count_lost(
                    len(batch),
                    [r.job.job_key for r in batch],
                    f"the outcomes could not be recorded at shutdown ({type(exc).__name__})",
                    at_once=True,
                )
            self._held.settle([r.job.id for r in batch])
