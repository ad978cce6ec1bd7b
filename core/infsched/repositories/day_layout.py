"""DayLayout: where a repository's days live, as the parts that read and write them see it.

A backend (`MultiTableRepository`, `PartitionedRepository`) answers these
questions; `EntityCrud` and `JobMarks` ask them, and never learn whether a
day is a table of its own or a partition.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime
from typing import Protocol

import sqlalchemy as sa

from infsched.repositories.segments import Segment


class DayLayout(Protocol):
    """Which tables hold which days, and whether they are laid out yet."""

    def retention_horizon(self) -> datetime:
        """Start (00:00 UTC) of the oldest day still retained."""
        ...

    def segments(
        self, conn: sa.Connection, start: datetime | None, end: datetime | None
    ) -> list[Segment]:
        """The tables holding [start, end) (naive UTC; None is unbounded), in key order."""
        ...

    def table_for_day(self, day: date) -> sa.Table:
        """The table a row of `day` belongs in (which may not exist yet)."""
        ...

    def all_tables(self, conn: sa.Connection) -> list[sa.Table]:
        """Every physical table that exists now, in day order."""
        ...

    def expected_keys(self, table: sa.Table) -> tuple[datetime | None, datetime | None]:
        """The [start, end) (naive UTC; None: open) that the keys of `table`'s rows belong in."""
        ...

    def outside_days(self, table: sa.Table) -> sa.ColumnElement[bool] | None:
        """Rows of `table` whose key lies outside its days, or None if all keys belong."""
        ...

    def prepare_days(self, days: Collection[date], conn: sa.Connection | None) -> None:
        """Make sure rows of `days` can be inserted, through `conn` if that is given."""
        ...

    def forget_day(self, day: date) -> None:
        """The table of `day` turned out not to exist; a backend with a cache drops it."""
        ...

    def ready(self) -> None:
        """Lay out the window once, at the first use."""
        ...

    def ready_beside(self, conn: sa.Connection | None) -> None:
        """`ready`, unless it would have to wait for the caller's transaction `conn`."""
        ...
