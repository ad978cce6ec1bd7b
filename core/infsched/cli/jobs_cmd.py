"""``infsched jobs``: list, show, cancel, retry and run jobs now."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import attrs
import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infsched.cli.admin import AwareDateTime, console, open_admin, when
from infsched.cli.context import config_options
from infsched.cli.output import counted, json_option, print_json, stderr
from infsched.engine.status import JobStatus
from infsched.errors import InfschedError
from infsched.management.jobs import STATES
from infsched.management.jobs import Progress as ProgressCallback


@click.group("jobs")
def jobs_group() -> None:
    """List, inspect, cancel, retry and run jobs."""


def _as_json(status: JobStatus) -> dict[str, Any]:
    live = None
    if status.live is not None:
        live = {k: v for k, v in status.live.items() if k != "payload"}
    return {
        "repository": status.repository,
        "entity_id": status.entity_id,
        "state": status.state,
        "live": live,
        "outcomes": [attrs.asdict(o, recurse=False) for o in status.outcomes],
    }


@jobs_group.command("list")
@config_options
@click.option("--state", type=click.Choice(STATES), default=None, help="Only jobs in this state.")
@click.option("--repo", default=None, metavar="NAME", help="Only this repository.")
@click.option(
    "--due-before",
    type=AwareDateTime(),
    default=None,
    help="Only jobs due before this time (ISO-8601 with a timezone, e.g. 2025-01-01T12:00:00Z).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many."
)
@json_option
def list_jobs(
    state: str | None, repo: str | None, due_before: datetime | None, limit: int, as_json: bool
) -> None:
    """Jobs waiting, running (claimed) or dead, soonest due first."""
    with open_admin() as (admin, _config):
        rows = admin.list_jobs(state=state, repository=repo, due_before=due_before, limit=limit)
    if as_json:
        print_json([r.as_json() for r in rows])
        return
    first = f" (first {limit})" if len(rows) == limit else ""
    table = Table(title=counted(len(rows), "job") + first)
    for heading in ("job key", "state", "attempt", "due", "run at", "owner", "last error"):
        table.add_column(heading, overflow="fold")
    for r in rows:
        table.add_row(
            escape(r.job_key),
            r.state,
            str(r.attempt),
            when(r.due_at),
            when(r.run_at),
            escape(r.owner or "-"),
            escape(r.last_error or ""),
        )
    console().print(table)


@jobs_group.command("show")
@config_options
@click.argument("ref", metavar="KEY|ENTITY_ID")
@click.option("--repo", default=None, metavar="NAME", help="Only this repository.")
@json_option
def show(ref: str, repo: str | None, as_json: bool) -> None:
    """A job by its key, or an entity's jobs by entity id: live state and every outcome."""
    with open_admin() as (admin, _config):
        statuses = admin.show(ref, repo)
    if not statuses:
        # An error like any other: one line on stderr, or a JSON object under --json.
        raise InfschedError(f"no job with key or entity id {ref}" + (f" in {repo}" if repo else ""))
    if as_json:
        print_json([_as_json(s) for s in statuses])
    for status in [] if as_json else statuses:
        _print(status)


def _print(status: JobStatus) -> None:
    out = console()
    out.print(
        f"[bold]{status.repository}[/] entity {escape(status.entity_id)}: [bold]{status.state}[/]"
    )
    if status.live is not None:
        live = status.live
        out.print(
            f"  job {escape(live['job_key'])}  attempt {live['attempt']}  "
            f"due {when(live['due_at'])}  run at {when(live['run_at'])}  "
            f"owner {escape(live['owner'] or '-')}"
        )
        if live["last_error"]:
            out.print(f"  last error: {live['last_error']}", markup=False)
    if status.outcomes:
        table = Table()
        for heading in ("finished", "state", "attempt", "due", "started", "node", "error"):
            table.add_column(heading, overflow="fold")
        for o in status.outcomes:
            table.add_row(
                when(o.finished_at),
                o.state.value,
                str(o.attempt),
                when(o.due_at),
                when(o.started_at),
                escape(o.node),
                escape(o.error or ""),
            )
        out.print(table)


@contextmanager
def progress_bar(description: str, *, show: bool = True) -> Iterator[ProgressCallback]:
    """A rich progress bar on stderr, driven by (done, total) calls.

    It appears at the first call, so a command refused before any work (a key
    that is not a dead letter) prints its error alone.
    """
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr(),
        disable=not show,
    )
    task = bar.add_task(description, total=None)

    def advance(done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        yield advance
    finally:
        if bar.live.is_started:
            bar.stop()


@jobs_group.command("cancel")
@config_options
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@json_option
def cancel(keys: tuple[str, ...], as_json: bool) -> None:
    """Cancel waiting or dead jobs: removed, and recorded in history as cancelled.

    All or none: a key that names no job, or a running one, changes nothing.
    """
    with open_admin() as (admin, _config):
        count = admin.cancel(keys)
    if as_json:
        print_json({"cancelled": count, "job_keys": list(dict.fromkeys(keys))})
    else:
        console().print(f"cancelled {counted(count, 'job')}")


@jobs_group.command("retry")
@config_options
@click.argument("keys", nargs=-1, metavar="[KEY...]")
@click.option("--repo", default=None, metavar="NAME", help="Every dead letter of this repository.")
@click.option("--all", "all_dead", is_flag=True, help="Every dead letter.")
@json_option
def retry(keys: tuple[str, ...], repo: str | None, all_dead: bool, as_json: bool) -> None:
    """Dead letters back to waiting, due now, with their attempts reset.

    Give job keys, or --repo NAME, or --all.
    """
    if bool(keys) + (repo is not None) + all_dead != 1:
        raise click.UsageError("give job keys, or --repo NAME, or --all (one of them)")
    with (
        open_admin() as (admin, _config),
        progress_bar("retrying dead letters", show=not as_json) as bar,
    ):
        count = admin.retry(keys, repository=repo, all_dead=all_dead, progress=bar)
    if as_json:
        print_json({"retried": count})
    else:
        console().print(f"{counted(count, 'dead letter')} back to waiting, due now")


@jobs_group.command("run-now")
@config_options
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@json_option
def run_now(keys: tuple[str, ...], as_json: bool) -> None:
    """Make waiting jobs due now: the next claim takes them."""
    with open_admin() as (admin, _config):
        count = admin.run_now(keys)
    if as_json:
        print_json({"updated": count})
    else:
        console().print(f"{counted(count, 'job')} due now")
