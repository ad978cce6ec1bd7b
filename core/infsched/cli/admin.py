"""What the management commands share: a JobAdmin on the configured database, JSON, times."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
import sqlalchemy as sa
from rich.console import Console

from infsched.cli.context import app_context
from infsched.cli.output import stdout
from infsched.cluster.nodes import NodeState
from infsched.config import SchedulerConfig
from infsched.configured_repositories import build_repositories
from infsched.database import Database, check_reachable, open_database
from infsched.dburl import DatabaseUrl
from infsched.engine.binding import RepositoryBinding
from infsched.engine.history import History
from infsched.engine.scheduler import history_repository
from infsched.errors import InfschedError
from infsched.management import JobAdmin
from infsched.plugins import open_job_store
from infsched.schema import metadata

#: How `infsched nodes` and the dashboard colour a node's liveness (`judge`'s word).
LIVENESS_STYLE = {
    NodeState.ALIVE: "",
    NodeState.SUSPECTED: "yellow",
    NodeState.DEAD: "red",
    NodeState.STOPPED: "dim",
}


def actor() -> str:
    """Who acts from this command line, as pauses and cancelled outcomes record it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container)
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


@contextmanager
def open_admin() -> Iterator[tuple[JobAdmin, SchedulerConfig]]:
    """A JobAdmin on the configured database (checked reachable), disposed afterwards.

    The configured repositories are built only when a command looks an
    entity up (`jobs show`, `run-now`, `cancel`, `retry` by entity id); those
    in the job store's database share its engine.
    """
    app = app_context()
    config = app.loaded().config
    database = open_database(config.database_url, pool_size=2)
    engine = database.engine
    others: list[Database] = []

    def database_for(url: DatabaseUrl) -> Database:
        if url == config.database_url:
            return database
        others.append(open_database(url, pool_size=2))
        check_reachable(others[-1].engine, url)
        return others[-1]

    def bindings() -> list[RepositoryBinding]:
        app.plugins.require_healthy()
        built = build_repositories(config, app.plugins, database_for=database_for)
        return [
            RepositoryBinding(r.repository, r.config.executor, r.config.priority, r.config.flow_key)
            for r in built
        ]

    try:
        # Every command here needs the tables a node or `db init` made: never create a database.
        check_reachable(engine, config.database_url, existing=True)
        store = open_job_store(app.plugins, config.job_store, database)
        missing = [
            t.name for t in metadata.sorted_tables if not sa.inspect(engine).has_table(t.name)
        ]
        missing += store.missing_tables()
        if missing:
            raise InfschedError(
                f"{config.database_url} has no {', '.join(missing)}: it is not a scheduler's "
                "database yet; point --db at a running cluster's, or run `infsched db init`"
            )
        history = History(
            history_repository(database, config.history_retention_days), config.node_id, database
        )
        admin = JobAdmin(
            database,
            history,
            actor=actor(),
            repositories=[r.name for r in config.repositories],
            bindings=bindings,
            store=store,
        )
        yield admin, config
    finally:
        for other in others:
            other.dispose()
        engine.dispose()


def console() -> Console:
    return stdout()


def when(value: datetime | None) -> str:
    """A time as people read it in a table, to the millisecond, with its offset (UTC).

    A naive value is UTC, as the database holds times.
    """
    if value is None:
        return "-"
    aware = value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)
    return aware.isoformat(sep=" ", timespec="milliseconds")


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.2f} s"


if TYPE_CHECKING:
    _ParamType = click.ParamType[datetime]
else:  # click before 8.2 has no type parameter
    _ParamType = click.ParamType


class AwareDateTime(_ParamType):
    """An ISO-8601 time with a timezone (``2025-01-01T12:00:00Z``, ``…+02:00``)."""

    name = "TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO-8601 time, e.g. 2025-01-01T12:00:00Z", param, ctx)
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            self.fail(
                f"{value!r} has no timezone, so it could mean any time; add one, "
                "e.g. 2025-01-01T12:00:00Z or 2025-01-01T14:00:00+02:00",
                param,
                ctx,
            )
        return parsed.astimezone(UTC)
