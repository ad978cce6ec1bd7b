"""ScheduleGate: just before a schedule's claimed runs start, which of them run at all.

A schedule's runs are jobs like any other (`SCHEDULE_REPOSITORY`), claimed by
whichever node is free; each carries its schedule's rules (`RunRules`), so the
node decides alone, and the same way any other node would:

- **Catch-up.** A run claimed later than misfire_threshold after it was due
  (its first attempt) is late.  Under ``do_nothing`` it misfires.  Under
  ``fire_once_now`` it misfires when the schedule's next occurrence is late
  too, so of a row of late runs exactly one, the newest, runs.  Under
  ``fire_all`` it runs.
- **Overlap.** Runs of the schedule claimed in one claim run one after
  another, on one thread.  A run whose schedule has an earlier run in flight
  elsewhere (claimed, or waiting: not yet run or waiting for its retry) does
  what ``overlap`` says: ``allow`` runs beside it; ``skip`` is recorded as
  skipped; ``queue`` waits (still claimed, its lease kept) until the earlier
  one is gone, unless one already waits, and then it is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import attrs

from infsched.jobstore.base import ClaimedJob, JobState, JobStore
from infsched.schedules import SCHEDULE_REPOSITORY, CatchUp, Overlap, RunRules

_IN_FLIGHT = {JobState.CLAIMED.value, JobState.WAITING.value}


@attrs.frozen
class Admission:
    """What becomes of a claim's runs of one schedule."""

    #: Run now, one after another, in this order.
    run: list[ClaimedJob]
    #: Run once the schedule's earlier run elsewhere is gone (``queue``); run after it.
    wait: list[ClaimedJob]
    #: (job, why): late runs the catch-up policy does not run.
    misfired: list[tuple[ClaimedJob, str]]
    #: (job, why): runs the overlap policy does not run.
    skipped: list[tuple[ClaimedJob, str]]


def _utc(value: datetime) -> datetime:
    """A stored time (naive UTC, or aware) as aware UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ScheduleGate:
    """Applies schedules' catch-up and overlap rules to claimed runs (see the module)."""

    def __init__(self, store: JobStore, misfire_threshold: float) -> None:
        self._store = store
        self._threshold = timedelta(seconds=misfire_threshold)

    def admit(self, runs: Sequence[ClaimedJob], now: datetime) -> Admission:
        """Sort the claimed runs of one schedule, all claimed together, by the rules they carry."""
        ordered = sorted(runs, key=lambda job: job.due_at)
        misfired: list[tuple[ClaimedJob, str]] = []
        on_time: list[tuple[ClaimedJob, RunRules]] = []
        for job in ordered:
            rules = RunRules.from_snapshot(job.snapshot)
            why = self._late(job, rules, now)
            if why is None:
                on_time.append((job, rules))
            else:
                misfired.append((job, why))
        if not on_time:
            return Admission([], [], misfired, [])
        first, rules = on_time[0]
        candidates = [job for job, _ in on_time]
        if rules.overlap is Overlap.ALLOW:
            return Admission(candidates, [], misfired, [])
        ahead = self.ahead(first, {job.id for job in candidates})
        if ahead == 0:
            return Admission(candidates, [], misfired, [])
        busy = f"skipped: an earlier run of schedule {first.entity_id!r} is still in flight"
        if rules.overlap is Overlap.QUEUE and ahead == 1:
            # One may wait behind the running one; the rest would be a second in line.
            return Admission([], [first], misfired, [(job, busy) for job in candidates[1:]])
        return Admission([], [], misfired, [(job, busy) for job in candidates])

    def ahead(self, run: ClaimedJob, mine: set[int]) -> int:
        """How many earlier runs of `run`'s schedule are in flight, other than the ids `mine`."""
        due = _utc(run.due_at)
        rows = self._store.entity_job_rows(run.entity_id, SCHEDULE_REPOSITORY)
        return sum(
            1
            for row in rows
            if row["id"] not in mine and row["state"] in _IN_FLIGHT and _utc(row["due_at"]) < due
        )

    def _late(self, job: ClaimedJob, rules: RunRules, now: datetime) -> str | None:
        """Why a late run misfires under its catch-up policy; None when it runs."""
        if job.attempt != 1 or now - job.due_at <= self._threshold:
            return None
        if rules.catch_up is CatchUp.DO_NOTHING:
            return "misfired: not run (catch_up do_nothing)"
        if rules.catch_up is CatchUp.FIRE_ONCE_NOW and (
            rules.next_run_at is not None and now - rules.next_run_at > self._threshold
        ):
            return "misfired: the schedule's next occurrence is late too (catch_up fire_once_now)"
        return None
