"""The hooks Infinite Scheduler calls: what this plugin registers."""

from __future__ import annotations

from collections.abc import Iterable

from infsched import ExecutorSpec, hookimpl
from infsched_spool.entity import SpoolEntity
from infsched_spool.executor import make_executor


@hookimpl
def register_entity_types() -> Iterable[type]:
    return [SpoolEntity]


@hookimpl
def register_executors() -> Iterable[ExecutorSpec]:
    return [
        ExecutorSpec(
            name="spool",
            factory=make_executor,
            max_attempts=3,
            timeout=10.0,
            description="writes SpoolEntity documents into [plugins.spool] directory",
        )
    ]
