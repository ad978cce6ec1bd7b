"""``infsched run`` (a scheduler node) and ``infsched demo`` (the live demo of `make run`)."""

from __future__ import annotations

import signal
import threading
from datetime import timedelta
from types import FrameType

import click
from rich.table import Table

from infsched.cli.context import app_context, config_options, requires_plugins
from infsched.cli.output import counted, json_option, print_json, stderr, stdout
from infsched.clock import Clock, OffsetClock, SystemClock
from infsched.config import from_plugin_section
from infsched.configured_repositories import open_repositories
from infsched.database import connect_once
from infsched.demo import run_demo
from infsched.errors import ConfigError
from infsched.logs import setup_logging
from infsched.management.scheduler import InfiniteScheduler
from infsched.metrics.sink import MetricsSink
from infsched.plugins import PluginRegistry

LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"])


def log_options(fn: click.decorators.FC) -> click.decorators.FC:
    fn = click.option("--log-level", type=LOG_LEVELS, default="info", show_default=True)(fn)
    return click.option(
        "--log-format",
        type=click.Choice(["rich", "json"]),
        default="rich",
        show_default=True,
        help="rich: rich on a terminal, one plain line per record in a file or pipe; "
        "json: one JSON object per line.",
    )(fn)


def metrics_sinks(
    plugins: PluginRegistry, names: tuple[str, ...], sections: dict[str, dict[str, object]]
) -> list[MetricsSink]:
    return [
        from_plugin_section(name, plugins.metrics_sink(name).factory, sections.get(name, {}))
        for name in names
    ]


@click.command("run")
@config_options
@click.option(
    "--repo",
    "repos",
    multiple=True,
    metavar="NAME",
    help="Serve only this repository (repeatable) [default: all configured].",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds in-flight jobs may take to finish after SIGTERM/SIGINT.",
)
@click.option(
    "--clock-offset",
    type=float,
    default=0.0,
    hidden=True,
    help="Test and diagnostic aid: run as if this node's clock were off by SECONDS "
    "(see docs/clustering.md, clock skew).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics on this port (adds the prometheus sink; listens on "
    "127.0.0.1 unless [plugins.prometheus] host says otherwise).",
)
@log_options
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Log one JSON object per line (--log-format json); an error is a JSON object on stderr.",
)
@requires_plugins
def run(
    repos: tuple[str, ...],
    grace: float,
    clock_offset: float,
    metrics_port: int | None,
    log_level: str,
    log_format: str,
    as_json: bool,
) -> None:
    """Run a scheduler node until SIGTERM or SIGINT, then stop gracefully and exit 0."""
    click.get_current_context().call_on_close(
        setup_logging(log_level, "json" if as_json else log_format, stderr())
    )
    app = app_context()
    config = app.loaded().config
    app.plugins.require_sections(config.plugins)
    if not config.repositories and not config.schedules and not app.plugins.schedules():
        raise ConfigError(
            "no repositories configured: add [[repositories]] tables (name, entity, executor) "
            "or [[schedules]] tables to the config file"
        )
    clock: Clock = OffsetClock(timedelta(seconds=clock_offset)) if clock_offset else SystemClock()
    # The job store's database is checked before anything starts: one line, not a traceback.
    connect_once(config.database_url)
    sections = {k: dict(v) for k, v in config.plugins.items()}
    sink_names = config.metrics_sinks
    if metrics_port is not None:
        sections.setdefault("prometheus", {})["port"] = metrics_port
        sink_names = tuple(dict.fromkeys((*sink_names, "prometheus")))
    # Opening checks the repositories' databases: one line, not a traceback, when one is down.
    with open_repositories(
        config, plugins=app.plugins, names=repos or None, clock=clock
    ) as configured:
        scheduler = InfiniteScheduler(
            configured,
            config,
            plugins=app.plugins,
            metrics_sinks=metrics_sinks(app.plugins, sink_names, sections),
            clock=clock,
        )
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        scheduler.start()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            scheduler.stop(grace)


@click.command("demo")
@config_options
@click.option(
    "--seconds",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Entities are due over this many seconds (a fifth already overdue).",
)
@click.option(
    "--per-kind",
    type=click.IntRange(min=1, max=10_000),
    default=20,
    show_default=True,
    help="Entities of each kind (SMS, order, notification).",
)
@json_option
@requires_plugins
def demo(seconds: float, per_kind: int, as_json: bool) -> None:
    """Seed SMS, orders and notifications, and watch one node fire them on time."""
    click.get_current_context().call_on_close(setup_logging("warning", console=stderr()))
    app = app_context()
    config = app.loaded().config
    # Under --json the live view goes to stderr, so stdout holds the summary's JSON alone.
    console = stderr() if as_json else stdout()
    summary = run_demo(config, app.plugins, spread=seconds, per_kind=per_kind, console=console)
    if as_json:
        print_json(
            {
                "database": str(config.database_url),
                "seeded": summary.seeded,
                "seconds": round(summary.seconds, 3),
                "outcomes": dict(sorted(summary.outcomes.items())),
                "complete": summary.complete,
            }
        )
    else:
        console.print(
            f"demo summary: {counted(summary.seeded, 'entity', 'entities')} in "
            f"{summary.seconds:.0f} s ({config.database_url})",
            markup=False,
        )
        table = Table()
        table.add_column("outcome")
        table.add_column("count", justify="right")
        for outcome, count in sorted(summary.outcomes.items()):
            table.add_row(outcome, str(count))
        console.print(table)
    if not summary.complete:
        raise click.ClickException("not every seeded entity reached an outcome in time")
