"""The JobStore protocol and the values that cross it.

The job store knows nothing of entity classes: it keeps the entity's id, due
time and a JSON snapshot.  The engine turns them back into typed entities.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import attrs
import sqlalchemy as sa


def job_key(repository: str, entity_id: object, due_at: datetime) -> str:
    """The job's unique key: one per (repository, entity id, due time).

    Stable across nodes and restarts, so a second fetch of the same entity
    inserts nothing, and executors can pass it downstream as an idempotency key.
    """
    return f"{repository}:{entity_id}:{due_at:%Y%m%dT%H%M%S.%fZ}"


def entity_of_key(key: str) -> str | None:
    """The entity id a job key names, or None if `key` does not look like one.

    The repository name holds no colon and the due-time part none either, so
    whatever lies between the first and the last colon is the entity id.
    """
    first, last = key.find(":"), key.rfind(":")
    if first < 0 or last <= first:
        return None
    return key[first + 1 : last]


def entity_key_prefix(repository: str, entity_id: object) -> str:
    """What every job key of one entity of `repository` starts with."""
    return f"{repository}:{entity_id}:"


class JobState(enum.Enum):
    """States of a row in the hot job table."""

    WAITING = "waiting"
    CLAIMED = "claimed"
    #: Out of attempts (or a permanent error); kept until retried or cancelled.
    DEAD = "dead"


class Outcome(enum.Enum):
    """What became of one run (or non-run) of a job, as history records it."""

    SUCCEEDED = "succeeded"
    #: This attempt failed; the job will be retried.
    FAILED = "failed"
    #: Late beyond misfire_threshold under the do_nothing policy: not run.
    MISFIRED = "misfired"
    #: Failed for good: out of attempts, a permanent error, or a timeout on the last attempt.
    DEAD = "dead"
    CANCELLED = "cancelled"


@attrs.frozen
class NewJob:
    """A job the fetcher adds for one entity."""

    job_key: str
    repository: str
    executor: str
    entity_id: str
    due_at: datetime
    priority: int
    payload: str  # JSON snapshot of the entity


class ClaimedJob(NamedTuple):
    """A job this node claimed and holds a lease on.

    A NamedTuple, not a frozen attrs class like the other values here: one is
    built for every job a node runs, and a tuple builds in a third of the time.
    """

    id: int
    job_key: str
    repository: str
    executor: str
    entity_id: str
    due_at: datetime
    run_at: datetime
    priority: int
    #: This run's attempt number (1 = first run).
    attempt: int
    #: The entity's JSON snapshot, decoded (EntitySpec.from_json reads it).
    snapshot: dict[str, Any]
    #: The database's clock when the claim was made; misfires are judged against it.
    claimed_at: datetime


class Finished(NamedTuple):
    """The end of one claimed run, reported back to the store (a NamedTuple, as ClaimedJob)."""

    job: ClaimedJob
    outcome: Outcome
    started_at: datetime | None
    finished_at: datetime
    error: str | None = None
    #: For Outcome.FAILED: when the retry may run.
    retry_at: datetime | None = None


class JobStore(Protocol):
    """Where jobs wait between the fetcher and the workers."""

    @property
    def engine(self) -> sa.Engine: ...

    def create_schema(self) -> list[str]: ...

    def add_jobs(self, conn: sa.Connection, jobs: Sequence[NewJob]) -> int:
        """Insert jobs, ignoring keys that exist; on `conn`, in the caller's transaction."""
        ...

    def claim_due(
        self, owner: str, limit: int, lease_seconds: float, repositories: Sequence[str]
    ) -> list[ClaimedJob]:
        """Claim up to `limit` due jobs of `repositories`: highest priority, then oldest first."""
        ...

    def finish(
        self,
        owner: str,
        results: Sequence[Finished],
        write_history: Callable[[sa.Connection, Sequence[Finished]], None],
    ) -> int:
        """Record outcomes: delete done jobs, reschedule retries, keep dead letters.

        Returns how many outcomes came too late: their job was gone or claimed again.
        """
        ...

    def release(self, owner: str, job_ids: Sequence[int]) -> int:
        """Give back claimed jobs that were never started."""
        ...

    def renew_leases(self, owner: str, job_ids: Sequence[int], lease_seconds: float) -> int:
        """Extend the leases of the jobs `owner` holds; only those in `job_ids`.

        A node names the jobs it holds in memory: a claim whose commit landed
        but whose answer was lost must not be kept alive by renewals, or its
        jobs would never run anywhere.
        """
        ...
