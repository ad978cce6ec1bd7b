"""Infinite Scheduler: a persistent, clustered, high-volume job scheduler.

The names below are the public API, for plugin authors and for applications
that embed the scheduler; docs/api.md describes each.  They are imported on
first use, so ``import infsched`` does not load SQLAlchemy, the engine or the
plugins until something needs them.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("infinite-scheduler")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:  # what mypy sees; at run time `__getattr__` imports the same names
    from infsched.config import RepositoryConfig as RepositoryConfig
    from infsched.config import SchedulerConfig as SchedulerConfig
    from infsched.config import read_config as read_config
    from infsched.engine.binding import RepositoryBinding as RepositoryBinding
    from infsched.engine.scheduler import InfiniteScheduler as InfiniteScheduler
    from infsched.entities import column as column
    from infsched.entities import id_field as id_field
    from infsched.entities import sharding_key as sharding_key
    from infsched.errors import ConfigError as ConfigError
    from infsched.errors import DatabaseUnreachableError as DatabaseUnreachableError
    from infsched.errors import EntityError as EntityError
    from infsched.errors import InfschedError as InfschedError
    from infsched.errors import PluginError as PluginError
    from infsched.executors import BatchExecutor as BatchExecutor
    from infsched.executors import Executor as Executor
    from infsched.executors import ExecutorSpec as ExecutorSpec
    from infsched.executors import JobContext as JobContext
    from infsched.executors import PermanentError as PermanentError
    from infsched.hookspecs import hookimpl as hookimpl
    from infsched.jobstore.backend import JobStoreBackend as JobStoreBackend
    from infsched.metrics.sink import MetricsSink as MetricsSink
    from infsched.metrics.sink import MetricsSinkSpec as MetricsSinkSpec
    from infsched.plugins import PluginRegistry as PluginRegistry
    from infsched.plugins import load_plugins as load_plugins
    from infsched.repositories.backend import RepositoryBackend as RepositoryBackend
    from infsched.repositories.backend import RepositoryOptions as RepositoryOptions
    from infsched.repositories.base import ShardingRepository as ShardingRepository
    from infsched.repositories.from_config import (
        ConfiguredRepositories as ConfiguredRepositories,
    )
    from infsched.repositories.from_config import open_repositories as open_repositories

#: Each public name and the module it lives in.
_PUBLIC: dict[str, str] = {
    # writing a plugin
    "hookimpl": "infsched.hookspecs",
    "id_field": "infsched.entities",
    "sharding_key": "infsched.entities",
    "column": "infsched.entities",
    "ExecutorSpec": "infsched.executors",
    "JobContext": "infsched.executors",
    "Executor": "infsched.executors",
    "BatchExecutor": "infsched.executors",
    "PermanentError": "infsched.executors",
    "RepositoryBackend": "infsched.repositories.backend",
    "RepositoryOptions": "infsched.repositories.backend",
    "MetricsSinkSpec": "infsched.metrics.sink",
    "MetricsSink": "infsched.metrics.sink",
    "JobStoreBackend": "infsched.jobstore.backend",
    # embedding: configuration, repositories, a scheduler node
    "read_config": "infsched.config",
    "SchedulerConfig": "infsched.config",
    "RepositoryConfig": "infsched.config",
    "open_repositories": "infsched.repositories.from_config",
    "ConfiguredRepositories": "infsched.repositories.from_config",
    "ShardingRepository": "infsched.repositories.base",
    "load_plugins": "infsched.plugins",
    "PluginRegistry": "infsched.plugins",
    "InfiniteScheduler": "infsched.engine.scheduler",
    "RepositoryBinding": "infsched.engine.binding",
    # errors
    "InfschedError": "infsched.errors",
    "ConfigError": "infsched.errors",
    "PluginError": "infsched.errors",
    "DatabaseUnreachableError": "infsched.errors",
    "EntityError": "infsched.errors",
}

__all__ = ["__version__", *_PUBLIC]

if not TYPE_CHECKING:  # hidden from mypy, so a misspelt name is still an error there

    def __getattr__(name: str) -> Any:
        module = _PUBLIC.get(name)
        if module is None:
            raise AttributeError(f"module 'infsched' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later look-ups skip this function
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
