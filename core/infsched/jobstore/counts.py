"""Counts of the job table per repository and state, or per lane: one grouped query each.

The metrics gauges, `stats` and the dashboard all read the hot table this
way; it holds only the jobs of the lookahead window, retries and dead
letters, so the scan stays small however large the repositories are.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

import sqlalchemy as sa

from infsched.flow_limits import Lane, LimitScope, LimitTarget
from infsched.jobstore.base import JobState, LaneCount, StateCount
from infsched.jobstore.tables import SCOPE_COLUMNS, jobs


def job_counts(
    conn: sa.Connection,
    now: datetime,
    *,
    horizon: datetime | None = None,
    owner: str | None = None,
    repositories: Sequence[str] | None = None,
) -> list[StateCount]:
    """Counts per (repository, state); times are naive UTC, as the table holds them."""

    def count_where(condition: sa.ColumnElement[bool] | None) -> sa.ColumnElement[int]:
        if condition is None:
            return sa.literal(0)
        return sa.func.sum(sa.case((condition, 1), else_=0))

    query = sa.select(
        jobs.c.repository,
        jobs.c.state,
        sa.func.count(),
        count_where(jobs.c.run_at <= now),
        count_where(jobs.c.run_at <= horizon) if horizon is not None else sa.func.count(),
        count_where(jobs.c.owner == owner if owner is not None else None),
    ).group_by(jobs.c.repository, jobs.c.state)
    if repositories is not None:
        query = query.where(jobs.c.repository.in_(list(repositories)))
    return [
        StateCount(r, s, int(total), int(due or 0), int(before or 0), int(mine or 0))
        for r, s, total, due, before, mine in conn.execute(query).all()
    ]


def lane_counts(
    conn: sa.Connection, now: datetime, *, targets: Collection[str] | None = None
) -> list[LaneCount]:
    """Due waiting jobs per lane, with the oldest run time; with `targets`, only lanes
    under one of them (none at all for an empty collection)."""
    query = (
        sa.select(
            jobs.c.repository,
            jobs.c.executor,
            jobs.c.flow_key,
            sa.func.count(),
            sa.func.min(jobs.c.run_at),
        )
        .where(jobs.c.state == JobState.WAITING.value, jobs.c.run_at <= now)
        .group_by(jobs.c.repository, jobs.c.executor, jobs.c.flow_key)
    )
    if targets is not None:
        names: dict[LimitScope, set[str]] = {scope: set() for scope in LimitScope}
        for target in targets:
            parsed = LimitTarget.parse(target)
            names[parsed.scope].add(parsed.name)
        under = [SCOPE_COLUMNS[s].in_(sorted(n)) for s, n in names.items() if n]
        if not under:
            return []
        query = query.where(sa.or_(*under))
    return [
        LaneCount(Lane(repository, executor, flow_key or ""), int(due), oldest)
        for repository, executor, flow_key, due, oldest in conn.execute(query).all()
    ]
