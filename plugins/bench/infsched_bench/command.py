"""``infsched bench``: measure throughput and memory on a real database."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from infsched.cli.context import app_context, config_options, requires_plugins
from infsched.cli.output import note, stdout
from infsched.flow_limits import FlowLimit
from infsched_bench.stages import Bench, Result

#: Stage -> rows it handles unless --rows says otherwise.
DEFAULT_ROWS = {
    "insert": 100_000,
    "scan": 1_000_000,
    "schedule": 100_000,
    "execute": 100_000,
    "lag": 0,
    "memory": 1_000_000,
    "cluster": 100_000,
    # The execute stage on the server and on a 3-member Galera cluster it starts, in turns.
    "galera": 100_000,
    # One node on each of one and two independent servers (this one, one it starts), at once.
    "primaries": 100_000,
}


def _node_counts(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        counts = [int(n) for n in value.split(",") if n.strip()]
    except ValueError:
        counts = []
    if not counts or any(n < 1 or n > 16 for n in counts):
        raise click.BadParameter(f"{value!r}: expected node counts from 1 to 16, e.g. 1,2")
    return counts


def _stages(value: str) -> list[str]:
    names = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in names if s not in DEFAULT_ROWS]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown stage(s) {', '.join(unknown) or '(none)'}; choose from "
            f"{', '.join(DEFAULT_ROWS)}"
        )
    return names


@click.command("bench")
@config_options
@click.option(
    "--stage",
    "stage_list",
    default="insert",
    show_default=True,
    help=f"Comma-separated stages: {', '.join(DEFAULT_ROWS)}.",
)
@click.option(
    "--rows",
    type=click.IntRange(min=1000),
    default=None,
    help="Rows per stage [default: per stage].",
)
@click.option(
    "--rate",
    type=click.IntRange(min=10),
    default=2000,
    show_default=True,
    help="Jobs per second for the lag stage.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=5),
    default=60.0,
    show_default=True,
    help="How long the lag stage produces.",
)
@click.option(
    "--nodes",
    default="1,2",
    show_default=True,
    callback=_node_counts,
    help="Cluster stage: node processes per run, comma-separated.",
)
@click.option(
    "--failover/--no-failover",
    default=True,
    show_default=True,
    help="Cluster stage: also run three nodes, one SIGKILLed and restarted twice (~4 min).",
)
@click.option(
    "--limit-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Execute stage: limit its executor to this many starts per second (a rate far "
    "above the stage's measures what a limit that never binds costs).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per result line.")
@requires_plugins
def bench(
    stage_list: str,
    rows: int | None,
    rate: int,
    seconds: float,
    nodes: list[int],
    failover: bool,
    limit_rate: float | None,
    as_json: bool,
) -> None:
    """Benchmark the database the URL names, in throwaway databases dropped afterwards."""
    app = app_context()
    server = app.loaded().config.database_url
    stages = _stages(stage_list)
    results: list[Result] = []
    for stage in stages:
        runner = Bench(
            server,
            app.plugins,
            rows or DEFAULT_ROWS[stage] or 1000,
            progress=note,
            execute_limit=None if limit_rate is None else FlowLimit(rate=limit_rate, burst=1000),
        )
        if stage == "lag":
            found = runner.lag(rate, seconds)
        elif stage == "cluster":
            found = runner.cluster(nodes, with_failover=failover)
        else:
            found = getattr(runner, stage)()
        for result in found:
            result.setdefault(
                "server", server.where if server.scheme.server else server.scheme.dialect
            )
            results.append(result)
            if as_json:
                click.echo(json.dumps(result))
    if not as_json:
        _print(results)


def _print(results: list[Result]) -> None:
    table = Table(title="infsched bench")
    keys: list[str] = []
    for result in results:
        keys += [k for k in result if k not in keys]
    for key in keys:
        table.add_column(
            key, justify="right" if key not in {"stage", "backend", "server"} else "left"
        )
    for result in results:
        table.add_row(*(_show(result.get(k)) for k in keys))
    stdout().print(table)


def _show(value: Any) -> str:
    return "" if value is None else str(value)
