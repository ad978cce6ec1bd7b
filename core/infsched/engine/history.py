"""History: every outcome of every job, sharded by day with retention.

The hot job table forgets a job once it is done; history keeps what became
of it (state, attempts, due, started and finished times, node, last error)
for the retention period, queryable by entity id.  It is itself a sharding
repository: partitioned on MySQL/MariaDB and PostgreSQL, one table per day on SQLite.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.database import Database
from infsched.entities import column, entity_spec, id_field, sharding_key
from infsched.jobstore.base import Finished, Outcome
from infsched.repositories.base import ShardingRepository

HISTORY_REPOSITORY = "infsched_history"


@attrs.define(kw_only=True)
class JobOutcome:
    """One recorded outcome of one job run (or non-run)."""

    id: int | None = id_field()
    finished_at: datetime = sharding_key()
    # Not indexed: `jobs show KEY` finds outcomes by the entity id inside the key.
    job_key: str = column(length=255)
    # `jobs history --repo` and `--state` read these indexes newest first, a page at a
    # time; executor and node filters ride the time index (each index costs every insert).
    repository: str = column(length=48, index_by_key=True)
    entity_id: str = column(length=191, index=True)
    executor: str = column(length=48)
    state: Outcome = column(index_by_key=True)
    attempt: int = column()
    due_at: datetime = column()
    started_at: datetime | None = column(default=None)
    node: str = column(length=128)
    error: str | None = column(default=None)


class History:
    """Writes outcomes in the job store's transaction and answers `jobs show`."""

    def __init__(
        self, repository: ShardingRepository[JobOutcome, int], node: str, database: Database
    ) -> None:
        """`database` holds the job rows (and `repository`'s tables)."""
        self.repository = repository
        self.node = node
        self._dialect = database.dialect

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

    def record(self, conn: sa.Connection, outcomes: Sequence[JobOutcome]) -> None:
        """Insert outcomes of runs that never had a job (a schedule's missed occurrences)."""
        self.repository.insert_many(list(outcomes), conn=conn)

    def write(
        self, conn: sa.Connection, results: Sequence[Finished], job_rows: sa.FromClause | None
    ) -> None:
        """Insert the outcomes on `conn`, inside the caller's transaction.

        `job_rows` is the job store's rows in this database (`JobStore.job_rows`),
        still there at this point, so each outcome row is built in the
        database from its job row joined with one JSON document of what only
        this node knows (times, state, error): one bound value per batch
        instead of a dozen per outcome.  An outcome whose job row is gone
        (another node finished it after this node's lease ran out), and every
        outcome of a store with no rows here (`job_rows` None), is written from
        Python instead.
        """
        if job_rows is None:
            self.repository.insert_many(self.outcomes(results), conn=conn)
            return
        by_day: dict[date, list[Finished]] = defaultdict(list)
        for result in results:
            by_day[result.finished_at.astimezone(UTC).date()].append(result)
        for day, group in sorted(by_day.items()):
            written = self.repository.insert_from_select(conn, day, self._rows(group, job_rows))
            if written < len(group):
                self._write_orphans(conn, group, job_rows)

    def _rows(self, group: Sequence[Finished], job_rows: sa.FromClause) -> sa.Select[Any]:
        ids = self.repository.new_ids(len(group))
        document = json.dumps(
            [
                [
                    r.job.id,
                    hid,
                    _micros(r.finished_at),
                    _micros(r.started_at),
                    r.outcome.value,
                    r.job.attempt,
                    _short(r.error),
                ]
                for r, hid in zip(group, ids, strict=True)
            ],
            separators=(",", ":"),
        )
        dialect = self._dialect
        v = dialect.json_rows(document, _DOCUMENT_COLUMNS)
        produced = {
            "id": v.c.hid,
            "finished_at": dialect.datetime_from_micros(v.c.finished),
            "job_key": job_rows.c.job_key,
            "repository": job_rows.c.repository,
            "entity_id": job_rows.c.entity_id,
            "executor": job_rows.c.executor,
            "state": v.c.state,
            "attempt": v.c.attempt,
            "due_at": job_rows.c.due_at,
            "started_at": dialect.datetime_from_micros(v.c.started),
            "node": sa.literal(self.node),
            "error": v.c.error,
        }
        columns = [produced[c.name] for c in entity_spec(JobOutcome).columns]
        return sa.select(*columns).select_from(job_rows.join(v, v.c.jid == job_rows.c.id))

    def _write_orphans(
        self, conn: sa.Connection, group: Sequence[Finished], job_rows: sa.FromClause
    ) -> None:
        present = set(
            conn.execute(
                sa.select(job_rows.c.id).where(job_rows.c.id.in_([r.job.id for r in group]))
            ).scalars()
        )
        orphans = [r for r in group if r.job.id not in present]
        if orphans:
            self.repository.insert_many(self.outcomes(orphans), conn=conn)


_DOCUMENT_COLUMNS: tuple[tuple[str, sa.types.TypeEngine[Any]], ...] = (
    ("jid", sa.BigInteger()),
    ("hid", sa.BigInteger()),
    # Microseconds since 1970 (UTC): an integer formats and escapes in a fraction
    # of the time of a datetime's text, and the database turns it back exactly.
    ("finished", sa.BigInteger()),
    ("started", sa.BigInteger()),
    ("state", sa.String(16)),
    ("attempt", sa.Integer()),
    ("error", sa.Text()),
)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(value: datetime | None) -> int | None:
    """Microseconds since 1970-01-01 UTC (an aware datetime), exactly."""
    return None if value is None else (value - _EPOCH) // _MICROSECOND


def _short(error: str | None) -> str | None:
    if error is None:
        return None
    return error if len(error) <= 4000 else error[:3999] + "…"
