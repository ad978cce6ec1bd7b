"""``infsched db``: the engine's own tables."""

from __future__ import annotations

import click
from rich.markup import escape

from infsched.cli.context import app_context, config_options, requires_plugins
from infsched.cli.output import json_option, print_json, stdout
from infsched.database import check_reachable, open_database
from infsched.plugins import open_job_store
from infsched.schema import create_schema


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
    finally:
        engine.dispose()
    if as_json:
        print_json({"database": str(url), "created": created})
        return
    console = stdout()
    if created:
        console.print(f"created {', '.join(created)} in {escape(str(url))}")
    else:
        console.print(f"all tables already exist in {escape(str(url))}")
