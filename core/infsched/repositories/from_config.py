"""Repositories built from ``[[repositories]]`` config and the plugins' backends and entities."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.clock import Clock, SystemClock
from infsched.config import RepositoryConfig, SchedulerConfig
from infsched.database import create_engine
from infsched.dburl import DatabaseUrl
from infsched.errors import ConfigError
from infsched.plugins import PluginRegistry
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import ShardingRepository


@attrs.frozen
class ConfiguredRepository:
    """A repository, the config it came from and the backend that built it."""

    config: RepositoryConfig
    backend: str
    database_url: DatabaseUrl
    repository: ShardingRepository[Any, Any]


def default_backend(url: DatabaseUrl) -> str:
    """``partitioned`` where the database has RANGE partitions, else ``multi_table``."""
    return "partitioned" if url.is_mysql else "multi_table"


def selected(
    configs: Collection[RepositoryConfig], names: Collection[str] | None
) -> list[RepositoryConfig]:
    """The configs named in `names` (all when None); ConfigError for a name not configured."""
    known = [c.name for c in configs]
    for name in names or ():
        if name not in known:
            listed = ", ".join(known) or "none; add [[repositories]] tables to the config"
            raise ConfigError(f"no repository named {name!r} is configured (configured: {listed})")
    return [c for c in configs if names is None or c.name in names]


def build_repositories(
    config: SchedulerConfig,
    plugins: PluginRegistry,
    *,
    names: Collection[str] | None = None,
    clock: Clock | None = None,
    engine_for: Callable[[DatabaseUrl], sa.Engine] = create_engine,
) -> list[ConfiguredRepository]:
    """Build the configured repositories (those in `names`, or all), one engine per database.

    Nothing touches the database until a repository is used.  The caller
    disposes the engines (``repository.engine``) when done.
    """
    clock = clock or SystemClock()
    engines: dict[str, sa.Engine] = {}
    built = []
    for repo in selected(config.repositories, names):
        url = repo.database_url or config.database_url
        key = url.sqlalchemy_url.render_as_string(hide_password=False)
        if key not in engines:
            engines[key] = engine_for(url)
        backend_name = repo.backend or default_backend(url)
        backend = plugins.repository_backend(backend_name)
        options: RepositoryOptions[Any] = RepositoryOptions(
            name=repo.name,
            entity_type=plugins.entity_type(repo.entity),
            engine=engines[key],
            table=repo.table,
            retention_days=repo.retention_days,
            precreate_days=repo.precreate_days,
            clock=clock,
        )
        built.append(ConfiguredRepository(repo, backend_name, url, backend.factory(options)))
    return built
