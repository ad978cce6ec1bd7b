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
from infsched.schedules import SCHEDULE_REPOSITORY


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
        "pending_due": status.pending_due,
        "live": live,
        "outcomes": [attrs.asdict(o, recurse=False) for o in status.outcomes],
    }


@jobs_group.command("list")
@config_options
@click.option("--state", type=click.Choice(STATES), default=None, help="Only jobs in this state.")
@click.option("--repo", default=None, metavar="NAME", help="Only this repository.")
@click.option(
    "--schedule",
    default=None,
    metavar="NAME",
    help=f"Only the runs of this schedule (repository {SCHEDULE_REPOSITORY}, entity NAME).",
)
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
    state: str | None,
    repo: str | None,
    schedule: str | None,
    due_before: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """Jobs waiting, running (claimed) or dead, soonest due first."""
    if schedule is not None and repo is not None:
        raise InfschedError("--schedule and --repo: give one of them")
    with open_admin() as (admin, _config):
        rows = admin.list_jobs(
            state=state, repository=repo, due_before=due_before, limit=limit, schedule=schedule
        )
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
    """A job by its key, or an entity's jobs by entity id: live state and every outcome.

    An entity with no job yet (a fetch cycle creates it within
    lookahead_window of its due time) is looked up in the configured
    repositories and shown as pending, with its due time.
    """
    with open_admin() as (admin, config):
        statuses = admin.show(ref, repo)
    if not statuses:
        # An error like any other: one line on stderr, or a JSON object under --json.
        raise InfschedError(f"no job with key or entity id {ref}" + (f" in {repo}" if repo else ""))
    if as_json:
        print_json([_as_json(s) for s in statuses])
    for status in [] if as_json else statuses:
        _print(status, config.lookahead_window)


def _print(status: JobStatus, lookahead_window: float) -> None:
    out = console()
    heading = (
        f"[bold]{status.repository}[/] entity {escape(status.entity_id)}: [bold]{status.state}[/]"
    )
    if status.live is None and status.pending_due is not None:
        heading += (
            f", due {status.pending_due.isoformat()}, no job yet (it is fetched within "
            f"lookahead_window, {lookahead_window:g} s, before it is due)"
        )
    out.print(heading)
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


_ENTITY_REPO = click.option(
    "--repo",
    default=None,
    metavar="NAME",
    help="The arguments may be entity ids of this repository as well as job keys.",
)


@jobs_group.command("cancel")
@config_options
@click.argument("keys", nargs=-1, required=True, metavar="KEY|ENTITY_ID...")
@_ENTITY_REPO
@json_option
def cancel(keys: tuple[str, ...], repo: str | None, as_json: bool) -> None:
    """Cancel waiting or dead jobs: removed, and recorded in history as cancelled.

    With --repo, an entity id cancels the entity's jobs; an entity with no
    job yet never gets one (recorded as cancelled too).  A key or id that
    names nothing, or a running job, is refused before anything changes.
    """
    with open_admin() as (admin, _config):
        count = admin.cancel(keys, repo)
    if as_json:
        print_json(
            {"cancelled": count, "job_keys": list(dict.fromkeys(keys))}
            | ({"repository": repo} if repo is not None else {})
        )
    else:
        console().print(f"cancelled {counted(count, 'job')}")


@jobs_group.command("retry")
@config_options
@click.argument("keys", nargs=-1, metavar="[KEY|ENTITY_ID...]")
@click.option(
    "--repo",
    default=None,
    metavar="NAME",
    help="Every dead letter of this repository; with arguments, entity ids of it too.",
)
@click.option("--all", "all_dead", is_flag=True, help="Every dead letter.")
@json_option
def retry(keys: tuple[str, ...], repo: str | None, all_dead: bool, as_json: bool) -> None:
    """Dead letters back to waiting, due now, with their attempts reset.

    Give job keys; or entity ids (or keys) with --repo NAME; or --repo NAME
    alone for all of its dead letters; or --all.
    """
    if all_dead == bool(keys or repo is not None):
        raise click.UsageError("give job keys, or --repo NAME (with or without ids), or --all")
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
@click.argument("keys", nargs=-1, required=True, metavar="KEY|ENTITY_ID...")
@_ENTITY_REPO
@json_option
def run_now(keys: tuple[str, ...], repo: str | None, as_json: bool) -> None:
    """Make waiting jobs due now: the next claim takes them.

    With --repo, an entity id names the entity's waiting job; an entity with
    no job yet gets it now, due now (its due time and job key stay as they are).
    """
    with open_admin() as (admin, _config):
        count = admin.run_now(keys, repo)
    if as_json:
        print_json({"updated": count})
    else:
        console().print(f"{counted(count, 'job')} due now")
