"""``infsched partitions``: the configured repositories' day tables and partitions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infsched.cli.context import app_context, config_options, requires_plugins
from infsched.repositories.from_config import ConfiguredRepository, open_repositories

F = TypeVar("F", bound=Callable[..., Any])


def _repository_command(fn: F) -> F:
    """``--config``, ``--db`` and ``--repo NAME`` (repeatable), once every plugin loaded."""
    fn = requires_plugins(fn)
    fn = click.option(
        "--repo",
        "names",
        multiple=True,
        metavar="NAME",
        help="Only this repository (repeatable) [default: every configured one].",
    )(fn)
    return config_options(fn)


@click.group("partitions")
def partitions_group() -> None:
    """Day tables and partitions of the configured repositories."""


@contextmanager
def _repositories(names: tuple[str, ...], console: Console) -> Iterator[list[ConfiguredRepository]]:
    """The selected repositories, their databases checked reachable; engines disposed after."""
    app = app_context()
    config = app.loaded().config
    with open_repositories(config, plugins=app.plugins, names=names or None) as opened:
        if not opened:
            console.print(
                "no repositories configured; add [[repositories]] tables to the config file"
            )
        yield list(opened)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S.%f")


@partitions_group.command("status")
@_repository_command
def status(names: tuple[str, ...]) -> None:
    """Each repository's tables or partitions, with row counts and key range."""
    console = Console()
    with _repositories(names, console) as built:
        for item in built:
            repo = item.repository
            shards = repo.status()
            table = Table(
                title=f"{escape(repo.name)} ({item.backend}, {escape(item.config.entity)})",
                caption=(
                    f"retention {item.config.retention_days} d, "
                    f"precreate {item.config.precreate_days} d; {escape(str(item.database_url))}"
                ),
            )
            for heading in ("table / partition", "day", "rows", "earliest (UTC)", "latest (UTC)"):
                table.add_column(heading, justify="right" if heading == "rows" else "left")
            for shard in shards:
                table.add_row(
                    shard.name,
                    str(shard.day) if shard.day else "catch-all",
                    f"{shard.rows:,}",
                    _when(shard.earliest),
                    _when(shard.latest),
                )
            if not shards:
                table.caption = "no tables yet: `infsched partitions maintain` creates them"
            console.print(table)


@partitions_group.command("maintain")
@_repository_command
def maintain(names: tuple[str, ...]) -> None:
    """Create the days ahead and drop those past retention, now."""
    console = Console()
    with _repositories(names, console) as built:
        for item in built:
            report = item.repository.maintain()
            console.print(
                f"{escape(item.repository.name)}: created {len(report.created)} "
                f"({', '.join(report.created) or '-'}), dropped {len(report.dropped)} "
                f"({', '.join(report.dropped) or '-'}), kept {report.kept}"
            )
