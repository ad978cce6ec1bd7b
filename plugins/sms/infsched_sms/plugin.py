"""The SMS plugin's hook implementations."""

from __future__ import annotations

from collections.abc import Iterable

import click

from infsched.executors import ExecutorSpec
from infsched.hookspecs import hookimpl
from infsched_sms.commands import sms_group
from infsched_sms.entity import SmsEntity
from infsched_sms.executor import flow_limit, make_executor


@hookimpl
def register_entity_types() -> Iterable[type]:
    return [SmsEntity]


@hookimpl
def register_executors() -> Iterable[ExecutorSpec]:
    return [
        ExecutorSpec(
            name="sms",
            factory=make_executor,
            max_attempts=5,
            timeout=30.0,
            batch_size=100,
            limit=flow_limit,
            description="sends SmsEntity messages through [plugins.sms] transport",
        )
    ]


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(sms_group)
