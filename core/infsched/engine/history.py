"""History: every outcome of every job, sharded by day with retention.

The hot job table forgets a job once it is done; history keeps what became
of it (state, attempts, due, started and finished times, node, last error)
for the retention period, queryable by entity id.  It is itself a sharding
repository: partitioned on MySQL/MariaDB, one table per day on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import attrs
import sqlalchemy as sa

from infsched.entities import column, id_field, sharding_key
from infsched.jobstore.base import Finished, Outcome
from infsched.repositories.base import ShardingRepository

HISTORY_REPOSITORY = "infsched_history"


@attrs.define(kw_only=True)
class JobOutcome:
    """One recorded outcome of one job run (or non-run)."""

    id: int | None = id_field()
    finished_at: datetime = sharding_key()
    job_key: str = column(length=255, index=True)
    repository: str = column(length=48)
    entity_id: str = column(length=191, index=True)
    executor: str = column(length=48)
    state: Outcome = column()
    attempt: int = column()
    due_at: datetime = column()
    started_at: datetime | None = column(default=None)
    node: str = column(length=128)
    error: str | None = column(default=None)


class History:
    """Writes outcomes in the job store's transaction and answers `jobs show`."""

    def __init__(self, repository: ShardingRepository[JobOutcome, int], node: str) -> None:
        self.repository = repository
        self.node = node

    def outcomes(self, results: Sequence[Finished]) -> list[JobOutcome]:
        return [
            JobOutcome(
                finished_at=r.finished_at,
                job_key=r.job.job_key,
                repository=r.job.repository,
                entity_id=r.job.entity_id,
                executor=r.job.executor,
                state=r.outcome,
                attempt=r.job.attempt,
                due_at=r.job.due_at,
                started_at=r.started_at,
                node=self.node,
                error=_short(r.error),
            )
            for r in results
        ]

    def write(self, conn: sa.Connection, results: Sequence[Finished]) -> None:
        """Insert the outcomes on `conn`, inside the caller's transaction."""
        self.repository.insert_many(self.outcomes(results), conn=conn)


def _short(error: str | None) -> str | None:
    if error is None:
        return None
    return error if len(error) <= 4000 else error[:3999] + "…"
