"""The notifications plugin's hook implementations."""

from __future__ import annotations

from collections.abc import Iterable

import click

from infsched.executors import ExecutorSpec
from infsched.hookspecs import hookimpl
from infsched_notifications.commands import notifications_group
from infsched_notifications.entity import NotificationEntity
from infsched_notifications.executor import make_executor


@hookimpl
def register_entity_types() -> Iterable[type]:
    return [NotificationEntity]


@hookimpl
def register_executors() -> Iterable[ExecutorSpec]:
    return [
        ExecutorSpec(
            name="notifications",
            factory=make_executor,
            max_attempts=5,
            timeout=60.0,
            description="sends NotificationEntity emails (SMTP) and webhooks (signed POST)",
        )
    ]


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(notifications_group)
