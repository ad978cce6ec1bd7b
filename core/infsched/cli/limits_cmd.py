"""``infsched limits``: set, show and remove the cluster's flow limits.

The commands work on the configured database's ``infsched_limits`` through
`LimitAdmin`.  A limit set here has the source ``operator``: it overrides a
declared one (``[[limits]]``, an executor's) until ``limits remove``, which
puts back what this command's config declares for the target.  Every node
reads the table's targets once a second, so a change holds cluster-wide
within about a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import click
from rich.markup import escape
from rich.table import Table

from infsched.cli.admin import console, open_admin, when
from infsched.cli.context import app_context, config_options
from infsched.cli.output import counted, json_option, print_json
from infsched.flow_limits import RATE_UNITS
from infsched.limit_store import LimitStore, StoredLimit
from infsched.management.limits import LimitAdmin, declared_by


@click.group("limits")
def limits_group() -> None:
    """Flow limits on executors, repositories and flow keys: set, show, remove."""


@contextmanager
def open_limits() -> Iterator[tuple[LimitAdmin, datetime]]:
    """A LimitAdmin on the configured database, and the time now by its clock."""
    plugins = app_context().plugins
    with open_admin() as (admin, config):
        limits = LimitAdmin(LimitStore(admin.database), lambda: declared_by(config, plugins))
        yield limits, admin.database.clock.now()


def _held(stored: StoredLimit, now: datetime) -> str:
    """When a throttled gateway's hold ends; ``-`` when the target is not held."""
    if stored.held_until is None or stored.held_until <= now:
        return "-"
    return when(stored.held_until)


def _lines(stored: StoredLimit, now: datetime) -> list[tuple[str, str]]:
    return [
        ("target", stored.target.id),
        ("limit", stored.limit.describe()),
        ("source", stored.source),
        ("held until", _held(stored, now)),
        ("started", f"{stored.started:,}"),
        ("next start", when(stored.next_start)),
        ("updated", when(stored.updated_at)),
    ]


@limits_group.command("set")
@config_options
@click.argument("target")
@click.option(
    "--rate", type=float, default=None, metavar="N", help="Starts per --per, cluster-wide."
)
@click.option(
    "--per",
    type=click.Choice(list(RATE_UNITS)),
    default="second",
    show_default=True,
    help="What --rate counts starts per.",
)
@click.option(
    "--burst",
    type=int,
    default=1,
    show_default=True,
    help="Starts the rate allows back to back after an idle spell.",
)
@click.option(
    "--max-concurrent",
    type=int,
    default=None,
    metavar="N",
    help="Jobs in flight under TARGET, cluster-wide, at most.",
)
@json_option
def set_limit(
    target: str,
    rate: float | None,
    per: str,
    burst: int,
    max_concurrent: int | None,
    as_json: bool,
) -> None:
    """Limit TARGET cluster-wide, until `limits remove`.

    TARGET is executor:NAME, repository:NAME or key:VALUE (a flow key's
    value).  Give --rate, --max-concurrent or both.  It overrides a declared
    limit on the same target; every node follows it within about a second.
    """
    with open_limits() as (limits, _now):
        limit, put = limits.set(
            target, rate=rate, per=per, burst=burst, max_concurrent=max_concurrent
        )
        stored = limits.get(limit.target)
    if as_json:
        print_json({**stored.as_json(), "result": put})
        return
    console().print(f"{limit.target}: {put} ({limit.limit.describe()})", markup=False)


@limits_group.command("show")
@config_options
@click.argument("target", required=False)
@json_option
def show(target: str | None, as_json: bool) -> None:
    """Every limit, or TARGET's, with its source and state.

    The state: until when a throttled gateway holds the target, jobs started
    under it, and when the next start is due at its rate.
    """
    with open_limits() as (limits, now):
        found = [limits.get(target)] if target is not None else limits.limits()
    if as_json:
        values = [s.as_json() for s in found]
        print_json(values[0] if target is not None else values)
        return
    out = console()
    if target is not None:
        for key, value in _lines(found[0], now):
            out.print(f"{key}: {value}", markup=False)
        return
    table = Table(title=counted(len(found), "limit"))
    for heading in ("target", "limit", "source", "held until", "started", "next start"):
        table.add_column(
            heading, overflow="fold", justify="right" if heading == "started" else "left"
        )
    for stored in found:
        table.add_row(
            escape(stored.target.id),
            stored.limit.describe(),
            escape(stored.source),
            _held(stored, now),
            f"{stored.started:,}",
            when(stored.next_start),
        )
    out.print(table)


@limits_group.command("remove")
@config_options
@click.argument("target")
@json_option
def remove(target: str, as_json: bool) -> None:
    """Remove TARGET's limit; a declared one holds again.

    A limit the config's [[limits]] or an executor of its repositories
    declares for TARGET takes the removed one's place at once.
    """
    with open_limits() as (limits, _now):
        removal = limits.remove(target)
    name = removal.removed.target.id
    in_force = removal.in_force
    if as_json:
        print_json(
            {
                "target": name,
                "removed": removal.removed.as_json(),
                "in_force": None if in_force is None else in_force.as_json(),
            }
        )
        return
    line = f"{name}: removed"
    if in_force is not None:
        line += f"; declared again ({in_force.source}): {in_force.limit.describe()}"
    console().print(line, markup=False)
