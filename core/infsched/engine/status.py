"""JobStatus: what became of an entity's job, for `jobs show` and the Python API."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from infsched.engine.history import History, JobOutcome
from infsched.jobstore.base import JobStore


@attrs.frozen
class JobStatus:
    """The live job row, if the job is waiting, running or dead, and its recorded outcomes."""

    repository: str
    entity_id: str
    live: Mapping[str, Any] | None
    outcomes: tuple[JobOutcome, ...]
    #: The entity's due time while it has no job yet (found in its repository, unmarked).
    pending_due: datetime | None = None

    @property
    def state(self) -> str:
        """The live row's state, else ``pending`` (no job yet), else the last outcome's."""
        if self.live is not None:
            return str(self.live["state"])
        if self.pending_due is not None:
            return "pending"
        return self.outcomes[-1].state.value if self.outcomes else "unknown"


def job_status(
    store: JobStore,
    history: History,
    entity_id: object,
    repository: str | None = None,
    *,
    now: datetime,
) -> list[JobStatus]:
    """Statuses of an entity's jobs, one per repository it appears in (or just `repository`)."""
    key = str(entity_id)
    live = {row["repository"]: dict(row) for row in store.entity_job_rows(key, repository)}
    outcomes: dict[str, list[JobOutcome]] = {}
    horizon = history.repository.retention_horizon()
    for outcome in history.repository.find_all_by_column(
        "entity_id", key, horizon, now + (now - horizon)
    ):
        if repository is None or outcome.repository == repository:
            outcomes.setdefault(outcome.repository, []).append(outcome)
    names = sorted(set(live) | set(outcomes))
    return [
        JobStatus(
            name,
            key,
            live.get(name),
            tuple(sorted(outcomes.get(name, []), key=lambda o: (o.finished_at, o.id or 0))),
        )
        for name in names
    ]
