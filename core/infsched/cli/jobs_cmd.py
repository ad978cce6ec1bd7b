"""``infsched jobs``: what became of an entity's job."""

from __future__ import annotations

import json
from typing import Any

import attrs
import click
from rich.console import Console
from rich.table import Table

from infsched.cli.context import app_context, config_options
from infsched.clock import SystemClock
from infsched.database import check_reachable, create_engine
from infsched.engine.history import History
from infsched.engine.scheduler import history_repository
from infsched.engine.status import JobStatus, job_status


@click.group("jobs")
def jobs_group() -> None:
    """Inspect jobs."""


def _as_json(status: JobStatus) -> dict[str, Any]:
    live = None
    if status.live is not None:
        live = {
            k: (v.isoformat() if hasattr(v, "isoformat") else v)
            for k, v in status.live.items()
            if k != "payload"
        }
    return {
        "repository": status.repository,
        "entity_id": status.entity_id,
        "state": status.state,
        "live": live,
        "outcomes": [
            {
                k: (v.isoformat() if hasattr(v, "isoformat") else getattr(v, "value", v))
                for k, v in attrs.asdict(o, recurse=False).items()
            }
            for o in status.outcomes
        ],
    }


@jobs_group.command("show")
@config_options
@click.argument("entity_id")
@click.option("--repo", default=None, metavar="NAME", help="Only this repository.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(entity_id: str, repo: str | None, as_json: bool) -> None:
    """Print an entity's job: its live state and every recorded outcome."""
    config = app_context().loaded().config
    engine = create_engine(config.database_url)
    try:
        check_reachable(engine, config.database_url)
        clock = SystemClock()
        history = History(
            history_repository(engine, clock, config.history_retention_days), config.node_id
        )
        statuses = job_status(engine, history, entity_id, repo, now=clock.now())
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps([_as_json(s) for s in statuses], indent=2))
    elif not statuses:
        Console().print(f"no job for entity {entity_id}" + (f" in {repo}" if repo else ""))
    for status in [] if as_json else statuses:
        _print(status)
    if not statuses:
        raise SystemExit(1)


def _print(status: JobStatus) -> None:
    console = Console()
    console.print(
        f"[bold]{status.repository}[/] entity {status.entity_id}: [bold]{status.state}[/]"
    )
    if status.live is not None:
        live = status.live
        console.print(
            f"  job {live['job_key']}  attempt {live['attempt']}  due {live['due_at']}  "
            f"run at {live['run_at']}  owner {live['owner'] or '-'}"
        )
        if live["last_error"]:
            console.print(f"  last error: {live['last_error']}", markup=False)
    if status.outcomes:
        table = Table()
        for heading in ("finished", "state", "attempt", "due", "started", "node", "error"):
            table.add_column(heading, overflow="fold")
        for o in status.outcomes:
            table.add_row(
                o.finished_at.isoformat(),
                o.state.value,
                str(o.attempt),
                o.due_at.isoformat(),
                o.started_at.isoformat() if o.started_at else "-",
                o.node,
                o.error or "",
            )
        console.print(table)
