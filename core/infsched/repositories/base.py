"""The repository protocols: what every repository backend offers, in the parts each caller uses.

`ShardingRepository` is all of it, and what a backend's factory returns.
Its own methods are what an application does with its entities; the
engine depends only on `SchedulingSource` (which entities have no job yet,
and the mark once they have), and maintenance on `ShardMaintenance`.

Ranges are half-open, ``[start, end)``, everywhere; a range whose end is not
after its start is empty.  Datetimes are timezone-aware; a naive one is
refused with an error naming the argument (or the entity field).

Besides the entity's own columns, every physical table has one column the
scheduling engine keeps: ``infsched_job_at`` (the epoch, read as None, until a
job has been created for the entity), read by `find_unscheduled` and set by
`mark_scheduled`.  It is not an entity field and cannot be set through
`update_by_id`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Generic, Protocol, TypeVar

import attrs
import sqlalchemy as sa

from infsched.errors import EntityError

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
K = TypeVar("K", contravariant=True)

#: Ids of misrouted rows a report names.
EXAMPLE_IDS = 5


class DuplicateEntityError(EntityError):
    """An insert names an id that the repository already holds."""

    def __init__(self, message: str, entity_id: object) -> None:
        super().__init__(message)
        self.entity_id = entity_id


class RetentionError(EntityError):
    """An insert is older than the retention horizon: its table is about to be dropped."""


@attrs.frozen
class ShardStatus:
    """One day table or partition, as `status()` reports it."""

    name: str
    day: date | None  # None for the catch-all partition
    rows: int
    earliest: datetime | None
    latest: datetime | None


@attrs.frozen
class LockedEntities:
    """Unscheduled entities of one physical table, locked for scheduling on a connection.

    Only their ids cross the wire (one JSON array), with the smallest and
    largest sharding key (naive UTC) of the lot, which bound every statement
    that then copies or marks them.
    """

    table: sa.Table
    ids: tuple[Any, ...]
    first: datetime
    last: datetime
    #: Those of `ids` whose key lies outside the days this table or partition holds
    #: (another application wrote them into the wrong day table): scheduled all the
    #: same, and reported by the fetcher.
    misrouted: tuple[Any, ...] = ()


@attrs.frozen
class ShardProblem:
    """Something `check()` found that can make a row run late, twice or never."""

    #: ``misrouted`` (a row outside its table's day), ``before_horizon`` (a row due
    #: before the retention horizon), ``missing_day`` (a day of the window without its
    #: table or partition), ``id_source`` (the database's ids are not set up).
    kind: str
    #: The table or partition concerned, or None.
    shard: str | None
    message: str
    rows: int = 0
    #: Of `rows`, those with no job yet.
    unscheduled: int = 0
    example_ids: tuple[Any, ...] = ()


@attrs.frozen
class MarkedEntity(Generic[T]):
    """An entity and the engine's mark on it: when its job was created."""

    entity: T
    #: None while the entity has no job yet (a fetch cycle will create it).
    job_at: datetime | None


@attrs.frozen
class MaintenanceReport:
    """What one `maintain()` run did."""

    created: tuple[str, ...]
    dropped: tuple[str, ...]
    kept: int
    #: Indexes added to existing tables made by an older release (``table.index``).
    indexed: tuple[str, ...] = ()


class ShardedEntities(Protocol[T_co]):
    """Entities of one type, sharded by the UTC day of their sharding key."""

    @property
    def name(self) -> str: ...

    @property
    def entity_type(self) -> type[T_co]: ...

    @property
    def engine(self) -> sa.Engine:
        """The engine holding the tables, so a caller can open a transaction spanning them."""
        ...

    def retention_horizon(self) -> datetime:
        """Start (00:00 UTC) of the oldest day still retained: today - retention_days."""
        ...


class ShardMaintenance(Protocol):
    """The days' tables or partitions: laid out, reported, checked."""

    def maintain(self) -> MaintenanceReport:
        """Create tables/partitions ahead and drop those past retention; idempotent."""
        ...

    def status(self) -> list[ShardStatus]: ...

    def check(self) -> list[ShardProblem]:
        """Misrouted rows, rows due before the horizon, missing days, the id source; [] if none."""
        ...


class SchedulingSource(ShardedEntities[T], ShardMaintenance, Protocol[T, K]):
    """What the engine schedules from: the entities with no job yet, and the mark on them."""

    def find_unscheduled(
        self, start: datetime, end: datetime, limit: int, *, conn: sa.Connection | None = None
    ) -> list[T]:
        """Up to `limit` entities of the range with no job yet, ordered by (sharding key, id).

        On `conn` (a transaction) the rows are locked until it ends, and rows
        locked by another transaction are skipped.
        """
        ...

    def lock_unscheduled(
        self, conn: sa.Connection, start: datetime, end: datetime, limit: int
    ) -> list[LockedEntities]:
        """Up to `limit` unscheduled entities of [start, end), locked on `conn`, per table."""
        ...

    def sources(
        self, locked: Sequence[LockedEntities]
    ) -> list[tuple[sa.Table, sa.ColumnElement[bool]]]:
        """Per table: a WHERE selecting exactly the `locked` entities."""
        ...

    def read_locked(self, conn: sa.Connection, locked: Sequence[LockedEntities]) -> list[T]:
        """The `locked` entities themselves, read on `conn`, by (key, id)."""
        ...

    def mark_locked(
        self, conn: sa.Connection, locked: Sequence[LockedEntities], when: datetime
    ) -> None:
        """Record on `conn` that jobs exist for the `locked` entities."""
        ...

    def mark_keys_scheduled(
        self, conn: sa.Connection, keys: Sequence[tuple[Any, datetime]], when: datetime
    ) -> None:
        """Record on `conn` that jobs exist for the entities of `keys`."""
        ...

    def mark_scheduled(self, conn: sa.Connection, entities: Sequence[T], when: datetime) -> None:
        """Record on `conn` (in the caller's transaction) that jobs exist for `entities`."""
        ...

    def find_with_job_mark(self, entity_id: K) -> MarkedEntity[T] | None:
        """The entity of this id (any retained day) and when its job was created."""
        ...

    def mark_if_unscheduled(self, conn: sa.Connection, entity_id: K, when: datetime) -> bool:
        """Mark one entity on `conn` if it has no job yet; whether this call marked it.

        The WHERE holds "no job yet", so of two transactions racing for the
        entity (a fetch batch, an operator's run-now) exactly one marks it.
        """
        ...


class ShardingRepository(SchedulingSource[T, K], Protocol[T, K]):
    """Entities of one type, sharded by the UTC day of their sharding key.

    What an application does with its entities is declared here: insert,
    find, stream, count, update, delete.  The engine's part is
    `SchedulingSource`, and maintenance's `ShardMaintenance`.
    """

    def insert(self, entity: T, *, conn: sa.Connection | None = None) -> T:
        """Store one entity; returns it with its id set."""
        ...

    def insert_many(self, entities: Sequence[T], *, conn: sa.Connection | None = None) -> list[T]:
        """Store many in multi-row statements, all or none; returns them with their ids set.

        Without `conn` the call is one transaction of its own; with `conn` the
        rows join the caller's transaction, which the caller commits or rolls back.
        """
        ...

    def find_by_id(self, entity_id: K) -> T | None: ...

    def find_by_id_and_date_range(
        self, entity_id: K, start: datetime, end: datetime
    ) -> T | None: ...

    def find_all_by_date_range(
        self, start: datetime, end: datetime, *, batch_size: int = 1000
    ) -> Iterator[T]:
        """Stream the range ordered by (sharding key, id), a page at a time (keyset pagination)."""
        ...

    def find_all_by_ids_and_date_range(
        self, ids: Iterable[K], start: datetime, end: datetime
    ) -> list[T]: ...

    def find_all_before(self, end: datetime, *, batch_size: int = 1000) -> Iterator[T]: ...

    def find_all_after(self, start: datetime, *, batch_size: int = 1000) -> Iterator[T]: ...

    def find_all_by_column(
        self, column: str, value: Any, start: datetime, end: datetime, *, batch_size: int = 1000
    ) -> Iterator[T]:
        """Stream the entities of the range whose field `column` equals `value`."""
        ...

    def count_by_date_range(self, start: datetime, end: datetime) -> int: ...

    def update_by_id(self, entity_id: K, values: Mapping[str, Any]) -> bool: ...

    def update_by_id_and_date_range(
        self, entity_id: K, start: datetime, end: datetime, values: Mapping[str, Any]
    ) -> bool: ...

    def delete_by_id(self, entity_id: K) -> bool: ...

    def delete_all_by_date_range(self, start: datetime, end: datetime) -> int: ...

    def insert_from_select(self, conn: sa.Connection, day: date, rows: sa.Select[Any]) -> int:
        """Insert the rows `rows` selects (every column, in field order) into `day`'s shard."""
        ...

    def new_ids(self, count: int) -> list[int]:
        """Fresh 64-bit ids from the repository's generator."""
        ...
