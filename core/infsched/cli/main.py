"""The ``infsched`` entry point: plugins first, then the command line."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import click
import sqlalchemy as sa
from rich.text import Text

from infsched.cli.config_cmd import config_group
from infsched.cli.context import AppContext, config_option, db_option, record_config_flags
from infsched.cli.control_cmd import nodes, pause, resume, stats
from infsched.cli.dashboard import dashboard
from infsched.cli.db_cmd import db_group
from infsched.cli.entities_cmd import entities_group
from infsched.cli.history_cmd import history
from infsched.cli.jobs_cmd import jobs_group
from infsched.cli.limits_cmd import limits_group
from infsched.cli.output import error_text, stderr, wants_json
from infsched.cli.partitions_cmd import partitions_group
from infsched.cli.plugins_cmd import plugins_group
from infsched.cli.run_cmd import demo, run
from infsched.cli.schedules_cmd import schedules_group
from infsched.errors import InfschedError
from infsched.plugins import PluginRegistry, load_plugins
from infsched.version import __version__


@click.group()
@click.version_option(__version__, prog_name="infsched")
@config_option
@db_option
def cli(config_path: Path | None, database_url: str | None) -> None:
    """Infinite Scheduler: persistent, clustered, high-volume job scheduling.

    --config and --db may come before the command (``infsched --db URL jobs list``)
    or after it.
    """
    record_config_flags(config_path, database_url)


cli.add_command(plugins_group)
cli.add_command(config_group)
cli.add_command(db_group)
cli.add_command(partitions_group)
cli.add_command(run)
cli.add_command(demo)
jobs_group.add_command(history)
cli.add_command(jobs_group)
cli.add_command(entities_group)
cli.add_command(schedules_group)
cli.add_command(limits_group)
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


#: click 8.2+ raises this for a group given no command (8.1 prints the help and exits 0).
_NO_ARGS_IS_HELP: tuple[type[click.UsageError], ...] = tuple(
    getattr(click.exceptions, name)
    for name in ("NoArgsIsHelpError",)
    if hasattr(click.exceptions, name)
)


def _print_error(message: str, *, as_json: bool) -> None:
    """One line on stderr: ``error: …``, or a JSON object under --json."""
    if as_json:
        click.echo(error_text(message, as_json=True), err=True)
    else:
        # soft_wrap: the error stays one line however narrow the terminal (or pipe) is.
        stderr().print(Text.assemble(("error: ", "bold red"), message))


def _print_usage(exc: click.UsageError) -> None:
    """click's Usage line and help hint, which the ``error:`` line then follows."""
    ctx = exc.ctx
    if ctx is None:
        return
    hint = ""
    if ctx.command.get_help_option(ctx) is not None:
        hint = f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help.\n"
    click.echo(f"{ctx.get_usage()}\n{hint}", err=True)


def _database_error(exc: sa.exc.DBAPIError) -> str:
    """A database failure no command expected (the server went away mid-command, a table
    of another shape), in one line: the driver's message, without the statement."""
    reason = (str(exc.orig) if exc.orig is not None else "").strip()
    return f"database error: {reason.splitlines()[0] if reason else type(exc).__name__}"


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = wants_json(args)
    try:
        registry = load_plugins()
        root = build_cli(registry)
        root.main(
            args=args, prog_name="infsched", obj=AppContext(plugins=registry), standalone_mode=False
        )
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except _NO_ARGS_IS_HELP as exc:
        # A group without its command: click's help text, or one line under --json.
        if as_json:
            path = exc.ctx.command_path if exc.ctx is not None else "infsched"
            _print_error(f"no command given; `{path} --help` lists them", as_json=True)
        else:
            exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if isinstance(exc, click.UsageError) and not as_json:
            _print_usage(exc)
        _print_error(exc.format_message(), as_json=as_json)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _print_error("aborted", as_json=as_json)
        sys.exit(130)
    except InfschedError as exc:
        _print_error(str(exc), as_json=as_json)
        sys.exit(1)
    except sa.exc.DBAPIError as exc:
        _print_error(_database_error(exc), as_json=as_json)
        sys.exit(1)
    sys.exit(0)
