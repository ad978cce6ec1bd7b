"""The notifications plugin's hook implementations."""

from __future__ import annotations

from collections.abc import Iterable

from infsched.hookspecs import hookimpl
from infsched_notifications.entity import NotificationEntity


@hookimpl
def register_entity_types() -> Iterable[type]:
    return [NotificationEntity]
