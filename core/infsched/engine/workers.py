"""Workers: claim due jobs, run their executors on a bounded pool, record outcomes.

Three threads and a pool:

- the claimer takes due jobs in batches (up to the free capacity) and hands
  them to the pool in chunks, one chunk per thread at most;
- the pool's threads run executors, one job (or one batch call) at a time;
- the recorder writes finished jobs in batches, one transaction each, and
  keeps them in memory while the database is away;
- the keeper renews this node's leases, returns expired ones to waiting,
  and fails jobs that overran their executor's timeout.

Memory is bounded: a node never holds more than `max_outstanding` claimed
jobs (queued, running, or waiting to be recorded), and it claims at most
`claim_ahead` jobs beyond those its threads have started, so that a node that
stands still or dies holds little that the others must wait for.

A pool thread starts a job only while the node can be sure of its lease by
its own monotonic clock: the claim was sent (or the last renewal that covered
it was sent) less than job_lease ago, with a margin.  A node that stood still
longer (a long pause, a frozen VM, a stopped container) gives the unstarted
jobs back instead of running them on leases another node may have taken over.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.clock import Clock
from infsched.cluster.outage import DatabaseOutage
from infsched.cluster.recovery import recover_expired, still_held
from infsched.config import SchedulerConfig
from infsched.engine import misfire
from infsched.engine.binding import RepositoryBinding
from infsched.engine.controls import ALL, Controls
from infsched.engine.history import History
from infsched.engine.joblog import job_logger
from infsched.engine.retry import RetryPolicy
from infsched.errors import BatchResultError
from infsched.executors import BatchExecutor, Executor, ExecutorSpec, JobContext, PermanentError
from infsched.jobstore.base import ClaimedJob, Finished, Outcome
from infsched.jobstore.sql import SqlJobStore
from infsched.metrics.recorder import MetricsRecorder

log = logging.getLogger("infsched.workers")

#: Seconds the claimer sleeps when nothing is due.
IDLE_POLL = 0.1
#: Seconds the claimer waits at most for room to claim (it is woken sooner).
CLAIM_WAIT = 0.1
#: Jobs per chunk handed to one pool thread, at most.
MAX_CHUNK = 50
#: Seconds between two log lines about outcomes that came too late.
LOST_LOG_INTERVAL = 5.0
#: Seconds the keeper sleeps between turns.
KEEPER_TURN = 0.25
#: Seconds of its threads' starts a node claims ahead of them, at most (see claim_ahead).
CLAIM_AHEAD_SECONDS = 0.5
#: A keeper turn this many seconds later than it should be means the process stood still.
STALL = 1.0


@attrs.frozen
class Claim:
    """One claim's monotonic times: when it was sent, and when its jobs joined the held set."""

    sent: float
    held_at: float


@attrs.frozen
class BoundExecutor:
    """An executor instance with its spec and retry policy: one job per call, or a batch.

    Exactly one of `single` and `batch` is set, decided once by `bind`: isinstance
    against a runtime-checkable Protocol inspects the Protocol's members each time,
    which cost more than a no-op job's whole run.
    """

    spec: ExecutorSpec
    retry: RetryPolicy
    single: Executor[Any] | None = None
    batch: BatchExecutor[Any] | None = None

    def __attrs_post_init__(self) -> None:
        if (self.single is None) == (self.batch is None):
            raise TypeError("a BoundExecutor takes exactly one of single and batch")

    @classmethod
    def bind(
        cls, spec: ExecutorSpec, instance: Executor[Any] | BatchExecutor[Any], retry: RetryPolicy
    ) -> BoundExecutor:
        if isinstance(instance, BatchExecutor):
            return cls(spec, retry, batch=instance)
        return cls(spec, retry, single=instance)

    @property
    def is_batch(self) -> bool:
        return self.batch is not None


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class Workers:
    """This node's executing side."""

    def __init__(
        self,
        *,
        node_id: str,
        store: SqlJobStore,
        history: History,
        bindings: Mapping[str, RepositoryBinding],
        executors: Mapping[str, BoundExecutor],
        config: SchedulerConfig,
        clock: Clock,
        metrics: MetricsRecorder,
        controls: Controls,
        job_lease: float = 30.0,
        outage: DatabaseOutage | None = None,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.history = history
        self.bindings = dict(bindings)
        self.executors = dict(executors)
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.controls = controls
        self.job_lease = job_lease
        self.outage = outage or DatabaseOutage()
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
        # Four batches: one being claimed, one running, one being recorded and one
        # spare, so the claimer rarely waits for the recorder (two made the
        # execute benchmark about a fifth slower: docs/performance.md).
        self.max_outstanding = max(2 * config.thread_pool_size, 4 * config.batch_size)
        #: Claimed jobs not yet started (queued, or later in a running chunk) at most:
        #: about CLAIM_AHEAD_SECONDS of this node's starts, within [_least_ahead,
        #: batch_size].  A frozen or killed node holds these from the others; claims
        #: come when half of them have started, so each claim still takes a batch.
        batches = [b.spec.batch_size for b in self.executors.values() if b.is_batch]
        self._least_ahead = min(config.batch_size, max([2 * config.thread_pool_size, *batches]))
        self.claim_ahead = self._least_ahead
        #: Jobs started here in all, and (monotonic time, that count) when the start
        #: rate was last measured.
        self._starts = 0
        self._rate_since = (time.monotonic(), 0)
        self._pool = ThreadPoolExecutor(config.thread_pool_size, thread_name_prefix="infsched-exec")
        self._lock = threading.Lock()
        self._capacity = threading.Condition(self._lock)
        #: Ids of the jobs this node holds (claimed, queued, running, or waiting to be
        #: recorded): their count bounds memory, and their leases are the ones renewed.
        self._held: set[int] = set()
        self._hung = 0
        #: Claimed jobs not started yet: queued, or later in a running chunk.
        self._to_start = 0
        #: Seconds this process stood still (keeper turns far too late), in all: a run
        #: is not failed for a timeout for the time its own thread was stopped.
        self._stalled = 0.0
        #: job id -> (monotonic start less the stalls before it, start time, job,
        #: executor) for jobs running now
        self._running: dict[int, tuple[float, datetime, ClaimedJob, BoundExecutor]] = {}
        self._timed_out: set[int] = set()
        self._queued: dict[Future[None], list[ClaimedJob]] = {}
        self._finished: queue.SimpleQueue[Finished] = queue.SimpleQueue()
        self._stop_claiming = threading.Event()
        self._stop_all = threading.Event()
        self._threads: list[threading.Thread] = []
        self._leftover: list[Finished] = []
        #: Jobs of chunks that were running when stop() began, never started.
        self._unstarted: list[ClaimedJob] = []
        self.lost_outcomes = 0
        #: The last write of outcomes failed: the next cannot tell its own commit from
        #: another node's work by the rows alone (see _write).
        self._write_failed = False
        self._lost_unlogged = 0
        self._lost_examples: list[str] = []
        self._lost_why = ""
        self._lost_logged_at = float("-inf")
        self.unsure_not_started = 0
        self._unsure_unlogged = 0
        self._unsure_oldest = 0.0
        self._unsure_examples: list[str] = []
        self._unsure_logged_at = float("-inf")

    # -- lifecycle --

    def start(self) -> None:
        self._leases_good_until = time.monotonic() + self.job_lease
        self._renewal = (time.monotonic(), self._leases_good_until)
        for target, name in (
            (self._claim_loop, "infsched-claimer"),
            (self._record_loop, "infsched-recorder"),
            (self._keep_loop, "infsched-keeper"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def outstanding(self) -> int:
        with self._lock:
            return len(self._held)

    def stop(self, grace: float) -> None:
        """Stop claiming, release unstarted jobs, let running ones finish within `grace`."""
        self._stop_claiming.set()
        self._threads[0].join(timeout=30)
        cancelled: list[ClaimedJob] = []
        with self._lock:
            queued = list(self._queued.items())
        for future, jobs in queued:
            if future.cancel():
                cancelled.extend(jobs)
        self._release(cancelled)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._held) - self._hung - len(self._unstarted) <= 0:
                    break
            time.sleep(0.05)
        with self._lock:
            unstarted, self._unstarted = self._unstarted, []
        self._release(unstarted)
        self._stop_all.set()
        for thread in self._threads[1:]:
            thread.join(timeout=30)
        self._flush_all()
        with self._lock:
            left = len(self._held)
        if left:
            log.warning(
                "%d jobs still running after the grace period; their leases will "
                "expire and another run will pick them up",
                left,
            )
        self._log_lost()
        self._log_unsure(at_once=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _release(self, jobs: Sequence[ClaimedJob]) -> None:
        if not jobs:
            return
        try:
            self.store.release(self.node_id, [j.id for j in jobs])
        except sa.exc.DBAPIError as exc:
            log.warning(
                "could not release %d unstarted jobs (their leases will expire): %s",
                len(jobs),
                exc,
            )
        with self._lock:
            self._count_started(len(jobs))
        self._settle([job.id for job in jobs])

    # -- claiming --

    def _count_started(self, count: int) -> None:
        """`count` claimed jobs started (or will never start here); call with the lock held.

        Wakes the claimer when half of claim_ahead is left to start.
        """
        before = self._to_start
        self._to_start -= count
        if 2 * self._to_start <= self.claim_ahead < 2 * before:
            self._capacity.notify_all()

    def _serving(self) -> list[str]:
        paused = self.controls.paused()
        if ALL in paused:
            return []
        return [name for name in self.bindings if name not in paused]

    def _claim_loop(self) -> None:
        outage = self.outage.watch("claimer")
        while not self._stop_claiming.is_set():
            self._measure_claim_ahead()
            with self._capacity:
                free = min(
                    self.max_outstanding - len(self._held) - self._hung,
                    self.claim_ahead - self._to_start,
                )
                # Wait for half of claim_ahead to start: claims of a few jobs each
                # would cost a round trip per few jobs.
                if free <= 0 or (self._to_start and 2 * free < self.claim_ahead):
                    self._capacity.wait(timeout=CLAIM_WAIT)
                    continue
            try:
                repositories = self._serving()
                sent = time.monotonic()
                claimed = (
                    self.store.claim_due(
                        self.node_id,
                        min(free, self.config.batch_size),
                        self.job_lease,
                        repositories,
                    )
                    if repositories
                    else []
                )
                outage.ok()
            except Exception as exc:
                self._stop_claiming.wait(outage.failed(exc))
                continue
            if not claimed:
                self._stop_claiming.wait(IDLE_POLL)
                continue
            with self._lock:
                self._held.update(job.id for job in claimed)
                self._to_start += len(claimed)
                claim = Claim(sent, time.monotonic())
            if time.monotonic() - sent >= self.job_lease / 2:
                self._give_back_late_claim(claimed, time.monotonic() - sent)
                continue
            self._dispatch(claimed, claim)

    def _measure_claim_ahead(self) -> None:
        """Set claim_ahead to CLAIM_AHEAD_SECONDS of the start rate, measured every so often.

        Quick jobs need claims of a whole batch to keep the threads busy; slow ones
        would sit claimed for minutes behind a batch, on a node that may freeze or die.
        """
        now = time.monotonic()
        since, starts = self._rate_since
        if now - since < CLAIM_AHEAD_SECONDS:
            return
        with self._lock:
            count = self._starts
        self._rate_since = (now, count)
        wanted = math.ceil((count - starts) / (now - since) * CLAIM_AHEAD_SECONDS)
        self.claim_ahead = max(self._least_ahead, min(self.config.batch_size, wanted))

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
            self.job_lease,
        )
        self._release(claimed)

    def _dispatch(self, claimed: Sequence[ClaimedJob], claim: Claim) -> None:
        now = self.clock.now()
        runnable: dict[str, list[ClaimedJob]] = {}
        for job in claimed:
            bound = self.executors.get(job.executor)
            if bound is None:
                self._record(
                    job,
                    None,
                    Outcome.DEAD,
                    f"no executor named {job.executor!r} on node {self.node_id}",
                    now,
                )
                continue
            if not misfire.runs(job, self.config.misfire_policy, self.config.misfire_threshold):
                self.metrics.increment("jobs_misfired_total", 1, self._labels(job))
                self._record(job, None, Outcome.MISFIRED, "misfired: not run (do_nothing)", now)
                continue
            if misfire.is_misfire(job, self.config.misfire_threshold):
                self.metrics.increment("jobs_misfired_total", 1, self._labels(job))
            runnable.setdefault(job.executor, []).append(job)
        for name, jobs in runnable.items():
            bound = self.executors[name]
            if bound.is_batch:
                size = bound.spec.batch_size
            else:
                size = max(1, min(MAX_CHUNK, math.ceil(len(jobs) / self.config.thread_pool_size)))
            for i in range(0, len(jobs), size):
                chunk = jobs[i : i + size]
                future = self._pool.submit(self._run_chunk, bound, chunk, claim)
                with self._lock:
                    self._queued[future] = chunk
                future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._queued.pop(future, None)

    # -- running (pool threads) --

    def _context(self, job: ClaimedJob) -> JobContext[Any]:
        binding = self.bindings[job.repository]
        entity = binding.spec.from_json(job.snapshot)
        return JobContext(
            entity=entity,
            job_key=job.job_key,
            attempt=job.attempt,
            due_at=job.due_at,
            repository=job.repository,
            logger=job_logger(job.job_key, job.repository),
        )

    def _lease_sure(self, claim: Claim) -> bool:
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
        return time.monotonic() + self._lease_margin < until

    @property
    def _lease_margin(self) -> float:
        """Seconds a lease must have left for this node to count on it."""
        return min(1.0, self.job_lease / 4)

    def _give_back_unsure(self, jobs: Sequence[ClaimedJob], claim: Claim) -> None:
        """Release claimed jobs not started in time: their leases may have run out.

        The process stood still (its threads did not run) for about job_lease;
        another node may have recovered and claimed these jobs meanwhile.  The
        release leaves alone rows that another node holds now.
        """
        self.metrics.increment("jobs_not_started_lease_unsure_total", len(jobs))
        with self._lock:
            self.unsure_not_started += len(jobs)
            self._unsure_unlogged += len(jobs)
            self._unsure_oldest = max(self._unsure_oldest, time.monotonic() - claim.sent)
            self._unsure_examples = (self._unsure_examples + [j.job_key for j in jobs[:3]])[:3]
        self._release(jobs)
        self._log_unsure()

    def _log_unsure(self, *, at_once: bool = False) -> None:
        """One line for the jobs given back unstarted since the last, at most every few seconds."""
        with self._lock:
            if not self._unsure_unlogged or (
                not at_once and time.monotonic() - self._unsure_logged_at < LOST_LOG_INTERVAL
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

    def _run_chunk(self, bound: BoundExecutor, jobs: list[ClaimedJob], claim: Claim) -> None:
        if bound.batch is not None:
            if not self._lease_sure(claim):
                self._give_back_unsure(jobs, claim)
                return
            self._run_batch(bound, bound.batch, jobs)
            return
        single = bound.single
        assert single is not None, "a BoundExecutor holds one of single and batch"
        # Successes are counted once per chunk and repository, not once per job.
        succeeded: Counter[tuple[str, str]] = Counter()
        try:
            for i, job in enumerate(jobs):
                if self._stop_claiming.is_set():
                    # Stopping: the rest of this chunk never started; stop() gives it back.
                    with self._lock:
                        self._unstarted.extend(jobs[i:])
                    return
                if not self._lease_sure(claim):
                    self._give_back_unsure(jobs[i:], claim)
                    return
                self._run_one(bound, single, job, succeeded)
        finally:
            for (repository, executor), count in succeeded.items():
                self.metrics.increment(
                    "jobs_executed_total", count, {"repository": repository, "executor": executor}
                )

    def _start(self, job: ClaimedJob, bound: BoundExecutor) -> datetime:
        started = self.clock.now()
        with self._lock:
            self._count_started(1)
            self._starts += 1
            self._running[job.id] = (time.monotonic() - self._stalled, started, job, bound)
        self.metrics.observe(
            "lag_seconds", (started - job.due_at).total_seconds(), self._labels(job)
        )
        return started

    def _end(self, job: ClaimedJob) -> bool:
        """Forget a running job; False if the keeper already failed it for its timeout."""
        with self._lock:
            self._running.pop(job.id, None)
            if job.id in self._timed_out:
                self._timed_out.discard(job.id)
                self._hung -= 1
                self._capacity.notify_all()
                return False
            return True

    def _run_one(
        self,
        bound: BoundExecutor,
        single: Executor[Any],
        job: ClaimedJob,
        succeeded: Counter[tuple[str, str]],
    ) -> None:
        try:
            context = self._context(job)
        except Exception as exc:  # a snapshot the entity type no longer accepts
            self._record(
                job,
                None,
                Outcome.DEAD,
                f"entity could not be read: {_describe(exc)}",
                self.clock.now(),
            )
            return
        started = self._start(job, bound)
        error: BaseException | None = None
        try:
            single(context)
        except Exception as exc:
            error = exc
        if self._end(job):
            self._conclude(job, bound, started, error, succeeded)

    def _run_batch(
        self, bound: BoundExecutor, batch: BatchExecutor[Any], jobs: list[ClaimedJob]
    ) -> None:
        contexts: list[JobContext[Any]] = []
        readable: list[ClaimedJob] = []
        for job in jobs:
            try:
                contexts.append(self._context(job))
                readable.append(job)
            except Exception as exc:
                self._record(
                    job,
                    None,
                    Outcome.DEAD,
                    f"entity could not be read: {_describe(exc)}",
                    self.clock.now(),
                )
        if not readable:
            return
        started = {job.id: self._start(job, bound) for job in readable}
        errors: Sequence[BaseException | None]
        try:
            errors = batch.execute_batch(contexts)
            if len(errors) != len(contexts):
                raise BatchResultError(
                    f"execute_batch returned {len(errors)} results for {len(contexts)} jobs"
                )
        except Exception as exc:
            errors = [exc] * len(readable)
        for job, error in zip(readable, errors, strict=True):
            if self._end(job):
                self._conclude(job, bound, started[job.id], error)

    def _conclude(
        self,
        job: ClaimedJob,
        bound: BoundExecutor,
        started: datetime,
        error: BaseException | None,
        succeeded: Counter[tuple[str, str]] | None = None,
    ) -> None:
        """Record a run's outcome; a success is counted in `succeeded` if given, else at once."""
        now = self.clock.now()
        if error is None:
            if succeeded is None:
                self.metrics.increment("jobs_executed_total", 1, self._labels(job))
            else:
                succeeded[job.repository, job.executor] += 1
            self._record(job, started, Outcome.SUCCEEDED, None, now)
            return
        labels = self._labels(job)
        self.metrics.increment("jobs_failed_total", 1, labels)
        text = _describe(error)
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
            self.metrics.increment("jobs_dead_lettered_total", 1, labels)
            self._record(job, started, Outcome.DEAD, text, now)
        else:
            retry_at = bound.retry.next_run(job.attempt, now)
            job_log.warning(
                "attempt %d failed, retrying at %s: %s",
                job.attempt,
                retry_at.isoformat(),
                text,
                exc_info=trace,
            )
            self.metrics.increment("jobs_retried_total", 1, labels)
            self._record(job, started, Outcome.FAILED, text, now, retry_at)

    def _record(
        self,
        job: ClaimedJob,
        started: datetime | None,
        outcome: Outcome,
        error: str | None,
        now: datetime,
        retry_at: datetime | None = None,
    ) -> None:
        if started is None:
            with self._lock:
                self._count_started(1)  # recorded without a run
        if started is None and outcome in (Outcome.DEAD, Outcome.MISFIRED):
            # Not run at all (no executor, unreadable entity, do_nothing misfire): say so once.
            dead = outcome is Outcome.DEAD
            job_log = job_logger(job.job_key, job.repository)
            job_log.log(logging.ERROR if dead else logging.WARNING, "not run: %s", error)
            if dead:
                self.metrics.increment("jobs_dead_lettered_total", 1, self._labels(job))
        self._finished.put(Finished(job, outcome, started, now, error, retry_at))

    @staticmethod
    def _labels(job: ClaimedJob) -> dict[str, str]:
        return {"repository": job.repository, "executor": job.executor}

    # -- recording --

    def _settle(self, job_ids: Sequence[int]) -> None:
        """These jobs are no longer this node's: recorded, released, or given up."""
        with self._capacity:
            self._held.difference_update(job_ids)
            self._capacity.notify_all()

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
            self.history.write(conn, results)
            # Just before the job rows are touched: if a lease may have expired (the
            # database or this process stood still longer than job_lease), find out which
            # jobs were claimed again meanwhile; the check locks them until the commit.
            if self._may_have_lapsed(results):
                held = still_held(conn, self.node_id, [(r.job.id, r.job.attempt) for r in results])
                lost[:] = [r for r in results if r.job.id not in held]

        # The store says how many outcomes found their job claimed again (or gone): the
        # exact count, whether or not the check above ran; the check names examples.
        # After a failed write the rows may be gone because that write did commit (its
        # answer was lost with the connection): then only the check's count is sure.
        retried = self._write_failed
        stale = self.store.finish(self.node_id, batch, write_history)
        self._write_failed = False
        count = len(lost) if retried else stale
        if count:
            self._count_lost(
                count,
                [r.job.job_key for r in lost],
                "their leases had expired before the outcomes were written",
            )

    def _may_have_lapsed(self, results: Sequence[Finished]) -> bool:
        # Read in the opposite order to the keeper's writes (see _keep_loop).
        good_until = self._leases_good_until
        if any(r.job.claimed_at < self._suspect_before for r in results):
            return True
        return time.monotonic() + self._lease_margin >= good_until

    def _count_lost(
        self, count: int, examples: Sequence[str], why: str, *, at_once: bool = False
    ) -> None:
        """Count `count` outcomes written too late or not at all: those jobs run again.

        Logged at most every LOST_LOG_INTERVAL seconds, as one line for the lot,
        with up to three of the job keys in `examples`.
        """
        self.lost_outcomes += count
        self.metrics.increment("jobs_outcome_lost_total", count)
        self._lost_unlogged += count
        self._lost_examples = (self._lost_examples + list(examples))[:3]
        self._lost_why = why
        if at_once or time.monotonic() - self._lost_logged_at >= LOST_LOG_INTERVAL:
            self._log_lost()

    def _log_lost(self) -> None:
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

    def _record_loop(self) -> None:
        outage = self.outage.watch("recorder")
        pending: list[Finished] = []
        while not self._stop_all.is_set():
            self._drain(pending, self.config.batch_size, 0.05)
            if not pending:
                continue
            try:
                self._write(pending)
                outage.ok()
            except Exception as exc:
                self._write_failed = True
                self._stop_all.wait(outage.failed(exc))
                continue
            self._settle([r.job.id for r in pending])
            pending = []
        self._leftover = pending

    def _flush_all(self) -> None:
        pending = self._leftover
        self._drain(pending, 10**9, 0.0)
        for i in range(0, len(pending), self.config.batch_size):
            batch = pending[i : i + self.config.batch_size]
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
            self._settle([r.job.id for r in batch])

    # -- keeping leases and timeouts --

    def _keep_loop(self) -> None:
        outage = self.outage.watch("lease keeper")
        next_lease_work = 0.0
        while True:
            turn = time.monotonic()
            if self._stop_all.wait(KEEPER_TURN):
                break
            late = time.monotonic() - turn - KEEPER_TURN
            if late >= STALL:  # the whole process stood still (SIGSTOP, a frozen VM)
                self._stalled += late
            self._fail_overdue()
            self._log_unsure()
            if time.monotonic() < next_lease_work:
                continue
            next_lease_work = time.monotonic() + self.config.heartbeat_interval
            try:
                sent = time.monotonic()
                lapsed = sent >= self._leases_good_until
                with self._lock:
                    held = list(self._held)
                    snapshot_at = time.monotonic()
                self.store.renew_leases(self.node_id, held, self.job_lease)
                if lapsed:  # set before the renewal moves on: see _may_have_lapsed, _lease_sure
                    self._suspect_before = self.clock.now() + timedelta(seconds=1)
                    self._lapse = (snapshot_at, sent)
                self._renewal = (snapshot_at, sent + self.job_lease)
                self._leases_good_until = sent + self.job_lease
                recovered = recover_expired(self.store.database)
                outage.ok()
            except Exception as exc:
                if outage.failed(exc) < 1.0:
                    next_lease_work = 0.0  # a lock conflict: again at the next turn
                continue
            if recovered:
                log.warning("returned %d jobs with expired leases to waiting", recovered)
                self.metrics.increment("jobs_recovered_total", recovered)

    def _fail_overdue(self) -> None:
        # Run time counts from the start, less the time the process stood still since.
        now_mono = time.monotonic() - self._stalled
        overdue: list[tuple[ClaimedJob, BoundExecutor, datetime]] = []
        with self._lock:
            for job_id, (mono_start, started, job, bound) in self._running.items():
                if now_mono - mono_start > bound.spec.timeout and job_id not in self._timed_out:
                    self._timed_out.add(job_id)
                    self._hung += 1
                    overdue.append((job, bound, started))
        for job, bound, started in overdue:
            # The thread cannot be killed; it keeps its pool slot (counted as hung) until
            # the executor returns, and whatever it returns then is ignored.
            error = TimeoutError(
                f"executor {bound.spec.name!r} ran longer than {bound.spec.timeout:g} s"
            )
            self._conclude(job, bound, started, error)
