"""JobStoreBackend: how a plugin offers a place for jobs to wait."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from infsched.database import Database
from infsched.names import check_name

JobStoreFactory = Callable[[Database], Any]


@attrs.frozen
class JobStoreBackend:
    """A named job store, registered through `register_job_stores`.

    The factory receives the configured database's handle (engine, dialect,
    clock) and returns the job store (see `infsched.jobstore.base.JobStore`).
    """

    name: str = attrs.field(validator=lambda _, __, v: check_name(v, "job store name"))
    factory: JobStoreFactory
    description: str = ""
