"""What the repository tests share: entity types, a repository per backend, statement counting."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from infsched.clock import FixedClock
from infsched.dburl import DatabaseUrl
from infsched.entities import column, id_field, sharding_key
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.day_sharded import DayShardedRepository
from infsched.repositories.ids import IdGenerator
from infsched.repositories.multi_table import MultiTableRepository
from infsched.repositories.partitioned import PartitionedRepository

#: "Now" in every test: noon, so that today's rows fall on either side of it.
NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
TODAY = datetime(2024, 3, 10, tzinfo=UTC)
DAY = timedelta(days=1)

#: (backend, database) pairs every API test runs on.
BACKENDS = [
    "multi_table-mysql",
    "multi_table-postgresql",
    "multi_table-sqlite",
    "partitioned-mysql",
    "partitioned-postgresql",
]


@attrs.define(kw_only=True)
class Reminder:
    """A small entity of the tests' own."""

    id: int | None = id_field()
    due: datetime = sharding_key()
    text: str = column(length=20)
    kind: str = column(length=8, index=True, default="note")
    count: int = column(default=0)
    done: bool = column(default=False)
    note: str | None = column(length=50, default=None)


@attrs.define(kw_only=True)
class Label:
    """An entity whose id is a string, so it is never generated."""

    id: str | None = id_field(length=40)
    due: datetime = sharding_key()
    text: str = column(length=20)


def id_of(entity: Any) -> int:
    """The id of a stored entity (declared ``int | None`` because it is None until stored)."""
    assert isinstance(entity.id, int)
    return entity.id


def twin_ids() -> IdGenerator:
    """A generator whose ids repeat those of every other twin: one node, a stopped clock.

    Only a primary key can catch such a duplicate: no look-up guards generated ids.
    """
    return IdGenerator(node=3, now_ms=lambda: 1_750_000_000_000)


def reminder(due: datetime, text: str = "x", **kwargs: Any) -> Reminder:
    return Reminder(due=due, text=text, **kwargs)


@attrs.frozen
class Backend:
    """One backend on one database: builds repositories there."""

    name: str
    url: DatabaseUrl
    engine: sa.Engine
    cls: type[DayShardedRepository[Any, Any]]

    @property
    def is_partitioned(self) -> bool:
        return self.cls is PartitionedRepository

    def make(
        self,
        entity_type: type[Any] = Reminder,
        *,
        name: str = "reminders",
        clock: FixedClock | None = None,
        retention_days: int = 2,
        precreate_days: int = 1,
        engine: sa.Engine | None = None,
        **options: Any,
    ) -> DayShardedRepository[Any, Any]:
        return self.cls(
            RepositoryOptions(
                name=name,
                entity_type=entity_type,
                engine=engine or self.engine,
                clock=clock or FixedClock(NOW),
                retention_days=retention_days,
                precreate_days=precreate_days,
                **options,
            )
        )


def backend_fixture(*specs: str) -> Any:
    """A fixture giving a Backend for each of `specs` ("multi_table-mysql", ...) in turn."""

    @pytest.fixture(params=list(specs))
    def backend(
        request: pytest.FixtureRequest,
        tmp_path: Path,
        engine_for: Callable[[DatabaseUrl], sa.Engine],
    ) -> Backend:
        kind, database = request.param.split("-")
        if database != "sqlite":
            factory: Callable[[], DatabaseUrl] = request.getfixturevalue(
                f"{database}_database_factory"
            )
            url = factory()
        else:
            url = DatabaseUrl(f"sqlite:///{tmp_path / 'repositories.db'}")
        cls = MultiTableRepository if kind == "multi_table" else PartitionedRepository
        return Backend(request.param, url, engine_for(url), cls)

    return backend


@contextmanager
def statements(engine: sa.Engine) -> Iterator[list[str]]:
    """Every SQL statement sent through `engine` meanwhile, one entry per round trip."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def table_names(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())
