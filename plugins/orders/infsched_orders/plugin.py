"""The orders plugin's hook implementations."""

from __future__ import annotations

from collections.abc import Iterable

from infsched.hookspecs import hookimpl
from infsched_orders.entity import OrderEntity


@hookimpl
def register_entity_types() -> Iterable[type]:
    return [OrderEntity]
