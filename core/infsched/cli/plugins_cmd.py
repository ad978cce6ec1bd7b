"""``infsched plugins``: what is installed, what it registers, and whether it loaded."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from infsched.cli.context import app_context
from infsched.cli.output import json_option, print_json, stdout

_STYLE = {"ok": "green", "failed": "bold red", "disabled": "yellow"}


@click.group("plugins")
def plugins_group() -> None:
    """Inspect installed plugins."""


@plugins_group.command("list")
@json_option
def list_plugins(as_json: bool) -> None:
    """List plugins: name, distribution, version, hooks, registrations and status."""
    registry = app_context().plugins
    infos = registry.listing()
    if as_json:
        print_json([i.as_json() for i in infos])
        return
    table = Table(title="Infinite Scheduler plugins")
    for heading in ("name", "distribution", "version", "hooks", "registers", "status"):
        table.add_column(heading, overflow="fold")
    for info in infos:
        # Everything but the styling comes from plugins: escaped, so that an error
        # message holding "[/x]" is shown as it is instead of breaking the table.
        status = f"[{_STYLE[info.status]}]{info.status}[/]"
        if info.error:
            status += f"\n[dim]{escape(info.error)}[/]"
        for conflict in info.conflicts:
            status += f"\n[bold red]conflict:[/] {escape(conflict)}"
        table.add_row(
            escape(info.name) + (" [dim](built-in)[/]" if info.builtin else ""),
            escape(info.distribution or "-"),
            escape(info.version or "-"),
            "\n".join(info.hooks) or "-",
            escape("\n".join(info.registers) or "-"),
            status,
        )
    console = stdout()
    console.print(table)
    for conflict in registry.conflicts:
        console.print(f"[bold red]conflict:[/] {escape(conflict)}")
