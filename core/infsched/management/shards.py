"""A repository's day tables or partitions, found by name.

One table ``TABLE`` with a partition per day (``partitioned``) or tables
``TABLE_YYYYMMDD`` (``multi_table``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import attrs
import sqlalchemy as sa

from infsched.dialects import Dialect


@attrs.frozen
class Shards:
    """A repository's day tables or partitions, as names."""

    kind: str  # "parts" (partitions) or "tables"
    #: The days' tables or partitions, oldest first.
    names: tuple[str, ...]
    #: A partition for rows beyond the last day (MAXVALUE).
    catch_all: bool = False

    def describe(self) -> str:
        """``10 parts 11-20…11-29 +max``: how many, and their first and last day."""
        extra = " +max" if self.catch_all else ""
        if not self.names:
            return "no tables" if not self.catch_all else "catch-all partition only"
        days = [f"{n[-4:-2]}-{n[-2:]}" for n in (self.names[0], self.names[-1])]
        if len(self.names) == 1:
            return f"1 {self.kind[:-1]} {days[0]}{extra}"
        return f"{len(self.names)} {self.kind} {days[0]}…{days[1]}{extra}"


def read_shards(
    conn: sa.Connection, dialect: Dialect, tables: Sequence[str], table_names: Iterable[str]
) -> dict[str, Shards]:
    """The day tables or partitions of each table prefix in `tables`, on `dialect`'s database.

    `table_names` are the database's tables (listed once by the caller).
    """
    names = sorted(table_names)
    partitioning = dialect.range_partitioning
    found = {}
    for table in tables:
        if table in names and partitioning is not None:
            parts = partitioning.partitions(conn, table) or []
            days = tuple(p.name for p in parts if p.upper is not None)
            found[table] = Shards("parts", days, catch_all=len(days) < len(parts))
            continue
        pattern = re.compile(rf"^{re.escape(table)}_\d{{8}}$")
        found[table] = Shards("tables", tuple(n for n in names if pattern.match(n)))
    return found
