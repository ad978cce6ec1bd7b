"""The ``infsched`` entry point: plugins first, then the command line."""

from __future__ import annotations

import copy
import sys

import click
from rich.text import Text

from infsched import __version__
from infsched.cli.bench_cmd import bench
from infsched.cli.config_cmd import config_group
from infsched.cli.context import AppContext
from infsched.cli.control_cmd import nodes, pause, resume, stats
from infsched.cli.dashboard import dashboard
from infsched.cli.db_cmd import db_group
from infsched.cli.jobs_cmd import jobs_group
from infsched.cli.output import error_text, stderr, wants_json
from infsched.cli.partitions_cmd import partitions_group
from infsched.cli.plugins_cmd import plugins_group
from infsched.cli.run_cmd import demo, run
from infsched.errors import InfschedError
from infsched.plugins import PluginRegistry, load_plugins


@click.group()
@click.version_option(__version__, prog_name="infsched")
def cli() -> None:
    """Infinite Scheduler: persistent, clustered, high-volume job scheduling."""


cli.add_command(plugins_group)
cli.add_command(config_group)
cli.add_command(db_group)
cli.add_command(partitions_group)
cli.add_command(run)
cli.add_command(demo)
cli.add_command(jobs_group)
cli.add_command(bench)
cli.add_command(pause)
cli.add_command(resume)
cli.add_command(nodes)
cli.add_command(stats)
cli.add_command(dashboard)


def build_cli(registry: PluginRegistry) -> click.Group:
    """A copy of the root group with the plugins' commands added; `cli` itself is left as is."""
    root = copy.copy(cli)
    root.commands = dict(cli.commands)
    registry.add_commands(root)
    return root


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = wants_json(args)
    try:
        registry = load_plugins()
        root = build_cli(registry)
        root.main(args=args, obj=AppContext(plugins=registry), standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if as_json:
            click.echo(error_text(exc.format_message(), as_json=True), err=True)
        else:
            exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo(error_text("aborted", as_json=as_json), err=True)
        sys.exit(130)
    except InfschedError as exc:
        if as_json:
            click.echo(error_text(str(exc), as_json=True), err=True)
        else:
            # soft_wrap: the error stays one line however narrow the terminal (or pipe) is.
            stderr().print(Text.assemble(("error: ", "bold red"), str(exc)))
        sys.exit(1)
    sys.exit(0)
