"""Entities with no job yet: `jobs show` reports them pending; run-now, cancel and retry
take their ids with --repo, safely against fetch cycles racing for the same entities."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from infsched.config import SchedulerConfig, load_config
from infsched.configured_repositories import build_repositories
from infsched.dburl import DatabaseUrl
from infsched.engine.binding import RepositoryBinding
from infsched.jobstore.base import job_key
from infsched.jobstore.tables import jobs
from infsched.management.scheduler import InfiniteScheduler
from infsched.plugins import load_plugins
from infsched.repositories.base import ShardingRepository
from infsched_sms import SmsEntity
from tests.engine_support import RecordingExecutor, Reminder, repository_for
from tests.management_support import Cli, Seed, clean_cli, now


@attrs.frozen
class Setup:
    cli: Cli
    config: str
    repository: ShardingRepository[Any, Any]
    seed: Seed
    #: An SMS due in two hours: no fetch cycle has reached it.
    entity: SmsEntity

    @property
    def id(self) -> str:
        return str(self.entity.id)

    def run(self, *args: str) -> Any:
        return self.cli(*args, "--config", self.config)

    def job_rows(self) -> list[Any]:
        with self.seed.engine.connect() as conn:
            return list(conn.execute(sa.select(jobs)).mappings())

    def job_at(self) -> datetime | None:
        marked = self.repository.find_with_job_mark(self.entity.id)
        assert marked is not None
        return marked.job_at


@pytest.fixture
def setup(
    every_url: DatabaseUrl,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Setup]:
    url = every_url.sqlalchemy_url.render_as_string(hide_password=False)
    path = tmp_path / "infsched.toml"
    path.write_text(
        f'database_url = "{url}"\n\n'
        '[[repositories]]\nname = "sms"\nentity = "SmsEntity"\nexecutor = "sms"\n'
    )
    [built] = build_repositories(load_config(path, env={}).config, load_plugins(env={}))
    repository = built.repository
    repository.maintain()
    seed = Seed(repository.engine)
    [entity] = repository.insert_many(
        [
            SmsEntity(
                scheduled_time=now().replace(microsecond=0) + timedelta(hours=2),
                phone_number="+4915112345678",
                sender="ACME",
                message="Your table is ready",
            )
        ]
    )
    yield Setup(clean_cli(capsys, monkeypatch, tmp_path), str(path), repository, seed, entity)
    repository.engine.dispose()


def test_a_pending_entity_is_shown_with_its_repository_and_due_time(setup: Setup) -> None:
    due = setup.entity.scheduled_time.astimezone(UTC).isoformat()
    for args in (("jobs", "show", setup.id), ("jobs", "show", setup.id, "--repo", "sms")):
        text = setup.run(*args)
        assert text.code == 0, text.err
        assert text.out == (
            f"sms entity {setup.id}: pending, due {due}, no job yet "
            "(it is fetched within lookahead_window, 30 s, before it is due)\n"
        )
        [status] = setup.run(*args, "--json").json()
        assert status == {
            "repository": "sms",
            "entity_id": setup.id,
            "state": "pending",
            "pending_due": due,
            "live": None,
            "outcomes": [],
        }
    missing = setup.run("jobs", "show", "424242", "--repo", "sms")
    assert missing.code == 1
    assert (missing.out, missing.err) == ("", "error: no job with key or entity id 424242 in sms\n")


def test_run_now_by_entity_id_creates_its_job_due_now_once(setup: Setup) -> None:
    result = setup.run("jobs", "run-now", setup.id, "--repo", "sms", "--json")
    assert result.code == 0, result.err
    assert result.json() == {"updated": 1}
    [row] = setup.job_rows()
    assert row["job_key"] == job_key("sms", setup.entity.id, setup.entity.scheduled_time)
    assert (row["state"], row["attempt"], row["executor"]) == ("waiting", 0, "sms")
    assert row["run_at"].replace(tzinfo=UTC) <= now() + timedelta(seconds=2)
    assert row["due_at"].replace(tzinfo=UTC) == setup.entity.scheduled_time
    assert setup.job_at() is not None, "marked: no fetch cycle creates a second job"
    assert setup.repository.find_unscheduled(now(), now() + timedelta(days=1), 10) == []
    [status] = setup.run("jobs", "show", setup.id, "--json").json()
    assert status["state"] == "waiting"

    # Now the entity has a job: the id names that job, which is made due now again.
    again = setup.run("jobs", "run-now", setup.id, "--repo", "sms")
    assert (again.code, again.out) == (0, "1 job due now\n")
    assert len(setup.job_rows()) == 1


def test_cancel_by_entity_id_keeps_a_pending_entity_from_ever_getting_a_job(
    setup: Setup,
) -> None:
    result = setup.run("jobs", "cancel", setup.id, "--repo", "sms", "--json")
    assert result.code == 0, result.err
    assert result.json() == {"cancelled": 1, "job_keys": [setup.id], "repository": "sms"}
    assert setup.job_rows() == []
    assert setup.job_at() is not None
    assert setup.repository.find_unscheduled(now(), now() + timedelta(days=1), 10) == []
    [status] = setup.run("jobs", "show", setup.id, "--repo", "sms", "--json").json()
    assert status["state"] == "cancelled"
    assert [(o["attempt"], o["started_at"]) for o in status["outcomes"]] == [(0, None)]

    # Cancelled, it has no job to cancel, run or retry: one line says so.
    for command in ("cancel", "run-now", "retry"):
        refused = setup.run("jobs", command, setup.id, "--repo", "sms")
        assert (refused.code, refused.out) == (1, "")
        assert refused.err == (
            f"error: sms entity {setup.id} has no waiting or dead job: its job has finished "
            f"or was cancelled (`infsched jobs show {setup.id} --repo sms` says which)\n"
        )


def test_retry_by_entity_id_retries_its_dead_jobs_and_refuses_a_pending_one(
    setup: Setup,
) -> None:
    refused = setup.run("jobs", "retry", setup.id, "--repo", "sms")
    assert refused.code == 1
    assert refused.err.startswith(f"error: sms entity {setup.id} has no job yet (due ")
    assert refused.err.endswith("); retry applies only to dead jobs\n")
    assert setup.job_at() is None
    assert setup.job_rows() == []

    dead = setup.seed.job(777, state="dead", attempt=3)
    other = setup.seed.job(778, state="dead", attempt=3)
    result = setup.run("jobs", "retry", "777", "--repo", "sms", "--json")
    assert result.code == 0, result.err
    assert result.json() == {"retried": 1}
    assert setup.seed.states() == {dead: "waiting", other: "dead"}
    by_key = setup.run("jobs", "retry", other, "--repo", "sms", "--json")
    assert by_key.json() == {"retried": 1}


def test_an_id_naming_nothing_in_the_repository_is_refused_and_nothing_changes(
    setup: Setup,
) -> None:
    waiting = setup.seed.job(5)
    for command in ("run-now", "cancel", "retry"):
        result = setup.run("jobs", command, waiting, "424242", "--repo", "sms")
        assert (result.code, result.out) == (1, "")
        assert result.err == (
            "error: no job with key or entity id '424242' in sms, "
            "and the repository has no entity of that id\n"
        )
    assert setup.seed.states() == {waiting: "waiting"}
    # Without --repo, arguments are job keys only, as before.
    by_id = setup.run("jobs", "run-now", setup.id)
    assert by_id.code == 1
    assert f"no job with key '{setup.id}'" in by_id.err
    assert setup.job_at() is None


def test_run_now_and_cancel_racing_fetch_cycles_never_schedule_an_entity_twice(
    every_url: DatabaseUrl,
) -> None:
    repo = repository_for(every_url)
    repo.maintain()
    due = now() + timedelta(seconds=10)  # inside the lookahead window: fetchers take them
    entities = repo.insert_many(
        [Reminder(due=due + timedelta(milliseconds=i), text=f"r{i}") for i in range(300)]
    )
    # One entity a batch, so the cycle and the commands below meet on the same entities.
    config = SchedulerConfig(
        database_url=every_url, fetch_interval=5, lookahead_window=30, batch_size=1
    )
    scheduler = InfiniteScheduler(
        [RepositoryBinding(repo, executor="remind")],
        config,
        executors={"remind": RecordingExecutor()},
    )
    scheduler.store.create_schema()
    first = scheduler.status("reminders", entities[0].id)
    assert (first.state, first.pending_due, first.live) == ("pending", entities[0].due, None)
    stop = threading.Event()
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            while not stop.is_set():
                scheduler.run_fetch_cycles()
        except BaseException as exc:
            errors.append(exc)

    fetcher = threading.Thread(target=fetch)
    fetcher.start()
    try:
        # From the last due on: the cycle works from the first, so they meet midway.
        made_due, cancelled = entities[::-2], entities[-2::-2]
        for run, cancel in zip(made_due, cancelled, strict=True):
            assert scheduler.run_now([str(run.id)], "reminders") == 1
            assert scheduler.cancel([str(cancel.id)], "reminders") == 1
    finally:
        stop.set()
        fetcher.join()
        scheduler.engine.dispose()
    assert errors == []
    with repo.engine.connect() as conn:
        rows = list(conn.execute(sa.select(jobs)).mappings())
    assert sorted(r["entity_id"] for r in rows) == sorted(str(e.id) for e in made_due)
    assert all(r["run_at"].replace(tzinfo=UTC) <= now() for r in rows), "each made due now"
    assert repo.find_unscheduled(now() - timedelta(days=1), now() + timedelta(days=1), 100) == []
    repo.engine.dispose()
