"""Logs about jobs: JSON lines carrying the job key, one line per failure, traces at debug."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from infsched.cli.context import AppContext
from infsched.cli.main import cli
from infsched.config import SchedulerConfig
from infsched.dburl import DatabaseUrl
from infsched.engine.binding import RepositoryBinding
from infsched.executors import ExecutorSpec, JobContext, PermanentError
from infsched.jobstore.base import job_key
from infsched.logs import setup_logging
from infsched.management.scheduler import InfiniteScheduler
from infsched.plugins import load_plugins
from tests.engine_support import RecordingSink, Reminder, repository_for, wait_until
from tests.management_support import Seed, now

FAST: dict[str, Any] = {
    "fetch_interval": 0.2,
    "lookahead_window": 1.0,
    "heartbeat_interval": 0.5,
    "job_lease": 5.0,
    "retry_base_delay": 0.05,
    "retry_max_delay": 0.1,
}


@pytest.fixture
def json_logs(
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Callable[[str], list[dict[str, Any]]]]:
    """Configure JSON logging at a level; returns a reader of the lines written so far."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)

    def configure_and_read(level: str) -> list[dict[str, Any]]:
        if level:
            setup_logging(level, "json")
            return []
        err = capsys.readouterr().err
        return [json.loads(line) for line in err.splitlines() if line.startswith("{")]

    yield configure_and_read
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


class TalkingExecutor:
    """Logs through the logger it is given; fails 'flaky' once, rejects 'rejected' for good."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self, job: JobContext[Reminder]) -> None:
        self.runs += 1
        job.logger.info("sending %s (attempt %d)", job.entity.text, job.attempt)
        if job.entity.text == "flaky" and job.attempt == 1:
            raise ConnectionError("gateway blip")
        if job.entity.text == "rejected":
            raise PermanentError("number is not reachable")


def run_jobs(url: DatabaseUrl, texts: list[str], expected_runs: int) -> dict[str, str]:
    """Run one reminder per text; returns {text: job key}."""
    repo = repository_for(url)
    repo.maintain()
    entities = repo.insert_many([Reminder(due=now(), text=t) for t in texts])
    executor = TalkingExecutor()
    spec = ExecutorSpec(name="remind", factory=lambda _s: executor, max_attempts=3)
    config = SchedulerConfig(database_url=url, **FAST)
    with InfiniteScheduler(
        [RepositoryBinding(repo, executor="remind")], config, executors={"remind": spec}
    ) as s:
        wait_until(lambda: executor.runs >= expected_runs, what=f"{expected_runs} runs")
        wait_until(lambda: s.list_jobs(state="waiting") == [], what="no job left waiting")
    return {e.text: job_key("reminders", e.id, e.due) for e in entities}


def job_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "infsched.job"]


def test_every_line_about_a_job_carries_its_key_and_a_failure_is_one_line(
    sqlite_url: DatabaseUrl, json_logs: Callable[[str], list[dict[str, Any]]]
) -> None:
    json_logs("info")
    keys = run_jobs(sqlite_url, ["fine", "flaky", "rejected"], expected_runs=4)
    lines = json_logs("")
    about_jobs = job_lines(lines)
    assert about_jobs
    for line in about_jobs:
        assert line["job_key"] in keys.values(), line
        assert line["message"].startswith(f"[{line['job_key']}] ")
        assert line["repository"] == "reminders"
    sent = Counter(line["job_key"] for line in about_jobs if "sending" in line["message"])
    assert sent == Counter({keys["fine"]: 1, keys["flaky"]: 2, keys["rejected"]: 1})

    failures = [line for line in about_jobs if line["level"] in {"warning", "error"}]
    assert sorted((f["job_key"], f["level"]) for f in failures) == sorted(
        [(keys["flaky"], "warning"), (keys["rejected"], "error")]
    )
    retry = next(f for f in failures if f["job_key"] == keys["flaky"])
    assert "attempt 1 failed, retrying at" in retry["message"]
    assert "ConnectionError: gateway blip" in retry["message"]
    dead = next(f for f in failures if f["job_key"] == keys["rejected"])
    assert (
        "dead-lettered (permanent error): PermanentError: number is not reachable"
        in (dead["message"])
    )
    assert not any("traceback" in line or "Traceback" in line["message"] for line in lines)


def test_at_debug_a_failure_carries_its_stack_trace(
    sqlite_url: DatabaseUrl, json_logs: Callable[[str], list[dict[str, Any]]]
) -> None:
    json_logs("debug")
    keys = run_jobs(sqlite_url, ["flaky"], expected_runs=2)
    [retry] = [
        line
        for line in job_lines(json_logs(""))
        if line["level"] == "warning" and line["job_key"] == keys["flaky"]
    ]
    assert retry["traceback"].startswith("Traceback (most recent call last)")
    assert "ConnectionError: gateway blip" in retry["traceback"]


def test_a_job_dead_lettered_without_running_is_logged_once_with_its_key_and_counted(
    sqlite_url: DatabaseUrl,
    engine_for: Callable[[DatabaseUrl], sa.Engine],
    json_logs: Callable[[str], list[dict[str, Any]]],
) -> None:
    seed = Seed(engine_for(sqlite_url))
    ghost = seed.job(1, repository="reminders", executor="ghost", due=now() - timedelta(seconds=1))
    repo = repository_for(sqlite_url)
    repo.maintain()
    sink = RecordingSink()
    config = SchedulerConfig(database_url=sqlite_url, **FAST)
    json_logs("info")
    with InfiniteScheduler(
        [RepositoryBinding(repo, executor="remind")],
        config,
        executors={"remind": TalkingExecutor()},
        metrics_sinks=[sink],
    ) as s:
        wait_until(lambda: bool(s.list_jobs(state="dead")), what="the dead letter")
    [line] = [x for x in job_lines(json_logs("")) if x["job_key"] == ghost]
    assert line["level"] == "error"
    assert "not run: no executor named 'ghost'" in line["message"]
    assert sink.counters["jobs_dead_lettered_total"] == 1


def test_a_command_run_in_process_leaves_the_root_logger_as_it_found_it(tmp_path: Path) -> None:
    """An embedding application (or click's test runner) keeps its own log handlers."""
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    result = CliRunner().invoke(
        cli,
        ["demo", "--seconds", "1", "--per-kind", "1", "--db", f"sqlite:///{tmp_path / 'd.db'}"],
        obj=AppContext(plugins=load_plugins()),
    )
    assert result.exit_code == 0, result.output
    assert (list(root.handlers), root.level) == before
