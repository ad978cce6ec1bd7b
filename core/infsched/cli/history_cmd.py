"""``infsched jobs history``: outcomes by state, repository, executor, node and time, paged."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from rich.markup import escape
from rich.table import Table

from infsched.cli.admin import AwareDateTime, open_admin
from infsched.cli.context import config_options
from infsched.cli.output import json_option, print_json, stderr, stdout
from infsched.management.history_search import (
    MAX_PAGE,
    OUTCOME_STATES,
    Cursor,
    HistoryFilter,
    HistoryPage,
    HistoryQueryError,
    HistorySearch,
)
from infsched.schedules import SCHEDULE_REPOSITORY


def _time(value: datetime | None) -> str:
    """A time to the millisecond, with its UTC offset."""
    if value is None:
        return "-"
    return value.astimezone(UTC).isoformat(sep=" ", timespec="milliseconds")


@click.command("history")
@config_options
@click.option("--state", type=click.Choice(OUTCOME_STATES), default=None, help="Only this outcome.")
@click.option("--repo", default=None, metavar="NAME", help="Only this repository.")
@click.option(
    "--schedule",
    default=None,
    metavar="NAME",
    help=f"Only the runs of this schedule (repository {SCHEDULE_REPOSITORY}, entity NAME).",
)
@click.option("--executor", default=None, metavar="NAME", help="Only this executor.")
@click.option("--node", default=None, metavar="NODE", help="Only outcomes recorded by this node.")
@click.option(
    "--since",
    type=AwareDateTime(),
    default=None,
    help="Only outcomes finished at or after this time (ISO-8601 with a timezone).",
)
@click.option(
    "--until",
    type=AwareDateTime(),
    default=None,
    help="Only outcomes finished before this time (ISO-8601 with a timezone).",
)
@click.option(
    "--after",
    "after",
    default=None,
    metavar="CURSOR",
    help="Continue below this cursor, printed at the end of the page before.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_PAGE),
    default=50,
    show_default=True,
    help="Outcomes per page.",
)
@json_option
def history(
    state: str | None,
    repo: str | None,
    schedule: str | None,
    executor: str | None,
    node: str | None,
    since: datetime | None,
    until: datetime | None,
    after: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Recorded outcomes, newest first, a page at a time.

    Each page ends with a cursor; pass it to --after (with the same filters)
    for the next page.
    """
    if schedule is not None and repo is not None:
        raise HistoryQueryError("--schedule and --repo: give one of them")
    where = HistoryFilter(
        state=state,
        repository=SCHEDULE_REPOSITORY if schedule is not None else repo,
        entity_id=schedule,
        executor=executor,
        node=node,
        since=since,
        until=until,
    )
    cursor = Cursor.parse(after) if after is not None else None
    with open_admin() as (admin, _config):
        search = HistorySearch(admin.database, admin.history.repository.name)
        page = search.page(where, after=cursor, limit=limit)
        missing = search.missing_indexes(where, after=cursor)
    if as_json:
        print_json({**page.as_json(), "missing_indexes": missing})
        return
    _print(page)
    if missing:
        stderr().print(
            f"note: {len(missing)} history index{'es' if len(missing) != 1 else ''} missing "
            f"({', '.join(missing)}): tables made by an older release, which this search "
            "reads row by row; a node's maintenance adds them (at its start, then hourly)",
            markup=False,
            highlight=False,
        )


def _print(page: HistoryPage) -> None:
    out = stdout()
    if not page.outcomes:
        out.print("no outcomes match")
        return
    table = Table()
    headings = ("finished", "state", "repository", "entity", "executor", "attempt", "node", "error")
    for heading in headings:
        table.add_column(heading, overflow="fold")
    for o in page.outcomes:
        table.add_row(
            _time(o.finished_at),
            o.state.value,
            escape(o.repository),
            escape(o.entity_id),
            escape(o.executor),
            str(o.attempt),
            escape(o.node),
            escape(o.error or ""),
        )
    out.print(table)
    if page.next is None:
        out.print(f"{len(page.outcomes)} outcomes; the last page")
    else:
        out.print(f"{len(page.outcomes)} outcomes; next page: --after {page.next}")
