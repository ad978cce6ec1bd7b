"""PyMySQL's conversion table, with DATETIME and TIMESTAMP read by the C parser.

PyMySQL parses every DATETIME value with a regular expression and a list of
ints in Python, about 3.6 µs a value; ``datetime.fromisoformat`` does the
same in C in about 0.4 µs.  A claim of 1,000 jobs reads two of them a row,
so this is a measurable part of a worker's time (docs/performance.md).
Values ``fromisoformat`` refuses (MySQL's zero dates, an invalid day) go to
PyMySQL's own converter, which returns them exactly as before.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymysql import converters
from pymysql.constants import FIELD_TYPE


def _datetime(value: str | bytes) -> Any:
    text = value.decode("ascii") if isinstance(value, bytes | bytearray) else value
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return converters.convert_datetime(value)


def conversions() -> dict[Any, Any]:
    """PyMySQL's default `conv` mapping with the faster DATETIME and TIMESTAMP decoders."""
    table: dict[Any, Any] = dict(converters.conversions)
    table[FIELD_TYPE.DATETIME] = _datetime
    table[FIELD_TYPE.TIMESTAMP] = _datetime
    return table
