"""The SQL job store's management queries: list, show, cancel, retry and run jobs now.

What `infsched jobs …`, `stats` and the repository-name checks read and
change in the job table, moved here from management so that only the store
knows the table.  Every change is one transaction per BATCH rows, guarded by
the job's state in its WHERE clause, so a job a node claims meanwhile is
never changed under it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.clock import require_utc, utc_naive
from infsched.jobstore.base import (
    JobRow,
    JobState,
    JobStateError,
    LiveRow,
    Progress,
    entity_key_prefix,
)
from infsched.jobstore.tables import jobs

#: Rows read or changed per statement, and per transaction, by bulk operations.
BATCH = 1000

_WAITING, _CLAIMED, _DEAD = JobState.WAITING.value, JobState.CLAIMED.value, JobState.DEAD.value


def chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


class SqlJobInspection:
    """The management side of the SQL job store: a base class of SqlJobStore."""

    _engine: sa.Engine
    #: The clock of claims and leases (SqlJobStore.db_now).
    db_now: Callable[[sa.Connection], datetime]

    def list_jobs(
        self,
        *,
        state: str | None = None,
        repository: str | None = None,
        due_before: datetime | None = None,
        limit: int = 100,
    ) -> list[JobRow]:
        query = sa.select(*(jobs.c[f.name] for f in attrs.fields(JobRow)))
        if state is not None:
            query = query.where(jobs.c.state == state)
        if repository is not None:
            query = query.where(jobs.c.repository == repository)
        if due_before is not None:
            query = query.where(jobs.c.due_at < utc_naive(require_utc(due_before, "due_before")))
        query = query.order_by(jobs.c.due_at, jobs.c.id).limit(limit)
        with self._engine.connect() as conn:
            return [JobRow.from_row(r) for r in conn.execute(query).mappings()]

    def job_row(self, key: str) -> LiveRow | None:
        with self._engine.connect() as conn:
            return conn.execute(sa.select(jobs).where(jobs.c.job_key == key)).mappings().first()

    def entity_job_rows(self, entity_id: str, repository: str | None = None) -> list[LiveRow]:
        query = sa.select(jobs).where(jobs.c.entity_id == entity_id)
        if repository is not None:
            # A range of the unique job_key index; without a repository the (bounded)
            # hot table is scanned.
            prefix = entity_key_prefix(repository, entity_id)
            query = query.where(
                jobs.c.repository == repository, jobs.c.job_key.startswith(prefix, autoescape=True)
            )
        with self._engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def keys_of(self, ref: str, repository: str) -> list[str]:
        prefix = entity_key_prefix(repository, ref)
        with self._engine.connect() as conn:
            return sorted(
                conn.execute(
                    sa.select(jobs.c.job_key).where(
                        jobs.c.repository == repository,
                        sa.or_(
                            jobs.c.job_key == ref,
                            jobs.c.job_key.startswith(prefix, autoescape=True),
                        ),
                    )
                ).scalars()
            )

    @staticmethod
    def _rows(conn: sa.Connection, keys: Sequence[str]) -> list[LiveRow]:
        rows: list[LiveRow] = []
        for chunk in chunks(list(dict.fromkeys(keys)), BATCH):
            rows.extend(
                conn.execute(
                    sa.select(jobs).where(jobs.c.job_key.in_(list(chunk))).with_for_update()
                ).mappings()
            )
        return rows

    def job_rows_of(self, keys: Sequence[str]) -> list[LiveRow]:
        with self._engine.connect() as conn:
            return self._rows(conn, keys)

    def cancel_jobs(
        self,
        keys: Sequence[str],
        check: Callable[[Sequence[LiveRow]], None],
        write_history: Callable[[sa.Connection, Sequence[LiveRow]], None],
    ) -> int:
        with self._engine.begin() as conn:
            rows = self._rows(conn, keys)
            check(rows)
            write_history(conn, rows)
            deleted = 0
            for chunk in chunks([r["id"] for r in rows], BATCH):
                deleted += conn.execute(
                    jobs.delete().where(jobs.c.id.in_(list(chunk)), jobs.c.state != _CLAIMED)
                ).rowcount
            if deleted != len(rows):  # a node claimed one meanwhile (SQLite takes no row locks)
                raise JobStateError("a job was claimed while being cancelled; nothing changed")
        return deleted

    def dead_job_ids(self, repository: str | None = None) -> list[int]:
        query = sa.select(jobs.c.id).where(jobs.c.state == _DEAD).order_by(jobs.c.id)
        if repository is not None:
            query = query.where(jobs.c.repository == repository)
        with self._engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def retry_dead(self, job_ids: Sequence[int], progress: Progress | None = None) -> int:
        return self._update(
            job_ids,
            _DEAD,
            {"state": _WAITING, "attempt": 0, "owner": None, "lease_until": None},
            progress,
        )

    def run_now(self, job_ids: Sequence[int]) -> int:
        return self._update(job_ids, _WAITING, {}, None)

    def _update(
        self, ids: Sequence[int], state: str, values: dict[str, Any], progress: Progress | None
    ) -> int:
        """Set run_at to now (and `values`) on the rows `ids` still in `state`, in batches."""
        done = 0
        if progress is not None:
            progress(0, len(ids))
        for chunk in chunks(ids, BATCH):
            with self._engine.begin() as conn:
                now = utc_naive(self.db_now(conn))
                done += conn.execute(
                    jobs.update()
                    .where(jobs.c.id.in_(list(chunk)), jobs.c.state == state)
                    .values(run_at=now, **values)
                ).rowcount
            if progress is not None:
                progress(min(done, len(ids)), len(ids))
        return done

    @staticmethod
    def knows_repository(conn: sa.Connection, name: str) -> bool:
        # Every job key starts with "REPOSITORY:": a range of the unique job_key index.
        job = conn.execute(
            sa.select(jobs.c.id)
            .where(jobs.c.job_key.startswith(f"{name}:", autoescape=True))
            .limit(1)
        ).first()
        return job is not None

    @staticmethod
    def repository_names(conn: sa.Connection) -> set[str]:
        return set(conn.execute(sa.select(jobs.c.repository).distinct()).scalars())
