"""``infsched entities add``: entities of a configured repository from JSON lines."""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

import click
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from infsched.cli.context import app_context, config_options, requires_plugins
from infsched.cli.output import json_option, print_json, stderr, stdout
from infsched.configured_repositories import build_repositories
from infsched.database import check_reachable
from infsched.management.entity_import import (
    DEFAULT_BATCH_SIZE,
    BadLine,
    EntityImport,
    ImportReport,
)


@click.group("entities")
def entities_group() -> None:
    """Entities of the configured repositories."""


def _size(source: BinaryIO) -> int | None:
    """The byte size of a regular file, None for a pipe or a terminal."""
    try:
        status = os.fstat(source.fileno())
    except (OSError, ValueError):
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


@entities_group.command("add")
@config_options
@requires_plugins
@click.option("--repo", "name", required=True, metavar="NAME", help="The configured repository.")
@click.argument("source", type=click.File("rb"), default="-", metavar="[FILE|-]")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Lines per transaction: a batch with a bad line writes nothing (unless --skip-bad).",
)
@click.option(
    "--skip-bad", is_flag=True, help="Leave bad lines out and write the rest of their batch."
)
@json_option
def add(name: str, source: BinaryIO, batch_size: int, skip_bad: bool, as_json: bool) -> None:
    """Add entities from JSON lines (one entity object per line) in FILE or on stdin (-).

    Each line is checked as insert_many checks an entity; every bad line is
    reported as `line N: what is wrong`.
    """
    app = app_context()
    config = app.loaded().config
    [item] = build_repositories(config, app.plugins, names=[name])
    repository = item.repository
    err = stderr()
    try:
        check_reachable(repository.engine, item.database_url)
        total = _size(source)
        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[lines]:,} lines"),
            TimeElapsedColumn(),
            console=err,
            disable=not err.is_terminal,
            transient=True,
        )
        task = bar.add_task(f"adding to {escape(name)}", total=total, lines=0)

        def progress(done: int, lines: int) -> None:
            bar.update(task, completed=done, lines=lines)

        def on_bad(line: BadLine) -> None:
            if not as_json:
                bar.console.print(str(line), markup=False, highlight=False)

        loader = EntityImport(
            repository,
            batch_size=batch_size,
            skip_bad=skip_bad,
            on_bad=on_bad,
            keep_bad=as_json,
            progress=progress,
        )
        with bar:
            report = loader.run(source)
    finally:
        repository.engine.dispose()
    if as_json:
        print_json({"repository": name, **report.as_json()})
    else:
        stdout().print(_summary(name, report), markup=False, highlight=False)
    if report.held_back or (report.bad_count and not skip_bad):
        raise SystemExit(1)


def _summary(name: str, report: ImportReport) -> str:
    text = f"added {report.added:,} entit{'y' if report.added == 1 else 'ies'} to {name}"
    if report.skipped:
        text += f"; skipped {report.skipped:,} bad line{'s' if report.skipped != 1 else ''}"
    if report.held_back or (report.bad_count and not report.skipped):
        bad = report.bad_count
        text += (
            f"; {bad:,} bad line{'s' if bad != 1 else ''}, so {report.held_back:,} good "
            f"line{'s' if report.held_back != 1 else ''} of their batches were not written "
            "(fix them and add those lines again, or use --skip-bad)"
        )
    return text
