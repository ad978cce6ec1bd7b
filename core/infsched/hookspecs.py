"""The plugin contract: every hook a plugin may implement.

Plugins are found through the ``infsched`` entry-point group and implement
these hooks with ``@infsched.hookimpl``.  The built-in features (dialects,
repository backends, job stores, the log metrics sink) are plugins too, registered after
the entry points through these same hooks.

Each ``register_*`` hook is called once, when the plugins are loaded, through
pluggy (so plugins' hook wrappers see it), and whatever each implementation
returns is attributed to its plugin (see infsched.hookcalls): two plugins
returning the same name is an error naming both, never a silent override.  A
hook that raises marks its plugin as failed; the rest still load.  No hook is
called per job.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

# Re-exported: plugins mark hooks with ``infsched.hookspecs.hookimpl`` or ``infsched.hookimpl``.
from infsched.markers import PROJECT as PROJECT
from infsched.markers import hookimpl as hookimpl
from infsched.markers import hookspec

if TYPE_CHECKING:
    import click

    from infsched.dialects.base import Dialect
    from infsched.executors import ExecutorSpec
    from infsched.jobstore.backend import JobStoreBackend
    from infsched.metrics.sink import MetricsSinkSpec
    from infsched.repositories.backend import RepositoryBackend
    from infsched.schedules import Schedule


@hookspec
def register_entity_types() -> Iterable[type]:
    """Entity types this plugin declares.

    Called once at plugin load.  Return attrs classes declared with
    `infsched.entities` (``id_field()``, ``sharding_key()``, ``column()``).
    Each is known by its class name (``SmsEntity``), which config files use
    to bind a repository to it; the class is checked when it is registered,
    so a wrongly declared entity fails its plugin with a message naming the field.
    """
    raise NotImplementedError


@hookspec
def register_executors() -> Iterable[ExecutorSpec]:
    """Executors this plugin provides, as `ExecutorSpec` values.

    Called once at plugin load.  A repository is bound to an executor by the
    spec's name; the spec's factory is called when a scheduler starts, with
    the plugin's config section, and returns the callable that runs jobs.
    """
    raise NotImplementedError


@hookspec
def register_repository_backends() -> Iterable[RepositoryBackend]:
    """Repository backends (how entities are sharded by day), as `RepositoryBackend` values.

    Called once at plugin load.  The built-ins are ``multi_table`` (one table
    per day) and ``partitioned`` (one table, one partition per day).
    """
    raise NotImplementedError


@hookspec
def register_job_stores() -> Iterable[JobStoreBackend]:
    """Job stores (where due jobs wait to be claimed), as `JobStoreBackend` values.

    Called once at plugin load.  ``job_store = "NAME"`` in the configuration
    selects one; the node and the management commands call its factory with
    the configured database's handle (`infsched.database.Database`: engine,
    dialect, clock).  The built-in is ``sql``
    (the plugin ``sql_store``), for MySQL/MariaDB and SQLite.  A store must
    pass `infsched.testing.jobstore.JobStoreContract`.
    """
    raise NotImplementedError


@hookspec
def register_dialects() -> Iterable[Dialect]:
    """Databases this plugin supports, as `infsched.dialects.base.Dialect` instances.

    Called once at plugin load.  A dialect is known by its ``name``; its
    ``url_scheme`` says which ``database_url`` schemes select it (how they
    are written, the driver they are connected with), and the rest of the
    interface is everything the scheduler does differently on that database.
    The built-ins are ``mysql`` (MySQL/MariaDB) and ``sqlite``.
    """
    raise NotImplementedError


@hookspec
def register_metrics_sinks() -> Iterable[MetricsSinkSpec]:
    """Metrics sinks (where counters, gauges and histograms go), as `MetricsSinkSpec` values.

    Called once at plugin load.  A sink is created by its factory when a
    scheduler starts; one that raises while recording is logged once and
    counted, and never stops the scheduler.
    """
    raise NotImplementedError


@hookspec
def register_schedules() -> Iterable[Schedule]:
    """Recurring schedules this plugin declares, as `infsched.schedules.Schedule` values.

    Called once at plugin load, like the other ``register_*`` hooks; a node
    puts them in the database when it starts (`InfiniteScheduler.start`,
    source ``plugin NAME``), next to the config's ``[[schedules]]``: an equal
    definition changes nothing, another replaces it (keeping its pause).  A
    schedule's executor must be registered (by any plugin) or the node
    refuses to start; two plugins declaring one name conflict.
    """
    raise NotImplementedError


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``infsched`` command line.

    Called once when the CLI starts, after every plugin has loaded, with the
    root group.  Add a group named after the plugin (``infsched sms …``).
    Replacing a command that already exists is refused as a conflict.
    """
    raise NotImplementedError
