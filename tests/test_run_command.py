"""`infsched run` as a real process: serves its repositories, stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from infsched.config import load_config
from infsched.configured_repositories import build_repositories
from infsched.dburl import DatabaseUrl
from infsched.jobstore.tables import jobs
from infsched.plugins import load_plugins
from infsched.repositories.base import ShardingRepository
from infsched_sms import SmsEntity
from tests.engine_support import wait_until

INFSCHED = str(Path(sys.executable).with_name("infsched"))


def write_config(path: Path, url: DatabaseUrl) -> Path:
    config = path / "infsched.toml"
    config.write_text(
        f"""
database_url = "{url.sqlalchemy_url.render_as_string(hide_password=False)}"
fetch_interval = 0.5
lookahead_window = 2
heartbeat_interval = 0.5
job_lease = 5

[[repositories]]
name = "texts"
entity = "SmsEntity"
executor = "sms"

[plugins.sms]
transport = "console"
"""
    )
    return config


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_then_exits_zero_on_signal(
    tmp_path: Path, every_url: DatabaseUrl, signum: signal.Signals
) -> None:
    config_path = write_config(tmp_path, every_url)
    [configured] = build_repositories(load_config(config_path).config, load_plugins())
    repo = configured.repository
    repo.maintain()
    due = datetime.now(UTC) + timedelta(seconds=1)
    repo.insert_many(
        [
            SmsEntity(
                scheduled_time=due,
                phone_number="+4915112345678",
                sender="ACME",
                message=f"hello {i}",
            )
            for i in range(5)
        ]
    )
    process = subprocess.Popen(
        [INFSCHED, "run", "--config", str(config_path), "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        wait_until(
            lambda: (
                repo.find_unscheduled(repo.retention_horizon(), due + timedelta(days=1), 1) == []
            ),
            timeout=20,
            what="the node to schedule the texts",
        )
        wait_until(lambda: _hot_jobs(repo) == 0, timeout=20, what="the texts to be sent")
    finally:
        process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
        repo.engine.dispose()
    assert process.returncode == 0, output
    assert output.count("SMS ACME -> +4915112345678") == 5
    assert "stopped" in output


def _hot_jobs(repo: ShardingRepository[SmsEntity, int]) -> int:
    """Jobs in the hot table; -1 before the node has created it."""
    with repo.engine.connect() as conn:
        if not sa.inspect(conn).has_table("infsched_jobs"):
            return -1
        return int(conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one())


def test_run_refuses_a_database_that_does_not_answer_with_one_line(tmp_path: Path) -> None:
    url = DatabaseUrl("mysql+pymysql://someone:secret@127.0.0.1:1/nowhere")
    result = subprocess.run(
        [INFSCHED, "run", "--config", str(write_config(tmp_path, url))],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot connect to the database at 127.0.0.1:1 ")
    assert "secret" not in result.stderr
