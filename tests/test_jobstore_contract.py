"""The built-in SQL job store passes the job store contract, on MariaDB, PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from infsched.database import database_of
from infsched.dburl import DatabaseUrl
from infsched.jobstore.base import JobStore
from infsched.plugins import open_job_store
from infsched.testing.jobstore import JobStoreContract


class TestSqlJobStore(JobStoreContract):
    @pytest.fixture
    def store(
        self, every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
    ) -> JobStore:
        # Built as a node builds it: the built-in `sql`, through the hook.
        return open_job_store(None, "sql", database_of(engine_for(every_url)))
