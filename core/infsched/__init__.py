"""Infinite Scheduler: a persistent, clustered, high-volume job scheduler.

The names below are the public API, for plugin authors and for applications
that embed the scheduler; docs/api.md describes each.  They are imported on
first use, so ``import infsched`` does not load SQLAlchemy, the engine or the
plugins until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what mypy sees; at run time `__getattr__` imports the same names
    from infsched.config import RepositoryConfig as RepositoryConfig
    from infsched.config import SchedulerConfig as SchedulerConfig
    from infsched.config import read_config as read_config
    from infsched.configured_repositories import (
        ConfiguredRepositories as ConfiguredRepositories,
    )
    from infsched.configured_repositories import open_repositories as open_repositories
    from infsched.engine.binding import RepositoryBinding as RepositoryBinding
    from infsched.entities import column as column
    from infsched.entities import id_field as id_field
    from infsched.entities import sharding_key as sharding_key
    from infsched.errors import ConfigError as ConfigError
    from infsched.errors import DatabaseUnreachableError as DatabaseUnreachableError
    from infsched.errors import EntityError as EntityError
    from infsched.errors import InfschedError as InfschedError
    from infsched.errors import PluginError as PluginError
    from infsched.errors import ScheduleError as ScheduleError
    from infsched.executors import BatchExecutor as BatchExecutor
    from infsched.executors import Executor as Executor
    from infsched.executors import ExecutorSpec as ExecutorSpec
    from infsched.executors import JobContext as JobContext
    from infsched.executors import PermanentError as PermanentError
    from infsched.executors import ThrottledError as ThrottledError
    from infsched.flow_limits import FlowLimit as FlowLimit
    from infsched.flow_limits import Limit as Limit
    from infsched.flow_limits import LimitError as LimitError
    from infsched.flow_limits import LimitTarget as LimitTarget
    from infsched.hookspecs import hookimpl as hookimpl
    from infsched.jobstore.backend import JobStoreBackend as JobStoreBackend
    from infsched.limit_store import StoredLimit as StoredLimit
    from infsched.management.scheduler import InfiniteScheduler as InfiniteScheduler
    from infsched.metrics.sink import MetricsSink as MetricsSink
    from infsched.metrics.sink import MetricsSinkSpec as MetricsSinkSpec
    from infsched.plugins import PluginRegistry as PluginRegistry
    from infsched.plugins import load_plugins as load_plugins
    from infsched.repositories.backend import RepositoryBackend as RepositoryBackend
    from infsched.repositories.backend import RepositoryOptions as RepositoryOptions
    from infsched.repositories.base import ShardingRepository as ShardingRepository
    from infsched.schedule_store import StoredSchedule as StoredSchedule
    from infsched.schedules import CatchUp as CatchUp
    from infsched.schedules import Overlap as Overlap
    from infsched.schedules import Schedule as Schedule
    from infsched.schedules import ScheduledRun as ScheduledRun
    from infsched.triggers import CronTrigger as CronTrigger
    from infsched.triggers import IntervalTrigger as IntervalTrigger
    from infsched.version import __version__ as __version__

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
    "ThrottledError": "infsched.executors",
    "RepositoryBackend": "infsched.repositories.backend",
    "RepositoryOptions": "infsched.repositories.backend",
    "MetricsSinkSpec": "infsched.metrics.sink",
    "MetricsSink": "infsched.metrics.sink",
    "JobStoreBackend": "infsched.jobstore.backend",
    # embedding: configuration, repositories, a scheduler node
    "read_config": "infsched.config",
    "SchedulerConfig": "infsched.config",
    "RepositoryConfig": "infsched.config",
    "open_repositories": "infsched.configured_repositories",
    "ConfiguredRepositories": "infsched.configured_repositories",
    "ShardingRepository": "infsched.repositories.base",
    "load_plugins": "infsched.plugins",
    "PluginRegistry": "infsched.plugins",
    "InfiniteScheduler": "infsched.management.scheduler",
    "RepositoryBinding": "infsched.engine.binding",
    # recurring schedules
    "Schedule": "infsched.schedules",
    "CronTrigger": "infsched.triggers",
    "IntervalTrigger": "infsched.triggers",
    "CatchUp": "infsched.schedules",
    "Overlap": "infsched.schedules",
    "ScheduledRun": "infsched.schedules",
    "StoredSchedule": "infsched.schedule_store",
    # flow limits
    "FlowLimit": "infsched.flow_limits",
    "Limit": "infsched.flow_limits",
    "LimitTarget": "infsched.flow_limits",
    "StoredLimit": "infsched.limit_store",
    # errors
    "InfschedError": "infsched.errors",
    "ConfigError": "infsched.errors",
    "PluginError": "infsched.errors",
    "DatabaseUnreachableError": "infsched.errors",
    "EntityError": "infsched.errors",
    "ScheduleError": "infsched.errors",
    "LimitError": "infsched.flow_limits",
}

#: What `__getattr__` imports on first use: the public names and the version (reading the
#: installed distribution's metadata is most of what an import of the version costs).
_LAZY: dict[str, str] = {"__version__": "infsched.version", **_PUBLIC}

__all__ = ["__version__", *_PUBLIC]

if not TYPE_CHECKING:  # hidden from mypy, so a misspelt name is still an error there

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'infsched' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later look-ups skip this function
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
