"""The built-in SQL job store passes the job store contract, on MariaDB, PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa

from infsched.database import database_of
from infsched.dburl import DatabaseUrl
from infsched.flow_limits import FlowLimit, Limit, LimitScope, LimitTarget
from infsched.jobstore.base import FlowRules, JobStore
from infsched.limit_store import LimitStore
from infsched.plugins import open_job_store
from infsched.testing.jobstore import LONG_LEASE, JobStoreContract, new_job


class TestSqlJobStore(JobStoreContract):
    @pytest.fixture
    def store(
        self, every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
    ) -> JobStore:
        # Built as a node builds it: the built-in `sql`, through the hook.
        return open_job_store(None, "sql", database_of(engine_for(every_url)))

    def test_a_claim_of_limited_lanes_only_locks_their_rows_once(self, jobs: JobStore) -> None:
        """One lane with jobs of three priorities, under a rate that never binds: one
        transaction, one read and one write of the limit's row, for the whole claim.

        The limited lanes' share was counted once per lane against the lanes of
        every priority: a third of the claim, then a second transaction for the rest.
        """
        limits = LimitStore(database_of(jobs.engine))
        limits.set(Limit(LimitTarget(LimitScope.EXECUTOR, "x"), FlowLimit(rate=1e7, burst=1000)))
        with jobs.engine.connect() as conn:
            now = jobs.db_now(conn)
        self.add(
            jobs, [new_job("r", i, now - timedelta(seconds=60), priority=i % 3) for i in range(30)]
        )
        rules = FlowRules(limited=limits.targets(fresh=True), horizon=1.0)
        on_limits: list[str] = []

        def count_locks(conn: object, cursor: object, statement: str, *_: object) -> None:
            if "infsched_limits" in statement:
                on_limits.append(statement.split()[0].upper())

        sa.event.listen(jobs.engine, "before_cursor_execute", count_locks)
        try:
            claimed = jobs.claim_due("n1", 30, LONG_LEASE, ["r"], rules)
        finally:
            sa.event.remove(jobs.engine, "before_cursor_execute", count_locks)
        assert len(claimed) == 30
        assert [j.priority for j in claimed] == [2] * 10 + [1] * 10 + [0] * 10
        # Its row read (locked, but on SQLite) and written back once.
        assert on_limits == ["SELECT", "UPDATE"]
