"""The orders plugin's hook implementations."""

from __future__ import annotations

from collections.abc import Iterable

import click

from infsched.executors import ExecutorSpec
from infsched.hookspecs import hookimpl
from infsched_orders.commands import orders_group
from infsched_orders.entity import OrderEntity
from infsched_orders.executor import make_executor


@hookimpl
def register_entity_types() -> Iterable[type]:
    return [OrderEntity]


@hookimpl
def register_executors() -> Iterable[ExecutorSpec]:
    return [
        ExecutorSpec(
            name="orders",
            factory=make_executor,
            max_attempts=5,
            timeout=30.0,
            description="applies OrderEntity transitions to the orders table (compare-and-set)",
        )
    ]


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(orders_group)
