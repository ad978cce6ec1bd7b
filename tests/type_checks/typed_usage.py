"""Repositories used with their types: mypy --strict checks this module (``make types``).

`test_typing.py` also runs it against SQLite, so what type-checks here works.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import infsched
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import ShardingRepository
from infsched.repositories.multi_table import MultiTableRepository
from infsched.repositories.partitioned import PartitionedRepository
from infsched_sms import SmsEntity

START = datetime(2024, 3, 10, tzinfo=UTC)


def sms_repository(
    options: RepositoryOptions[SmsEntity], *, partitioned: bool = False
) -> ShardingRepository[SmsEntity, int]:
    if partitioned:
        return PartitionedRepository(options)
    return MultiTableRepository(options)


def message(text: str, due: datetime = START) -> SmsEntity:
    return SmsEntity(scheduled_time=due, phone_number="+4915112345678", sender="ACME", message=text)


def round_trip(repo: ShardingRepository[SmsEntity, int]) -> list[str]:
    """Insert, find, update and stream: every result is typed SmsEntity, every id int."""
    stored: SmsEntity = repo.insert(message("first"))
    more: list[SmsEntity] = repo.insert_many([message("second"), message("third")])
    assert stored.id is not None
    found: SmsEntity | None = repo.find_by_id(stored.id)
    assert found is not None
    repo.update_by_id(stored.id, {"message": "first, again"})
    wanted: list[int] = [e.id for e in more if e.id is not None]
    picked: list[SmsEntity] = repo.find_all_by_ids_and_date_range(
        wanted, START, START + timedelta(days=1)
    )
    assert len(picked) == 2
    return [e.message for e in repo.find_all_by_date_range(START, START + timedelta(days=1))]


def insert_through_the_public_api(config_path: Path) -> SmsEntity:
    """The three lines of docs/api.md, typed: the repository holds SmsEntity values."""
    config: infsched.SchedulerConfig = infsched.read_config(config_path)
    with infsched.open_repositories(config) as repositories:
        sms: infsched.ShardingRepository[SmsEntity, Any] = repositories.repository("sms", SmsEntity)
        sms.maintain()
        due = datetime.now(UTC) + timedelta(hours=1)
        stored: SmsEntity = sms.insert(message("through the public API", due))
        return stored
