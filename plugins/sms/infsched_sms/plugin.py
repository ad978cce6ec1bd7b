"""The SMS plugin's hook implementations."""

from __future__ import annotations

from collections.abc import Iterable

from infsched.hookspecs import hookimpl
from infsched_sms.entity import SmsEntity


@hookimpl
def register_entity_types() -> Iterable[type]:
    return [SmsEntity]
