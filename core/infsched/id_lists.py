"""id_in: ``column IN (…)`` for a batch of integer ids, rendered into the statement.

The hot path names a thousand job or entity ids per statement.  As bound
parameters each id cost SQLAlchemy's expanding-parameter processing and
then PyMySQL's escaping, 0.5 µs an id; rendered as literals (the column's
integer type renders them, so nothing is spliced in unchecked) it is 0.17.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa


def id_in(column: sa.ColumnElement[Any], ids: Iterable[int]) -> sa.ColumnElement[bool]:
    """``column IN (ids)`` with the ids written into the SQL text."""
    return column.in_(sa.bindparam(None, list(ids), expanding=True, literal_execute=True))
