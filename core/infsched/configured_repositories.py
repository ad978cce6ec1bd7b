"""Repositories built from ``[[repositories]]`` config and the plugins' backends and entities.

`open_repositories` is the public way in (``infsched.open_repositories``):

    with open_repositories(read_config()) as repositories:
        repositories["handoffs"].insert(SpoolEntity(due_at=due, topic="invoices"))
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import attrs

from infsched.clock import Clock, SystemClock
from infsched.config import RepositoryConfig, SchedulerConfig, read_config
from infsched.database import Database, check_reachable, open_database
from infsched.dburl import DatabaseUrl
from infsched.errors import ConfigError
from infsched.plugins import PluginRegistry, load_plugins
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import ShardingRepository

E = TypeVar("E")


@attrs.frozen
class ConfiguredRepository:
    """A repository, the config it came from and the backend that built it."""

    config: RepositoryConfig
    backend: str
    database_url: DatabaseUrl
    repository: ShardingRepository[Any, Any]


def _not_configured(name: str, known: Collection[str]) -> ConfigError:
    listed = ", ".join(known) or "none; add [[repositories]] tables to the config"
    return ConfigError(f"no repository named {name!r} is configured (configured: {listed})")


def selected(
    configs: Collection[RepositoryConfig], names: Collection[str] | None
) -> list[RepositoryConfig]:
    """The configs named in `names` (all when None); ConfigError for a name not configured."""
    known = [c.name for c in configs]
    for name in names or ():
        if name not in known:
            raise _not_configured(name, known)
    return [c for c in configs if names is None or c.name in names]


def build_repositories(
    config: SchedulerConfig,
    plugins: PluginRegistry,
    *,
    names: Collection[str] | None = None,
    clock: Clock | None = None,
    database_for: Callable[[DatabaseUrl], Database] = open_database,
) -> list[ConfiguredRepository]:
    """Build the configured repositories (those in `names`, or all), one engine per database.

    A repository without a ``backend`` gets its database's default
    (`Dialect.default_repository_backend`).  Nothing touches the database
    until a repository is used.  The caller disposes the engines
    (``repository.engine``) when done.
    """
    clock = clock or SystemClock()
    databases: dict[str, Database] = {}
    built = []
    for repo in selected(config.repositories, names):
        url = repo.database_url or config.database_url
        key = url.sqlalchemy_url.render_as_string(hide_password=False)
        if key not in databases:
            databases[key] = database_for(url)
        database = databases[key]
        backend_name = repo.backend or database.dialect.default_repository_backend
        backend = plugins.repository_backend(backend_name)
        options: RepositoryOptions[Any] = RepositoryOptions(
            name=repo.name,
            entity_type=plugins.entity_type(repo.entity),
            engine=database.engine,
            database=database,
            table=repo.table,
            retention_days=repo.retention_days,
            precreate_days=repo.precreate_days,
            clock=clock,
        )
        built.append(ConfiguredRepository(repo, backend_name, url, backend.factory(options)))
    return built


class ConfiguredRepositories(AbstractContextManager["ConfiguredRepositories"]):
    """The repositories a config names, built and ready to use; closing disposes their engines.

    ``repositories[name]`` is one repository; iterating gives each
    `ConfiguredRepository` (config, backend, database), in config order, which
    is what `InfiniteScheduler` takes to serve them.
    """

    def __init__(self, configured: Sequence[ConfiguredRepository], plugins: PluginRegistry) -> None:
        self.configured = tuple(configured)
        #: The plugins the repositories' entity types and backends came from.
        self.plugins = plugins
        self._by_name = {c.config.name: c for c in self.configured}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def _find(self, name: str) -> ConfiguredRepository:
        found = self._by_name.get(name)
        if found is None:
            raise _not_configured(name, self.names)
        return found

    def __getitem__(self, name: str) -> ShardingRepository[Any, Any]:
        """The repository named `name`; ConfigError naming the configured ones if there is none."""
        return self._find(name).repository

    def repository(self, name: str, entity_type: type[E]) -> ShardingRepository[E, Any]:
        """The repository named `name`, typed: ConfigError unless it holds `entity_type`.

        Checking the class at run time is what makes the static type true: a
        config that binds the name to another entity fails here, not at insert.
        """
        found = self._find(name)
        actual: type = found.repository.entity_type
        if actual is not entity_type:
            raise ConfigError(
                f"repository {name!r} holds {actual.__name__} entities "
                f"(entity = {found.config.entity!r} in its config), not {entity_type.__name__}"
            )
        typed: ShardingRepository[E, Any] = found.repository
        return typed

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[ConfiguredRepository]:
        return iter(self.configured)

    def __len__(self) -> int:
        return len(self.configured)

    def one_per_engine(self) -> list[ConfiguredRepository]:
        """One repository of each engine (each database they live in)."""
        return list({id(c.repository.engine): c for c in self.configured}.values())

    def close(self) -> None:
        """Close the engines' pooled connections (a repository used after opens new ones)."""
        for item in self.one_per_engine():
            item.repository.engine.dispose()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_repositories(
    config: SchedulerConfig | None = None,
    *,
    plugins: PluginRegistry | None = None,
    names: Collection[str] | None = None,
    clock: Clock | None = None,
    existing: bool = False,
) -> ConfiguredRepositories:
    """Build the configured repositories (those in `names`, or all) and check their databases.

    `existing`: the databases must be there already (a reader's call: connecting
    creates nothing, where SQLite would create a missing file).

    `config` None reads it as the ``infsched`` commands do (`read_config()`).
    `plugins` None loads the installed plugins and, like ``infsched partitions``,
    refuses with PluginError when one failed to load or two conflict.  Raises
    DatabaseUnreachableError naming a database that does not answer.  Tables
    are not created here: ``infsched partitions maintain`` (or
    ``repository.maintain()``, or a running scheduler) creates them.
    """
    config = read_config() if config is None else config
    if plugins is None:
        plugins = load_plugins()
        plugins.require_healthy()
    opened = ConfiguredRepositories(
        build_repositories(config, plugins, names=names, clock=clock), plugins
    )
    try:
        for item in opened.one_per_engine():
            check_reachable(item.repository.engine, item.database_url, existing=existing)
    except BaseException:
        opened.close()
        raise
    return opened
