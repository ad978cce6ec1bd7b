"""``infsched orders events ORDER_ID``: what the orders executor did to one order."""

from __future__ import annotations

import click
import sqlalchemy as sa
from rich.table import Table
from rich.text import Text

from infsched.cli.context import app_context, config_options
from infsched.cli.output import json_option, print_json, stdout
from infsched.database import check_reachable, create_engine
from infsched.dburl import DatabaseUrl
from infsched.errors import ConfigError
from infsched_orders.executor import events_of, order_events


@click.group("orders")
def orders_group() -> None:
    """The orders plugin: inspect the transitions it applied."""


@orders_group.command("events")
@config_options
@click.argument("order_id")
@json_option
def events_command(order_id: str, as_json: bool) -> None:
    """The events recorded for ORDER_ID in [plugins.orders] database_url, oldest first."""
    section = app_context().loaded().config.plugin_section("orders")
    raw = section.get("database_url")
    if not isinstance(raw, str) or not raw:
        raise ConfigError("plugin orders: [plugins.orders] database_url is missing")
    url = DatabaseUrl(raw)
    engine = create_engine(url)
    try:
        # Only reads: a database that is not there is an error, never created.
        check_reachable(engine, url, existing=True)
        has_events = sa.inspect(engine).has_table(order_events.name)
        events = events_of(engine, order_id) if has_events else []
    finally:
        engine.dispose()
    if as_json:
        print_json(events)
        return
    out = stdout()
    if not events:
        out.print(f"no events recorded for order {order_id}", markup=False)
        return
    table = Table(title=Text(f"order {order_id}"))
    for heading in ("at", "action", "result", "from", "to", "job key"):
        table.add_column(heading)
    for e in events:
        table.add_row(
            *(
                Text(str(value))
                for value in (
                    e["at"],
                    e["action"],
                    e["result"],
                    e["from_status"] or "-",
                    e["to_status"],
                    e["job_key"],
                )
            )
        )
    out.print(table)
