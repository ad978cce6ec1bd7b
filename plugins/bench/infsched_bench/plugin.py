"""The bench plugin's hooks: ``infsched bench`` on the command line.

The probe (`infsched_bench.probe`) is not registered here: the cluster
harness installs it only for the node processes it starts, so an installation
with the bench never gains a probe entity or executor.
"""

from __future__ import annotations

import click

from infsched.hookspecs import hookimpl
from infsched_bench.command import bench


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(bench)
