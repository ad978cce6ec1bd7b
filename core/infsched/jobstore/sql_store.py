"""The built-in job store ``sql``, registered like any plugin's (`register_job_stores`)."""

from __future__ import annotations

from collections.abc import Iterable

from infsched.jobstore.backend import JobStoreBackend
from infsched.jobstore.sql import SqlJobStore
from infsched.markers import hookimpl

#: The name `job_store` selects it by; the configuration's default.
SQL_STORE = "sql"


@hookimpl
def register_job_stores() -> Iterable[JobStoreBackend]:
    return [
        JobStoreBackend(
            SQL_STORE,
            SqlJobStore,
            "the infsched_jobs table in the configured database; MySQL/MariaDB and SQLite",
        )
    ]
