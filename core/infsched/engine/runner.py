"""Runner: runs claimed jobs' executors on a bounded pool, one job or one batch call at a time.

`dispatch` hands a claim's jobs to the pool in chunks, one chunk per thread at
most (or one batch call per batch executor's batch_size), after the misfire
check.  Right before each start a pool thread asks the lease keeper whether the
claim's lease is still sure; if not, it gives the rest of the chunk back.  A run
longer than its executor's timeout is failed by `fail_overdue` (on the keeper's
turn); the thread cannot be killed, so it keeps its pool slot, counted as hung.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

from infsched.clock import Clock
from infsched.config import SchedulerConfig
from infsched.engine import misfire
from infsched.engine.binding import BoundExecutor, RepositoryBinding
from infsched.engine.held import Claim, HeldJobs
from infsched.engine.joblog import job_logger
from infsched.engine.lease_keeper import LeaseKeeper
from infsched.engine.outcomes import OutcomeRecorder, describe, job_labels
from infsched.engine.pacer import EARLY, Pacer
from infsched.engine.schedule_gate import ScheduleGate
from infsched.errors import BatchResultError
from infsched.executors import BatchExecutor, Executor, JobContext
from infsched.jobstore.base import ClaimedJob, Outcome
from infsched.metrics.recorder import MetricsRecorder
from infsched.schedules import SCHEDULE_REPOSITORY, ScheduledRun

#: Jobs per chunk handed to one pool thread, at most.
MAX_CHUNK = 50
#: Seconds a rate-limited job may start after its slot; later, it is given back.
SLOT_SLACK = 0.025
#: Seconds between looks at whether a queued schedule run's predecessor is gone.
QUEUE_POLL = 0.2


class Runner:
    """This node's pool threads and the runs on them."""

    def __init__(
        self,
        *,
        node_id: str,
        held: HeldJobs,
        keeper: LeaseKeeper,
        recorder: OutcomeRecorder,
        bindings: Mapping[str, RepositoryBinding],
        executors: Mapping[str, BoundExecutor],
        config: SchedulerConfig,
        clock: Clock,
        metrics: MetricsRecorder,
        gate: ScheduleGate | None = None,
        late_executor: Callable[[str], BoundExecutor | None] | None = None,
    ) -> None:
        """`gate` decides schedules' runs (none: this node runs no schedules);
        `late_executor` binds an executor no repository needed when a job first names it."""
        self._node_id = node_id
        self._held = held
        self._keeper = keeper
        self._recorder = recorder
        self._bindings = bindings
        self._executors = dict(executors)
        self._config = config
        self._clock = clock
        self._metrics = metrics
        self._gate = gate
        self._late_executor = late_executor
        self._pool = ThreadPoolExecutor(config.thread_pool_size, thread_name_prefix="infsched-exec")
        #: job id -> (monotonic start less the stalls before it, start time, job,
        #: executor) for jobs running now; guarded by the held jobs' lock, as are
        #: the three below.
        self._running: dict[int, tuple[float, datetime, ClaimedJob, BoundExecutor]] = {}
        self._timed_out: set[int] = set()
        self._queued: dict[Future[None], list[ClaimedJob]] = {}
        #: Jobs of chunks that were running when stopping began, never started.
        self._unstarted: list[ClaimedJob] = []
        self._stopping = threading.Event()
        #: Rate-limited jobs waiting for their start slots.
        self._pacer = Pacer(self._dispatch_paced)

    # -- lifecycle --

    def stop_starting(self) -> None:
        """Start no more jobs of running chunks: they wait in `take_unstarted`."""
        self._stopping.set()

    def cancel_queued(self) -> list[ClaimedJob]:
        """Cancel the chunks no thread has taken yet, and the jobs waiting for their slots;
        their jobs."""
        cancelled = self._pacer.take_all()
        self._held.unpace(len(cancelled))
        with self._held.lock:
            queued = list(self._queued.items())
        for future, jobs in queued:
            if future.cancel():
                cancelled.extend(jobs)
        return cancelled

    def wait_for_runs(self, grace: float) -> None:
        """Wait up to `grace` seconds until every held job is hung, unstarted, or recorded."""
        held = self._held
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with held.lock:
                if len(held.ids) - held.hung - len(self._unstarted) <= 0:
                    break
            time.sleep(0.05)

    def take_unstarted(self) -> list[ClaimedJob]:
        with self._held.lock:
            unstarted, self._unstarted = self._unstarted, []
        return unstarted

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- dispatching (the claimer's thread) --

    def dispatch(self, claimed: Sequence[ClaimedJob], claim: Claim) -> None:
        """Run a claim's jobs: those with a start slot ahead at their slot (the pacer),
        the rest now."""
        now, mono = self._clock.now(), time.monotonic()
        paced: list[tuple[float, ClaimedJob]] = []
        at_once: list[ClaimedJob] = []
        for job in claimed:
            ahead = 0.0 if job.start_at is None else (job.start_at - now).total_seconds()
            if ahead > EARLY:
                # By the node's clock corrected to the database's: the slots are the
                # database's times, and every node must hold its jobs to the same clock.
                paced.append((mono + ahead, job))
            else:
                at_once.append(job)
        if paced:
            self._held.pace(len(paced))
            self._pacer.hold(paced, claim)
        if at_once:
            self._dispatch_now(at_once, claim)

    def _dispatch_paced(self, jobs: list[ClaimedJob], claim: Claim) -> None:
        """Jobs whose slot has come (the pacer's thread)."""
        self._held.unpace(len(jobs))
        self._dispatch_now(jobs, claim)

    def _dispatch_now(self, claimed: list[ClaimedJob], claim: Claim) -> None:
        now = self._clock.now()
        runnable: dict[str, list[ClaimedJob]] = {}
        scheduled: dict[tuple[str, str], list[ClaimedJob]] = {}
        for job in claimed:
            bound = self._executor(job.executor)
            if bound is None:
                self._recorder.not_run(
                    job,
                    Outcome.DEAD,
                    f"no executor named {job.executor!r} on node {self._node_id}",
                    now,
                )
                continue
            if job.repository == SCHEDULE_REPOSITORY and self._gate is not None:
                # Its own catch-up policy applies, not misfire_policy (ScheduleGate).
                scheduled.setdefault((job.executor, job.entity_id), []).append(job)
                continue
            if not misfire.runs(job, self._config.misfire_policy, self._config.misfire_threshold):
                self._metrics.increment("jobs_misfired_total", 1, job_labels(job))
                self._recorder.not_run(job, Outcome.MISFIRED, "misfired: not run (do_nothing)", now)
                continue
            if misfire.is_misfire(job, self._config.misfire_threshold):
                self._metrics.increment("jobs_misfired_total", 1, job_labels(job))
            runnable.setdefault(job.executor, []).append(job)
        for name, jobs in runnable.items():
            bound = self._executors[name]
            if bound.is_batch:
                size = bound.spec.batch_size
            else:
                size = max(1, min(MAX_CHUNK, math.ceil(len(jobs) / self._config.thread_pool_size)))
            for i in range(0, len(jobs), size):
                chunk = jobs[i : i + size]
                self._submit(self._run_chunk, bound, chunk, claim)
        for (name, _schedule), runs in scheduled.items():
            self._submit(self._run_scheduled, self._executors[name], runs, claim)

    def _executor(self, name: str) -> BoundExecutor | None:
        bound = self._executors.get(name)
        if bound is None and self._late_executor is not None:
            bound = self._late_executor(name)
            if bound is not None:
                self._executors[name] = bound
        return bound

    def _submit(
        self,
        run: Callable[[BoundExecutor, list[ClaimedJob], Claim], None],
        bound: BoundExecutor,
        chunk: list[ClaimedJob],
        claim: Claim,
    ) -> None:
        future = self._pool.submit(run, bound, chunk, claim)
        with self._held.lock:
            self._queued[future] = chunk
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._held.lock:
            self._queued.pop(future, None)

    # -- running (pool threads) --

    def _run_scheduled(self, bound: BoundExecutor, runs: list[ClaimedJob], claim: Claim) -> None:
        """A claim's runs of one schedule: the gate's verdict, then one after another."""
        gate = self._gate
        assert gate is not None, "schedule runs are grouped only where there is a gate"
        now = self._clock.now()
        admitted = gate.admit(runs, now)
        labels = {"schedule": runs[0].entity_id}
        for job, why in admitted.misfired:
            self._metrics.increment("jobs_misfired_total", 1, job_labels(job))
            self._metrics.increment("schedule_occurrences_misfired_total", 1, labels)
            self._recorder.not_run(job, Outcome.MISFIRED, why, now)
        for job, why in admitted.skipped:
            self._metrics.increment("schedule_occurrences_skipped_total", 1, labels)
            self._recorder.not_run(job, Outcome.SKIPPED, why, now)
        run = admitted.run
        for job in admitted.wait:
            if not self._wait_for_predecessor(job, claim):
                return
            run = [*run, job]
        if run:
            self._run_chunk(bound, run, claim)

    def _wait_for_predecessor(self, job: ClaimedJob, claim: Claim) -> bool:
        """Hold a queued run (its lease kept) until the earlier run of its schedule is gone.

        False when it was given back instead: stopping, or its lease no longer sure.
        """
        gate = self._gate
        assert gate is not None
        while gate.ahead(job, {job.id}) > 0:
            if self._stopping.wait(QUEUE_POLL):
                with self._held.lock:
                    self._unstarted.append(job)
                return False
            if not self._keeper.sure(claim):
                self._keeper.give_back_unsure([job], claim)
                return False
        return True

    def _context(self, job: ClaimedJob) -> JobContext[Any]:
        entity: object
        if job.repository == SCHEDULE_REPOSITORY:
            entity = ScheduledRun.from_snapshot(job.snapshot)
        else:
            entity = self._bindings[job.repository].spec.from_json(job.snapshot)
        return JobContext(
            entity=entity,
            job_key=job.job_key,
            attempt=job.attempt,
            due_at=job.due_at,
            repository=job.repository,
            logger=job_logger(job.job_key, job.repository),
        )

    def _run_chunk(self, bound: BoundExecutor, jobs: list[ClaimedJob], claim: Claim) -> None:
        keeper = self._keeper
        if bound.batch is not None:
            if not keeper.sure(claim):
                keeper.give_back_unsure(jobs, claim)
                return
            missed = [job for job in jobs if self._missed_slot(job, claim)]
            if missed:
                self._give_back_late(missed)
                jobs = [job for job in jobs if job not in missed]
            if jobs:
                self._run_batch(bound, bound.batch, jobs)
            return
        single = bound.single
        assert single is not None, "a BoundExecutor holds one of single and batch"
        # Successes are counted once per chunk and repository, not once per job.
        succeeded: Counter[tuple[str, str]] = Counter()
        late: list[ClaimedJob] = []
        try:
            for i, job in enumerate(jobs):
                if self._stopping.is_set():
                    # Stopping: the rest of this chunk never started; stop() gives it back.
                    with self._held.lock:
                        self._unstarted.extend(jobs[i:])
                    return
                if not keeper.sure(claim):
                    keeper.give_back_unsure(jobs[i:], claim)
                    return
                if self._missed_slot(job, claim):
                    late.append(job)
                    continue
                self._run_one(bound, single, job, succeeded)
        finally:
            self._give_back_late(late)
            for (repository, executor), count in succeeded.items():
                self._metrics.increment(
                    "jobs_executed_total", count, {"repository": repository, "executor": executor}
                )

    def _missed_slot(self, job: ClaimedJob, claim: Claim) -> bool:
        """Whether a rate-limited job comes to start more than SLOT_SLACK after a slot its
        rate pushed past the claim.

        Started late, it would share a second with the starts due in it and go
        over the rate; given back, it takes a new slot.  So every start falls
        within SLOT_SLACK of its slot (docs/flow-control.md, "Accuracy").
        """
        if job.start_at is None or (job.start_at - job.claimed_at).total_seconds() <= EARLY:
            # Its slot was the claim's own time: its rate had room then (an idle
            # target, or one far above what runs), and a late start crowds nobody.
            return False
        return (self._clock.now() - job.start_at).total_seconds() > SLOT_SLACK

    def _give_back_late(self, late: list[ClaimedJob]) -> None:
        if late:
            self._metrics.increment("jobs_slot_missed_total", len(late))
            self._held.release(late)

    def _start(self, job: ClaimedJob, bound: BoundExecutor) -> datetime:
        started = self._clock.now()
        held = self._held
        with held.lock:
            held.count_started(1)
            held.starts += 1
            self._running[job.id] = (time.monotonic() - self._keeper.stalled, started, job, bound)
        self._metrics.observe(
            "lag_seconds", (started - job.due_at).total_seconds(), job_labels(job)
        )
        return started

    def _end(self, job: ClaimedJob) -> bool:
        """Forget a running job; False if the keeper already failed it for its timeout."""
        held = self._held
        with held.lock:
            self._running.pop(job.id, None)
            if job.id in self._timed_out:
                self._timed_out.discard(job.id)
                held.hung -= 1
                held.capacity.notify_all()
                return False
            return True

    def _unreadable(self, job: ClaimedJob, exc: Exception) -> None:
        """A snapshot the entity type no longer accepts: the job is dead, not run."""
        self._recorder.not_run(
            job, Outcome.DEAD, f"entity could not be read: {describe(exc)}", self._clock.now()
        )

    def _run_one(
        self,
        bound: BoundExecutor,
        single: Executor[Any],
        job: ClaimedJob,
        succeeded: Counter[tuple[str, str]],
    ) -> None:
        try:
            context = self._context(job)
        except Exception as exc:
            self._unreadable(job, exc)
            return
        started = self._start(job, bound)
        error: BaseException | None = None
        try:
            single(context)
        except Exception as exc:
            error = exc
        if self._end(job):
            self._recorder.conclude(job, bound, started, error, succeeded)

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
                self._unreadable(job, exc)
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
                self._recorder.conclude(job, bound, started[job.id], error)

    # -- timeouts (the keeper's turn) --

    def fail_overdue(self) -> None:
        """Fail the runs that overran their executor's timeout (it is the keeper's turn)."""
        # Run time counts from the start, less the time the process stood still since.
        now_mono = time.monotonic() - self._keeper.stalled
        overdue: list[tuple[ClaimedJob, BoundExecutor, datetime]] = []
        held = self._held
        with held.lock:
            for job_id, (mono_start, started, job, bound) in self._running.items():
                if now_mono - mono_start > bound.spec.timeout and job_id not in self._timed_out:
                    self._timed_out.add(job_id)
                    held.hung += 1
                    overdue.append((job, bound, started))
        for job, bound, started in overdue:
            # The thread cannot be killed; it keeps its pool slot (counted as hung) until
            # the executor returns, and whatever it returns then is ignored.
            error = TimeoutError(
                f"executor {bound.spec.name!r} ran longer than {bound.spec.timeout:g} s"
            )
            self._recorder.conclude(job, bound, started, error)
