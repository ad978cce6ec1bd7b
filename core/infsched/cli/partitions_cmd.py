"""``infsched partitions``: the configured repositories' day tables and partitions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs
import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infsched.cli.admin import when
from infsched.cli.context import app_context, config_options, requires_plugins
from infsched.cli.output import json_option, print_json, stderr, stdout
from infsched.configured_repositories import ConfiguredRepository, open_repositories

F = TypeVar("F", bound=Callable[..., Any])


def _repository_command(fn: F) -> F:
    """``--config``, ``--db``, ``--repo NAME`` (repeatable), ``--json``; every plugin loaded."""
    fn = requires_plugins(fn)
    fn = json_option(fn)
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
def _repositories(
    names: tuple[str, ...], console: Console | None, *, existing: bool
) -> Iterator[list[ConfiguredRepository]]:
    """The selected repositories, their databases checked reachable; engines disposed after.

    `existing`: only read, so a database that is not there is an error, never created.
    """
    app = app_context()
    config = app.loaded().config
    with open_repositories(
        config, plugins=app.plugins, names=names or None, existing=existing
    ) as opened:
        if not opened and console is not None:
            console.print(
                "no repositories configured; add [[repositories]] tables to the config file"
            )
        yield list(opened)


@partitions_group.command("status")
@_repository_command
def status(names: tuple[str, ...], as_json: bool) -> None:
    """Each repository's tables or partitions, with row counts and key range."""
    console = None if as_json else stdout()
    found: list[dict[str, Any]] = []
    with _repositories(names, console, existing=True) as built:
        for item in built:
            repo = item.repository
            shards = repo.status()
            if console is None:
                found.append(
                    {
                        "repository": repo.name,
                        "backend": item.backend,
                        "entity": item.config.entity,
                        "database": str(item.database_url),
                        "retention_days": item.config.retention_days,
                        "precreate_days": item.config.precreate_days,
                        "shards": [attrs.asdict(shard) for shard in shards],
                    }
                )
                continue
            table = Table(
                title=f"{escape(repo.name)} ({item.backend}, {escape(item.config.entity)})",
                caption=(
                    f"retention {item.config.retention_days} d, "
                    f"precreate {item.config.precreate_days} d; {escape(str(item.database_url))}"
                ),
            )
            for heading in ("table / partition", "day", "rows", "earliest", "latest"):
                table.add_column(heading, justify="right" if heading == "rows" else "left")
            for shard in shards:
                table.add_row(
                    escape(shard.name),
                    str(shard.day) if shard.day else "catch-all",
                    f"{shard.rows:,}",
                    when(shard.earliest),
                    when(shard.latest),
                )
            if not shards:
                table.caption = "no tables yet: `infsched partitions maintain` creates them"
            console.print(table)
    if console is None:
        print_json(found)


@partitions_group.command("maintain")
@_repository_command
def maintain(names: tuple[str, ...], as_json: bool) -> None:
    """Create the days ahead and drop those past retention, now."""
    console = None if as_json else stdout()
    found: list[dict[str, Any]] = []
    with _repositories(names, console, existing=False) as built:
        for item in built:
            report = item.repository.maintain()
            if console is None:
                found.append({"repository": item.repository.name, **attrs.asdict(report)})
                continue
            console.print(
                f"{escape(item.repository.name)}: created {len(report.created)} "
                f"({', '.join(report.created) or '-'}), dropped {len(report.dropped)} "
                f"({', '.join(report.dropped) or '-'}), kept {report.kept}"
            )
    if console is None:
        print_json(found)


@partitions_group.command("check")
@_repository_command
def check(names: tuple[str, ...], as_json: bool) -> None:
    """Rows outside their day table, missing days ahead, the id source; exit 1 on any."""
    found: list[dict[str, Any]] = []
    with _repositories(names, stderr(), existing=True) as built:
        for item in built:
            problems = item.repository.check()
            found.append(
                {
                    "repository": item.repository.name,
                    "backend": item.backend,
                    "problems": [attrs.asdict(p) for p in problems],
                }
            )
    failed = any(entry["problems"] for entry in found)
    if as_json:
        print_json({"ok": not failed, "repositories": found})
    else:
        console = stdout()
        for entry in found:
            if not entry["problems"]:
                console.print(f"{escape(entry['repository'])}: ok")
            for problem in entry["problems"]:
                examples = problem["example_ids"]
                ids = f" (ids {', '.join(str(i) for i in examples)})" if examples else ""
                console.print(
                    f"{escape(entry['repository'])}: {problem['kind']} "
                    f"{escape(problem['shard'] or '-')}: {escape(problem['message'])}{escape(ids)}"
                )
    if failed:
        raise SystemExit(1)  # for cron jobs and monitoring checks
