"""The built-in repository backends, registered like any plugin's."""

from __future__ import annotations

from collections.abc import Iterable

from infsched.markers import hookimpl
from infsched.repositories.backend import RepositoryBackend
from infsched.repositories.multi_table import MultiTableRepository
from infsched.repositories.partitioned import PartitionedRepository


@hookimpl
def register_repository_backends() -> Iterable[RepositoryBackend]:
    return [
        RepositoryBackend(
            MultiTableRepository.backend,
            MultiTableRepository,
            "one table per UTC day, {prefix}_{YYYYMMDD}; MySQL/MariaDB and SQLite",
        ),
        RepositoryBackend(
            PartitionedRepository.backend,
            PartitionedRepository,
            "one table, one RANGE partition per UTC day and a catch-all; MySQL/MariaDB, PostgreSQL",
        ),
    ]
