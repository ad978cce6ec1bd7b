"""``infsched partitions``: the configured repositories' day tables and partitions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import attrs
import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infsched.cli.context import app_context, config_options, requires_plugins
from infsched.cli.output import json_option, print_json, stderr, stdout
from infsched.database import check_reachable
from infsched.repositories.from_config import ConfiguredRepository, build_repositories

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
    built = build_repositories(config, app.plugins, names=names or None)
    if not built:
        console.print("no repositories configured; add [[repositories]] tables to the config file")
    try:
        for item in {id(r.repository.engine): r for r in built}.values():
            check_reachable(item.repository.engine, item.database_url)
        yield built
    finally:
        for engine in {id(r.repository.engine): r.repository.engine for r in built}.values():
            engine.dispose()


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


@partitions_group.command("check")
@_repository_command
@json_option
def check(names: tuple[str, ...], as_json: bool) -> None:
    """Rows outside their day table, missing days ahead, the id source; exit 1 on any."""
    found: list[dict[str, Any]] = []
    with _repositories(names, stderr()) as built:
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
