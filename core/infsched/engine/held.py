"""HeldJobs: the jobs this node holds, counted under the one lock its executing side shares.

A job is held from its claim until its outcome is written or it is given back:
queued, running, or waiting to be recorded.  The claimer, the pool threads, the
recorder and the lease keeper all count under `lock`, so a job is never counted
twice or lost between two of them, and the claimer waits on `capacity` for room.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import attrs
import sqlalchemy as sa

from infsched.jobstore.base import ClaimedJob, JobStore

log = logging.getLogger("infsched.workers")


@attrs.frozen
class Claim:
    """One claim's monotonic times: when it was sent, and when its jobs joined the held set."""

    sent: float
    held_at: float


class HeldJobs:
    """The ids of the jobs this node holds, and how many of them are not started or hung."""

    def __init__(self, store: JobStore, node_id: str, *, claim_ahead: int) -> None:
        self._store = store
        self._node_id = node_id
        self.lock = threading.Lock()
        #: Notified when there may be room to claim again.
        self.capacity = threading.Condition(self.lock)
        #: Ids of the jobs this node holds: their count bounds memory, and their
        #: leases are the ones renewed.
        self.ids: set[int] = set()
        #: Claimed jobs not started yet: queued, or later in a running chunk.
        self.to_start = 0
        #: Claimed jobs waiting for their start slots under a rate (not in to_start).
        self.pacing = 0
        #: Jobs failed for their timeout whose thread has not returned yet.
        self.hung = 0
        #: Jobs started here in all (the claimer measures the start rate by it).
        self.starts = 0
        #: Claimed jobs not yet started, at most; the claimer sets it (see claimer.py).
        self.claim_ahead = claim_ahead

    @property
    def outstanding(self) -> int:
        with self.lock:
            return len(self.ids)

    def hold(self, claimed: Sequence[ClaimedJob], sent: float) -> Claim:
        """Jobs claimed by a claim sent at monotonic time `sent` are this node's now."""
        with self.lock:
            self.ids.update(job.id for job in claimed)
            self.to_start += len(claimed)
            return Claim(sent, time.monotonic())

    def pace(self, count: int) -> None:
        """`count` claimed jobs wait for their start slots (the pacer), not for a thread.

        They leave `to_start`: claim_ahead bounds what waits for this node's
        threads, and a rate-limited lane's slots up to a second ahead must not
        keep the other lanes from being claimed (their rate bounds them).
        """
        with self.capacity:
            self.to_start -= count
            self.pacing += count
            self.capacity.notify_all()

    def unpace(self, count: int) -> None:
        """`count` jobs the pacer held come to start (or are given back)."""
        with self.lock:
            self.to_start += count
            self.pacing -= count

    def snapshot(self) -> tuple[list[int], float]:
        """The ids held now, and the monotonic time they were read."""
        with self.lock:
            return list(self.ids), time.monotonic()

    def count_started(self, count: int) -> None:
        """`count` claimed jobs started (or will never start here); call with the lock held.

        Wakes the claimer when half of claim_ahead is left to start.
        """
        before = self.to_start
        self.to_start -= count
        if 2 * self.to_start <= self.claim_ahead < 2 * before:
            self.capacity.notify_all()

    def settle(self, job_ids: Sequence[int]) -> None:
        """These jobs are no longer this node's: recorded, released, or given up."""
        with self.capacity:
            self.ids.difference_update(job_ids)
            self.capacity.notify_all()

    def release(self, jobs: Sequence[ClaimedJob]) -> None:
        """Give back claimed jobs that will not start here (back to waiting in the store)."""
        if not jobs:
            return
        try:
            self._store.release(self._node_id, [j.id for j in jobs])
        except sa.exc.DBAPIError as exc:
            log.warning(
                "could not release %d unstarted jobs (their leases will expire): %s",
                len(jobs),
                exc,
            )
        with self.lock:
            self.count_started(len(jobs))
        self.settle([job.id for job in jobs])
