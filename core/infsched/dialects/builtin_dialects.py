"""The built-in dialects as a plugin: registered through the hook any database plugin uses."""

from __future__ import annotations

from collections.abc import Iterable

from infsched.dialects import BUILTIN_DIALECTS, Dialect
from infsched.markers import hookimpl


@hookimpl
def register_dialects() -> Iterable[Dialect]:
    return BUILTIN_DIALECTS
