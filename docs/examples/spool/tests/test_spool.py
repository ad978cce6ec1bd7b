"""The spool example's tests: the executor alone, then one real scheduler node."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from infsched_spool import SpoolEntity
from infsched_spool.executor import make_executor

import infsched
from infsched import ConfigError, JobContext


def job(entity: SpoolEntity, key: str, attempt: int = 1) -> JobContext[SpoolEntity]:
    logger = logging.LoggerAdapter(logging.getLogger("spool"), {"job_key": key})
    return JobContext(entity, key, attempt, entity.due_at, "spool", logger)


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
    config_file = tmp_path / "infsched.toml"
    config_file.write_text(
        f"""
database_url = "sqlite:///{tmp_path / "infsched.db"}"
fetch_interval = 0.2
lookahead_window = 1.0

[[repositories]]
name = "handoffs"
entity = "SpoolEntity"
executor = "spool"

[plugins.spool]
directory = "{tmp_path / "out"}"
"""
    )
    # The three lines of docs/writing-plugins.md, section 8: the plugin is found the
    # way users find it, through its entry point, so this fails if the entry point is wrong.
    config = infsched.read_config(config_file)
    with infsched.open_repositories(config) as repositories:
        handoffs = repositories.repository("handoffs", SpoolEntity)
        assert repositories.plugins.executors()["spool"].plugin == "spool"
        handoffs.maintain()  # what `infsched partitions maintain` does
        due = datetime.now(UTC) + timedelta(seconds=1)
        handoffs.insert_many(
            [SpoolEntity(due_at=due, topic="t", payload={"i": i}) for i in range(3)]
        )
        with infsched.InfiniteScheduler(repositories, config, plugins=repositories.plugins):
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and len(list((tmp_path / "out").rglob("*.json"))) < 3:
                time.sleep(0.05)
    documents = [json.loads(p.read_text()) for p in (tmp_path / "out" / "t").glob("*.json")]
    assert sorted(d["payload"]["i"] for d in documents) == [0, 1, 2]
