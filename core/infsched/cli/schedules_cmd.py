"""``infsched schedules``: add, list, show, pause, resume, remove and preview recurring schedules.

The commands work on the configured database's ``infsched_schedules``
through `ScheduleAdmin`; a schedule added here records the source ``cli``.
Its executor must be one the loaded plugins register.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from infsched.cli.admin import console, open_admin
from infsched.cli.context import app_context, config_options
from infsched.cli.output import counted, json_option, print_json
from infsched.errors import ScheduleError
from infsched.management.schedules import MAX_NEXT, ScheduleAdmin, ScheduleView, schedules_from_json
from infsched.schedules import CatchUp, Overlap, Schedule

#: The source of schedules added here.
CLI_SOURCE = "cli"


@click.group("schedules")
def schedules_group() -> None:
    """Recurring schedules (cron or interval): add, list, show, pause, resume, remove, next."""


@contextmanager
def open_schedules() -> Iterator[ScheduleAdmin]:
    """A ScheduleAdmin on the configured database, accepting the loaded plugins' executors."""
    plugins = app_context().plugins
    with open_admin() as (admin, _config):
        yield ScheduleAdmin(admin.database, plugins.executors())


def _local(value: datetime | None, zone: tzinfo) -> str:
    """A time in the schedule's zone, with its offset; a naive value is UTC."""
    if value is None:
        return "-"
    aware = value.replace(tzinfo=UTC) if value.utcoffset() is None else value
    return aware.astimezone(zone).isoformat()


def _from_flags(name: str | None, flags: dict[str, Any]) -> Schedule:
    """A schedule from NAME and the flags, read as its JSON definition would be."""
    if name is None:
        raise ScheduleError(
            "schedules add: give NAME and --executor with --cron or --every, "
            "or a definition with --definition or --file"
        )
    definition: dict[str, Any] = {"name": name}
    for key, value in flags.items():
        if value is not None:
            definition[key] = value
    payload = definition.get("payload")
    if isinstance(payload, str):
        definition["payload"] = _payload(name, payload)
    return Schedule.from_definition(definition, "schedules add")


def _payload(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScheduleError(f"schedule {name!r}: payload: not JSON ({exc})") from None


@schedules_group.command("add")
@config_options
@click.argument("name", required=False)
@click.option(
    "--definition",
    default=None,
    metavar="JSON",
    help="A schedule's JSON definition (or a list of them), as docs/schedules.md shows.",
)
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A JSON file holding a definition or a list of them.",
)
@click.option("--executor", default=None, metavar="NAME", help="The executor its runs go to.")
@click.option("--cron", default=None, metavar="EXPR", help="A cron expression (5 fields).")
@click.option("--every", type=float, default=None, metavar="SECONDS", help="An interval.")
@click.option("--zone", default=None, metavar="ZONE", help="IANA zone of the cron times [UTC].")
@click.option("--payload", default=None, metavar="JSON", help="What each run's job carries.")
@click.option("--start", default=None, metavar="ISO", help="No occurrence before (with offset).")
@click.option("--end", default=None, metavar="ISO", help="No occurrence after (with offset).")
@click.option("--jitter", type=float, default=None, metavar="SECONDS", help="Spread each run.")
@click.option("--priority", type=int, default=None, help="Its jobs' priority [0].")
@click.option(
    "--catch-up",
    type=click.Choice([p.value for p in CatchUp]),
    default=None,
    help="What occurrences missed while no node ran become [fire_once_now].",
)
@click.option("--catch-up-limit", type=int, default=None, help="At most this many for fire_all.")
@click.option(
    "--overlap",
    type=click.Choice([p.value for p in Overlap]),
    default=None,
    help="An occurrence due while the last run still runs [skip].",
)
@json_option
def add(
    name: str | None,
    definition: str | None,
    path: Path | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Add schedule NAME, or replace it; unchanged if it is defined so already.

    Either NAME with --executor and --cron or --every, or --definition /
    --file with JSON definitions.  The executor must be registered by a
    loaded plugin; nothing is stored otherwise.
    """
    app_context().plugins.require_healthy()  # a failed plugin's executors would look unknown
    given = [what for what, value in (("--definition", definition), ("--file", path)) if value]
    if given and (name is not None or any(v is not None for v in flags.values())):
        raise ScheduleError(f"schedules add: {given[0]} takes no NAME or schedule flags too")
    if len(given) > 1:
        raise ScheduleError("schedules add: give --definition or --file, not both")
    if definition is not None:
        schedules = schedules_from_json(definition, "--definition")
    elif path is not None:
        schedules = schedules_from_json(path.read_text(encoding="utf-8"), str(path))
    else:
        schedules = [_from_flags(name, flags)]
    with open_schedules() as admin:
        results = admin.add_all(schedules, CLI_SOURCE)
    if as_json:
        print_json(dict(results))
        return
    for schedule_name, put in results:
        console().print(f"{schedule_name}: {put}", markup=False)


@schedules_group.command("list")
@config_options
@json_option
def list_schedules(as_json: bool) -> None:
    """Every schedule: trigger, zone, paused, source, next fire time, last outcome, progress."""
    with open_schedules() as admin:
        views = admin.list_schedules()
    if as_json:
        print_json([v.as_json() for v in views])
        return
    table = Table(title=counted(len(views), "schedule"))
    headings = (
        "name",
        "trigger",
        "zone",
        "paused",
        "source",
        "next fire",
        "last outcome",
        "materialized until",
    )
    for heading in headings:
        table.add_column(heading, overflow="fold")
    for view in views:
        schedule = view.stored.schedule
        zone = schedule.tzinfo
        table.add_row(
            escape(view.name),
            escape(schedule.describe_trigger()),
            escape(schedule.zone),
            "yes" if view.stored.paused else "no",
            escape(view.stored.source),
            _local(view.next_fire, zone),
            escape(_last(view)),
            _local(view.stored.materialized_until, zone),
        )
    console().print(table)


def _show_lines(view: ScheduleView) -> list[tuple[str, str]]:
    zone = view.stored.schedule.tzinfo
    lines = [(key, _shown(value)) for key, value in view.stored.schedule.as_definition().items()]
    lines += [
        ("source", view.stored.source),
        ("paused", "yes" if view.stored.paused else "no"),
        ("next fire", _local(view.next_fire, zone)),
        ("last outcome", _last(view)),
        ("materialized until", _local(view.stored.materialized_until, zone)),
        ("created", _local(view.stored.created_at, zone)),
        ("updated", _local(view.stored.updated_at, zone)),
    ]
    return lines


def _last(view: ScheduleView) -> str:
    """``succeeded 2025-03-30T02:30:00.12+02:00``: the newest outcome, in the schedule's zone."""
    if view.last is None:
        return "-"
    return f"{view.last.state} {_local(view.last.finished_at, view.stored.schedule.tzinfo)}"


def _shown(value: object) -> str:
    return "-" if value is None else value if isinstance(value, str) else json.dumps(value)


@schedules_group.command("show")
@config_options
@click.argument("name")
@json_option
def show(name: str, as_json: bool) -> None:
    """Everything about schedule NAME: its definition, source, pause and progress."""
    with open_schedules() as admin:
        view = admin.show(name)
    if as_json:
        print_json(view.as_json())
        return
    out = console()
    for key, value in _show_lines(view):
        out.print(f"{key}: {value}", markup=False)


@schedules_group.command("next")
@config_options
@click.argument("name")
@click.option(
    "-n",
    "count",
    type=click.IntRange(1, MAX_NEXT),
    default=5,
    show_default=True,
    help="How many fire times.",
)
@json_option
def next_fire_times(name: str, count: int, as_json: bool) -> None:
    """The next fire times of NAME after now, in its zone (ISO 8601 with offset), one a line."""
    with open_schedules() as admin:
        times = admin.next_fire_times(name, count)
    if as_json:
        print_json([t.isoformat() for t in times])
        return
    for at in times:
        click.echo(at.isoformat())


def _switch(name: str, as_json: bool, paused: bool, changed: bool) -> None:
    if as_json:
        print_json({"name": name, "paused": paused, "changed": changed})
        return
    state = "paused" if paused else "resumed"
    already = "paused already" if paused else "not paused"
    console().print(f"{name}: {state}" if changed else f"{name}: {already}", markup=False)


@schedules_group.command("pause")
@config_options
@click.argument("name")
@json_option
def pause(name: str, as_json: bool) -> None:
    """Make no more jobs of NAME, on every node, until `schedules resume`."""
    with open_schedules() as admin:
        changed = admin.pause(name)
    _switch(name, as_json, True, changed)


@schedules_group.command("resume")
@config_options
@click.argument("name")
@json_option
def resume(name: str, as_json: bool) -> None:
    """Let NAME fire again."""
    with open_schedules() as admin:
        changed = admin.resume(name)
    _switch(name, as_json, False, changed)


@schedules_group.command("remove")
@config_options
@click.argument("name")
@json_option
def remove(name: str, as_json: bool) -> None:
    """Remove NAME; its jobs made already stay (cancel them with `jobs cancel`).

    A schedule the config or a plugin still declares comes back when a node starts.
    """
    with open_schedules() as admin:
        admin.remove(name)
    if as_json:
        print_json({"name": name, "removed": True})
    else:
        console().print(f"{name}: removed", markup=False)
