"""``infsched pause``, ``resume``, ``nodes`` and ``stats``: steering and reading a cluster."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from infsched.cli.admin import LIVENESS_STYLE, console, open_admin, seconds, when
from infsched.cli.context import config_options
from infsched.cli.output import counted, json_option, print_json
from infsched.cluster.nodes import NodeState, judge
from infsched.engine.controls import ALL


def _scopes(paused: frozenset[str]) -> str:
    if not paused:
        return "nothing is paused"
    names = ", ".join("every repository" if s == ALL else s for s in sorted(paused))
    return f"paused: {names}"


@click.command("pause")
@config_options
@click.argument("repo", required=False, metavar="[REPO]")
@json_option
def pause(repo: str | None, as_json: bool) -> None:
    """Stop fetching and claiming for REPO, or for every repository (no REPO, or '*').

    Holds on every node.  Running jobs finish; nothing new starts until
    `infsched resume`.  Nodes see the switch within a second.  REPO must be
    configured or known to the database (a fetch lease, job or pause).
    """
    with open_admin() as (admin, _config):
        paused = admin.pause(repo)
    if as_json:
        print_json({"paused": sorted(paused)})
    else:
        console().print(_scopes(paused))


@click.command("resume")
@config_options
@click.argument("repo", required=False, metavar="[REPO]")
@json_option
def resume(repo: str | None, as_json: bool) -> None:
    """Lift the pause of REPO, or the pause of every repository (no REPO, or '*').

    A repository paused by name stays paused until resumed by name.
    """
    with open_admin() as (admin, _config):
        paused = admin.resume(repo)
    if as_json:
        print_json({"paused": sorted(paused)})
    else:
        console().print(_scopes(paused))


@click.command("nodes")
@config_options
@json_option
def nodes(as_json: bool) -> None:
    """The cluster's nodes: state, liveness, heartbeat age, jobs in flight, database member.

    Liveness is judged against the database's clock with this config's
    heartbeat_interval and job_lease: alive, suspected (two heartbeats
    missed), dead (silent longer than job_lease), or stopped (cleanly).
    """
    with open_admin() as (admin, config):
        rows = admin.nodes()
    liveness = {
        n.node_id: judge(n.state, n.heartbeat_age, config.heartbeat_interval, config.job_lease)
        for n in rows
    }
    if as_json:
        print_json([{**n.as_json(), "liveness": liveness[n.node_id].value} for n in rows])
        return
    table = Table(title=counted(len(rows), "node"))
    headings = (
        "node",
        "host",
        "pid",
        "version",
        "state",
        "liveness",
        "started",
        "heartbeat age",
        "in flight",
        "database member",
    )
    for heading in headings:
        table.add_column(heading, justify="right" if heading in {"pid", "in flight"} else "left")
    for n in rows:
        judged = liveness[n.node_id]
        style = LIVENESS_STYLE[judged]
        table.add_row(
            Text(n.node_id),
            Text(n.host),
            str(n.pid),
            Text(n.version),
            n.state,
            Text(judged.value, style),
            when(n.started_at),
            Text(seconds(n.heartbeat_age), style if judged is not NodeState.STOPPED else ""),
            str(n.in_flight),
            Text(n.database_member or "-"),
        )
    console().print(table)


@click.command("stats")
@config_options
@click.option(
    "--lag-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Lag quantiles over runs finished in the last this many minutes.",
)
@json_option
def stats(lag_minutes: float, as_json: bool) -> None:
    """Jobs per repository and state; executed and failed in the last minute and hour; lag."""
    with open_admin() as (admin, _config):
        found = admin.stats(lag_minutes)
    if as_json:
        print_json(found.as_json())
        return
    table = Table(
        title=f"at {when(found.at)}; {_scopes(frozenset(found.paused))}",
        caption=f"lag: start minus due time of runs finished in the last {lag_minutes:g} min",
    )
    headings = (
        "repository",
        "waiting",
        "due",
        "running",
        "dead",
        "ok 1m",
        "failed 1m",
        "ok 1h",
        "failed 1h",
        "lag p50",
        "lag p99",
    )
    for heading in headings:
        # fold, never cut: a repository's name is shown whole even on a narrow terminal.
        table.add_column(
            heading, justify="left" if heading == "repository" else "right", overflow="fold"
        )
    for r in found.repositories:
        table.add_row(
            escape(r.repository),
            f"{r.waiting:,}",
            f"{r.due:,}",
            f"{r.claimed:,}",
            f"{r.dead:,}",
            f"{r.executed_last_minute:,}",
            f"{r.failed_last_minute:,}",
            f"{r.executed_last_hour:,}",
            f"{r.failed_last_hour:,}",
            seconds(r.lag_p50),
            seconds(r.lag_p99),
        )
    console().print(table)
