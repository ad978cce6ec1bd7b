"""HistorySearch: outcomes filtered by state, repository, executor, node and time, a page at a time.

Pages are keyset pages, newest first: a page ends at some (finished_at, id)
and the next one starts just below it (a `Cursor`), so page 1,000 costs what
page 1 costs and rows recorded meanwhile neither shift nor repeat a page.

Only the tables that can hold the time range are read: on SQLite the day
tables of its days, on MySQL/MariaDB and PostgreSQL the one partitioned table, which the
server prunes to the partitions of the range.  Within a day, a state or a
repository filter reads its own index, (state, finished_at, id) or
(repository, finished_at, id), in descending order and stops at the page's
end; executor and node filters ride the (finished_at, id) index the same
way, checking each row (they get no index of their own: every index costs
every outcome written).  Like `HistoryReader`, it never creates or alters
anything.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.clock import require_utc, utc_naive
from infsched.database import Database
from infsched.dialects import DatabaseErrorKind
from infsched.engine.history import HISTORY_REPOSITORY, JobOutcome
from infsched.entities import entity_spec
from infsched.errors import InfschedError
from infsched.jobstore.base import Outcome
from infsched.management.history import HistoryReader
from infsched.repositories.day_sharded import missing_indexes
from infsched.repositories.entity_rows import EntityRows

#: The states an outcome can be in.
OUTCOME_STATES = tuple(o.value for o in Outcome)
#: The most outcomes one page holds.
MAX_PAGE = 10_000

_SPEC = entity_spec(JobOutcome)
_ROWS = EntityRows(_SPEC)
_CURSOR = re.compile(r"^(\d{8}T\d{6}\.\d{6}Z):(\d{1,19})$")
_MAX_ID = 2**63 - 1


class HistoryQueryError(InfschedError):
    """A history query that cannot be answered as asked (a bad cursor, state or range)."""


@attrs.frozen
class Cursor:
    """Where a page ended: the next page holds outcomes older than (finished_at, id)."""

    finished_at: datetime
    id: int

    def __str__(self) -> str:
        return f"{self.finished_at.astimezone(UTC):%Y%m%dT%H%M%S.%fZ}:{self.id}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        match = _CURSOR.match(text.strip())
        finished = None
        if match is not None and int(match.group(2)) <= _MAX_ID:
            with contextlib.suppress(ValueError):  # eight digits that are no date
                finished = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S.%fZ")
        if match is None or finished is None:
            raise HistoryQueryError(
                f"cursor {text!r} is not one that `jobs history` printed "
                "(TIME:ID, e.g. 20250101T120000.000000Z:123456)"
            )
        return cls(finished.replace(tzinfo=UTC), int(match.group(2)))


@attrs.frozen(kw_only=True)
class HistoryFilter:
    """Which outcomes: each given field must match; `since` inclusive, `until` exclusive."""

    state: str | None = None
    repository: str | None = None
    #: One entity's outcomes (with `repository`: a schedule's runs are its name's).
    entity_id: str | None = None
    executor: str | None = None
    node: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __attrs_post_init__(self) -> None:
        if self.state is not None and self.state not in OUTCOME_STATES:
            raise HistoryQueryError(
                f"state {self.state!r} is invalid; expected {', '.join(OUTCOME_STATES)}"
            )
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                require_utc(value, name)
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise HistoryQueryError(
                f"since {self.since.isoformat()} is not before until {self.until.isoformat()}"
            )


@attrs.frozen
class HistoryPage:
    """One page of outcomes, newest first, and the cursor of the next page (None: the last)."""

    outcomes: tuple[JobOutcome, ...]
    next: Cursor | None

    def as_json(self) -> dict[str, Any]:
        return {
            "outcomes": [outcome_json(o) for o in self.outcomes],
            "next": None if self.next is None else str(self.next),
        }


def outcome_json(outcome: JobOutcome) -> dict[str, Any]:
    """An outcome as JSON holds it: times in ISO-8601 with their UTC offset."""
    values: dict[str, Any] = {}
    for name, value in attrs.asdict(outcome, recurse=False).items():
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        elif isinstance(value, Outcome):
            value = value.value
        values[name] = value
    return values


class HistorySearch:
    """Pages of one database's history, read through the tables of the range only."""

    def __init__(self, database: Database, name: str = HISTORY_REPOSITORY) -> None:
        self.engine = database.engine
        self.reader = HistoryReader(name)
        self._dialect = database.dialect
        self._tables: dict[str, sa.Table] = {}
        self._metadata = sa.MetaData()

    def page(
        self, where: HistoryFilter, *, after: Cursor | None = None, limit: int = 100
    ) -> HistoryPage:
        """The `limit` newest outcomes that match `where` and are older than `after`."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise HistoryQueryError(f"limit must be a whole number in 1..{MAX_PAGE}, got {limit!r}")
        found: list[Any] = []
        with self.engine.connect() as conn:
            for name in self._newest_first(conn, where, after):
                query = self.query(name, where, after=after, limit=limit + 1 - len(found))
                try:
                    with self._dialect.statement_scope(conn):
                        found.extend(conn.execute(query).mappings())
                except sa.exc.DBAPIError as exc:
                    if self._dialect.classify(exc) is not DatabaseErrorKind.MISSING_TABLE:
                        raise  # (a day table dropped by maintenance meanwhile holds nothing)
                if len(found) > limit:
                    break
        outcomes = tuple(_ROWS.from_row(row) for row in found[:limit])
        last = outcomes[-1] if len(found) > limit else None
        cursor = None if last is None or last.id is None else Cursor(last.finished_at, last.id)
        return HistoryPage(outcomes, cursor)

    def explain(
        self, where: HistoryFilter, *, after: Cursor | None = None, limit: int = 100
    ) -> dict[str, list[str]]:
        """Per table a page reads, the indexes the database's plan uses for it."""
        with self.engine.connect() as conn:
            return {
                name: self._dialect.indexes_used(
                    conn, self.query(name, where, after=after, limit=limit + 1)
                )
                for name in self._newest_first(conn, where, after)
            }

    def missing_indexes(self, where: HistoryFilter, *, after: Cursor | None = None) -> list[str]:
        """``table.index`` of each index the tables a page reads lack (made by an older release).

        Such a table still answers, reading more rows, until a node's maintenance adds them.
        """
        with self.engine.connect() as conn:
            tables = [self._table(name) for name in self._newest_first(conn, where, after)]
            return [f"{t.name}.{ix.name}" for t, ix in missing_indexes(conn, tables)]

    def query(
        self,
        table_name: str,
        where: HistoryFilter,
        *,
        after: Cursor | None = None,
        limit: int,
    ) -> sa.Select[Any]:
        """One history table's part of a page: newest first, below the cursor."""
        table = self._table(table_name)
        finished, ident = table.c.finished_at, table.c.id
        conditions: list[sa.ColumnElement[bool]] = []
        for name in ("state", "repository", "entity_id", "executor", "node"):
            value = getattr(where, name)
            if value is not None:
                conditions.append(table.c[name] == value)
        if where.since is not None:
            conditions.append(finished >= utc_naive(where.since))
        if where.until is not None:
            conditions.append(finished < utc_naive(where.until))
        if after is not None:
            # A range on finished_at first, so the index reads from the cursor down.
            at = utc_naive(after.finished_at)
            conditions += [finished <= at, sa.or_(finished < at, ident < after.id)]
        return (
            sa.select(*(table.c[n] for n in _ROWS.columns))
            .where(*conditions)
            .order_by(finished.desc(), ident.desc())
            .limit(limit)
        )

    def _newest_first(
        self, conn: sa.Connection, where: HistoryFilter, after: Cursor | None
    ) -> list[str]:
        """The tables that may hold the range (up to the cursor), the newest day first."""
        start = utc_naive(where.since) if where.since is not None else datetime.min
        ends = [utc_naive(where.until)] if where.until is not None else []
        if after is not None:
            ends.append(utc_naive(after.finished_at))
        end = min(ends) if ends else datetime.max
        return sorted((t.name for t in self.reader.tables(conn, start, end)), reverse=True)

    def _table(self, name: str) -> sa.Table:
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = _SPEC.table(
                self._metadata, name, max_name_length=self._dialect.max_identifier_length
            )
        return table
