"""``infsched db``: the engine's own tables."""

from __future__ import annotations

import click
from rich.markup import escape

from infsched.cli.context import app_context, config_options, requires_plugins
from infsched.cli.output import json_option, print_json, stdout
from infsched.database import check_reachable, open_database
from infsched.plugins import open_job_store
from infsched.schema import create_schema
from infsched.schema_versions import schema_state, upgrade_sql
from infsched.schema_versions import upgrade as schema_upgrade


@click.group("db")
def db_group() -> None:
    """Manage the scheduler's database."""


@db_group.command("init")
@config_options
@json_option
@requires_plugins
def init(as_json: bool) -> None:
    """Create the engine's own tables; safe to run again."""
    app = app_context()
    config = app.loaded().config
    url = config.database_url
    database = open_database(url)
    engine = database.engine
    try:
        check_reachable(engine, url)
        # The node's own tables, and the configured job store's (if it keeps any here).
        store = open_job_store(app.plugins, config.job_store, database)
        created = list(dict.fromkeys([*store.create_schema(), *create_schema(engine)]))
        with engine.connect() as conn:
            state = schema_state(conn)
    finally:
        engine.dispose()
    if as_json:
        print_json({"database": str(url), "created": created, "schema": state.status})
        return
    console = stdout()
    if created:
        console.print(f"created {', '.join(created)} in {escape(str(url))}")
    else:
        console.print(f"all tables already exist in {escape(str(url))}")
    if state.status == "behind":  # tables an earlier release made: init does not alter them
        console.print(
            f"their schema is at {_at(state.revision, state.release)}; this code needs "
            f"{_at(state.head, state.head_release)}: run `infsched db upgrade`"
        )


def _at(revision: str | None, release: str | None) -> str:
    return f"{revision} ({release or 'a newer release'})"


@db_group.command("current")
@config_options
@json_option
@requires_plugins
def current(as_json: bool) -> None:
    """Say which schema revision the database is at, and this code's."""
    url = app_context().loaded().config.database_url
    database = open_database(url)
    try:
        check_reachable(database.engine, url, existing=True)
        with database.engine.connect() as conn:
            state = schema_state(conn)
    finally:
        database.dispose()
    if as_json:
        print_json({"database": str(url), **state.as_dict()})
        return
    code, where = _at(state.head, state.head_release), escape(str(url))
    found = _at(state.revision, state.release)
    lines = {
        "empty": f"{where} has no scheduler tables; `infsched db init` makes them at {code}",
        "current": f"{where} is at {code}, this code's revision",
        "behind": f"{where} is at {found}; this code needs {code}: run `infsched db upgrade`",
        "ahead": f"{where} is at {found}, newer than this code's {code}",
    }
    stdout().print(lines[state.status])


@db_group.command("upgrade")
@config_options
@click.option("--sql", "as_sql", is_flag=True, help="Print the statements instead of running them.")
@json_option
@requires_plugins
def upgrade(as_sql: bool, as_json: bool) -> None:
    """Bring the database's schema to this code's revision; safe to run again.

    An upgrade that stopped halfway (killed, a lock wait timeout) finishes when
    run again. With --sql it reads the database to find its day tables and
    prints what it would run, changing nothing.
    """
    url = app_context().loaded().config.database_url
    database = open_database(url)
    try:
        check_reachable(database.engine, url, existing=True)
        if as_sql:
            statements = upgrade_sql(database.engine)
        else:
            before, after = schema_upgrade(database.engine)
    finally:
        database.dispose()
    if as_sql:
        if as_json:
            print_json({"database": str(url), "sql": statements})
        else:
            click.echo(statements, nl=False)
        return
    if as_json:
        print_json({"database": str(url), "before": before.as_dict(), "after": after.as_dict()})
        return
    was, now = _at(before.revision, before.release), _at(after.revision, after.release)
    if before.revision == after.revision and before.recorded:
        stdout().print(f"{escape(str(url))} is already at {now}")
    else:
        stdout().print(f"upgraded {escape(str(url))} from {was} to {now}")
