"""Misfires: what a job does when it is claimed long after it was due.

Only a job's first run can misfire.  A job that comes back after a failure
or from a dead node (attempt > 1) is always run: it was due and started once.
Whatever the outage, a job row is claimed by one node at a time, so under
fire_once_now it runs once, now; under do_nothing it is recorded as
misfired and never runs.
"""

from __future__ import annotations

from infsched.config import MisfirePolicy
from infsched.jobstore.base import ClaimedJob


def is_misfire(job: ClaimedJob, threshold: float) -> bool:
    """Whether `job` was claimed more than `threshold` seconds after it was due to run.

    Judged against the run time, which is the due time unless an operator
    moved it (``jobs retry`` of a dead letter, ``jobs run-now``): a job an
    operator asked to run now is not late.
    """
    if job.attempt > 1:
        return False
    return (job.claimed_at - job.run_at).total_seconds() > threshold


def runs(job: ClaimedJob, policy: MisfirePolicy, threshold: float) -> bool:
    """Whether the job runs now (False: record it as misfired instead)."""
    return policy is MisfirePolicy.FIRE_ONCE_NOW or not is_misfire(job, threshold)
