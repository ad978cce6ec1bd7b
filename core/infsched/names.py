"""Names that end up in SQL identifiers or CLI output: checked, never trusted."""

from __future__ import annotations

import re

from infsched.errors import InvalidNameError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
MAX_NAME_LENGTH = 48


def check_name(value: object, what: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """Return `value` if it is a plain identifier (letter, then letters/digits/_).

    Such names become parts of table names, so anything else is refused
    rather than quoted or escaped.
    """
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidNameError(
            f"{what} {value!r} is invalid: use a letter followed by letters, digits or '_'"
        )
    if len(value) > max_length:
        raise InvalidNameError(f"{what} {value!r} is too long: at most {max_length} characters")
    return value
