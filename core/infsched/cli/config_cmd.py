"""``infsched config``: the effective configuration and where each value came from."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from infsched.cli.context import app_context, config_options
from infsched.cli.output import json_option, print_json, stdout
from infsched.config import describe


@click.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@config_options
@json_option
def show(as_json: bool) -> None:
    """Print the effective config; database passwords are shown as ***."""
    loaded = app_context().loaded()
    rows = describe(loaded)
    if as_json:
        payload = {key: {"value": value, "source": source} for key, value, source in rows}
        print_json(payload)
        return
    table = Table(title=escape(f"Effective config (file: {loaded.file or 'none'})"))
    table.add_column("key")
    table.add_column("value", overflow="fold")
    table.add_column("source")
    for key, value, source in rows:
        table.add_row(key, escape(value), escape(source))
    stdout().print(table)
