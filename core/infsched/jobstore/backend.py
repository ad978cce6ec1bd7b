"""JobStoreBackend: how a plugin offers a place for jobs to wait."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from infsched.database import Database
from infsched.jobstore.base import JobStore
from infsched.names import check_name

#: Builds a store from the configured database's handle: its engine, dialect and
#: the node's clock (corrected to the database's, where the database has one).
JobStoreFactory = Callable[[Database], JobStore]


@attrs.frozen
class JobStoreBackend:
    """A named job store, registered through `register_job_stores`.

    The factory receives the configured database's handle (engine, dialect,
    clock) and returns the job store (see `infsched.jobstore.base.JobStore`);
    ``job_store = "NAME"`` in the configuration selects one.
    """

    name: str = attrs.field(validator=lambda _, __, v: check_name(v, "job store name"))
    factory: JobStoreFactory
    description: str = ""
