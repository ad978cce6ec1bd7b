"""SentinelDateTime: a never-NULL DATETIME in which the epoch stands for None.

InnoDB updates a row in place only while it keeps its size.  A NULL column
takes no bytes, so setting it to a value grows the row and InnoDB rewrites
it (delete and re-insert in the page, with a larger undo record).  A column
that is never NULL changes in place: marking an entity scheduled went from
about 25 to 15 µs a row, claiming a job's lease from about 20 to 10 µs
(docs/performance.md).  Python still sees None for "no value".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from infsched.column_types import UtcDateTime

#: What the column holds for None.
EPOCH = datetime(1970, 1, 1)
#: EPOCH as a server default, in the text form SQLAlchemy binds on SQLite too
#: (so ``column = EPOCH`` matches a defaulted row there as well).
EPOCH_TEXT = "1970-01-01 00:00:00.000000"


class SentinelDateTime(UtcDateTime):
    """A `UtcDateTime` in which None is stored as EPOCH.

    ``column.is_(None)`` does not go through the type: compare with EPOCH.
    """

    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime:
        return EPOCH if value is None else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if isinstance(value, str):  # SQLite, through text() queries
            value = datetime.fromisoformat(value)
        return None if value is None or value == EPOCH else value
