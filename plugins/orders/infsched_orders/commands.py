"""``infsched orders events ORDER_ID``: what the orders executor did to one order."""

from __future__ import annotations

import json

import click
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from infsched.cli.context import app_context, config_options
from infsched.database import create_engine
from infsched.dburl import DatabaseUrl
from infsched.errors import ConfigError
from infsched_orders.executor import events_of, order_events


@click.group("orders")
def orders_group() -> None:
    """The orders plugin: inspect the transitions it applied."""


@orders_group.command("events")
@config_options
@click.argument("order_id")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def events_command(order_id: str, as_json: bool) -> None:
    """The events recorded for ORDER_ID in [plugins.orders] database_url, oldest first."""
    section = app_context().loaded().config.plugin_section("orders")
    raw = section.get("database_url")
    if not isinstance(raw, str) or not raw:
        raise ConfigError("plugin orders: [plugins.orders] database_url is missing")
    engine = create_engine(DatabaseUrl(raw))
    try:
        has_events = sa.inspect(engine).has_table(order_events.name)
        events = events_of(engine, order_id) if has_events else []
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(events, indent=2))
        return
    if not events:
        click.echo(f"no events recorded for order {order_id}")
        return
    table = Table(title=f"order {order_id}")
    for heading in ("at", "action", "result", "from", "to", "job key"):
        table.add_column(heading)
    for e in events:
        table.add_row(
            e["at"], e["action"], e["result"], e["from_status"] or "-", e["to_status"], e["job_key"]
        )
    Console(width=200).print(table)
