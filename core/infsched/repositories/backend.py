"""RepositoryBackend: how a plugin offers a way of sharding entities by day."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs
import sqlalchemy as sa

from infsched.clock import Clock, SystemClock
from infsched.database import Database, database_of
from infsched.errors import InvalidArgumentError
from infsched.names import check_name
from infsched.repositories.base import ShardingRepository
from infsched.repositories.ids import IdGenerator, default_id_generator

E = TypeVar("E")


def _non_negative_days(inst: object, field: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"{field.name}: {value!r} must be a whole number of days >= 0")


@attrs.frozen(kw_only=True)
class RepositoryOptions(Generic[E]):
    """Everything a backend needs to build one repository of entities of type `E`."""

    #: The repository's name; also the table prefix (or table name) unless `table` is set.
    name: str = attrs.field(validator=lambda _, __, v: check_name(v, "repository name"))
    entity_type: type[E]
    engine: sa.Engine
    #: Table prefix (multi-table) or table name (partitioned); defaults to `name`.
    table: str | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(lambda _, __, v: check_name(v, "table name")),
    )
    retention_days: int = attrs.field(default=7, validator=_non_negative_days)
    precreate_days: int = attrs.field(default=2, validator=_non_negative_days)
    clock: Clock = attrs.field(factory=SystemClock)
    #: Where ids for entities inserted without one come from; one per process by default.
    id_generator: IdGenerator = attrs.field(factory=default_id_generator)
    #: The handle of `engine` (its dialect); made from `engine` and `clock` when not given.
    database: Database = attrs.field(
        default=attrs.Factory(lambda o: database_of(o.engine, o.clock), takes_self=True)
    )
    #: Whether the engine schedules jobs from these entities.  False leaves out the
    #: ``infsched_job_at`` column and its index, which a repository that only
    #: stores rows (the job history) would otherwise maintain on every insert.
    scheduled: bool = True

    @property
    def table_name(self) -> str:
        return self.table or self.name


RepositoryFactory = Callable[[RepositoryOptions[Any]], ShardingRepository[Any, Any]]


@attrs.frozen
class RepositoryBackend:
    """A named way of building repositories, registered through `register_repository_backends`."""

    name: str = attrs.field(validator=lambda _, __, v: check_name(v, "repository backend name"))
    factory: RepositoryFactory
    description: str = ""
