"""The spool example's tests: the executor alone, then one real scheduler node."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from infsched_spool import SpoolEntity
from infsched_spool.executor import make_executor

from infsched.config import SchedulerConfig
from infsched.database import create_engine
from infsched.dburl import DatabaseUrl
from infsched.engine.binding import RepositoryBinding
from infsched.engine.joblog import job_logger
from infsched.engine.scheduler import InfiniteScheduler
from infsched.errors import ConfigError
from infsched.executors import JobContext
from infsched.plugins import load_plugins
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import ShardingRepository
from infsched.repositories.multi_table import MultiTableRepository


def job(entity: SpoolEntity, key: str, attempt: int = 1) -> JobContext[SpoolEntity]:
    return JobContext(entity, key, attempt, entity.due_at, "spool", job_logger(key, "spool"))


def test_a_document_per_job_key_even_on_retry(tmp_path: Path) -> None:
    executor = make_executor({"directory": str(tmp_path)})
    entity = SpoolEntity(
        due_at=datetime(2030, 1, 1, tzinfo=UTC), topic="invoices", payload={"n": 1}
    )
    executor(job(entity, "spool:1:x"))
    executor(job(entity, "spool:1:x", attempt=2))  # a retry rewrites the same file
    [written] = (tmp_path / "invoices").iterdir()
    assert written.name == "spool_1_x.json"
    assert json.loads(written.read_text())["attempt"] == 2


def test_config_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^plugin spool: \[plugins.spool\] directory is missing"):
        make_executor({})
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot be created"):
        make_executor({"directory": str(blocker / "sub")})


def test_topics_are_checked_when_the_entity_is_created() -> None:
    with pytest.raises(ValueError, match="not a valid topic"):
        SpoolEntity(due_at=datetime(2030, 1, 1, tzinfo=UTC), topic="../etc")


def test_a_scheduler_node_spools_due_entities_through_the_plugin(tmp_path: Path) -> None:
    plugins = load_plugins()  # finds this plugin through its entry point
    assert plugins.executors()["spool"].plugin == "spool"
    url = DatabaseUrl(f"sqlite:///{tmp_path / 'infsched.db'}")
    engine = create_engine(url)
    repo: ShardingRepository[SpoolEntity, int] = MultiTableRepository(
        RepositoryOptions(name="spool", entity_type=SpoolEntity, engine=engine)
    )
    repo.maintain()
    due = datetime.now(UTC) + timedelta(seconds=1)
    repo.insert_many([SpoolEntity(due_at=due, topic="t", payload={"i": i}) for i in range(3)])
    config = SchedulerConfig(
        database_url=url,
        fetch_interval=0.2,
        lookahead_window=1.0,
        plugins={"spool": {"directory": str(tmp_path / "out")}},
    )
    scheduler = InfiniteScheduler(
        [RepositoryBinding(repo, executor="spool")], config, plugins=plugins, engine=engine
    )
    with scheduler:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(list((tmp_path / "out").rglob("*.json"))) < 3:
            time.sleep(0.05)
    engine.dispose()
    documents = [json.loads(p.read_text()) for p in (tmp_path / "out" / "t").glob("*.json")]
    assert sorted(d["payload"]["i"] for d in documents) == [0, 1, 2]
