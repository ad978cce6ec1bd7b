"""Management commands and their Python API: jobs list/show/cancel/retry/run-now,
pause, resume, nodes and stats, against databases with known content."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from infsched.config import SchedulerConfig
from infsched.dburl import DatabaseUrl
from infsched.engine.binding import RepositoryBinding
from infsched.engine.controls import Controls
from infsched.jobstore.base import Outcome
from infsched.jobstore.tables import jobs
from infsched.management import JobAdmin, JobStateError
from infsched.management.scheduler import InfiniteScheduler
from tests.engine_support import RecordingExecutor, Reminder, repository_for, wait_until
from tests.management_support import Cli, Seed, clean_cli, now


def raw(url: DatabaseUrl) -> str:
    return url.sqlalchemy_url.render_as_string(hide_password=False)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    return clean_cli(capsys, monkeypatch, tmp_path)


@pytest.fixture
def seed(every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]) -> Seed:
    return Seed(engine_for(every_url))


def db(seed: Seed) -> str:
    return seed.engine.url.render_as_string(hide_password=False)


def admin(seed: Seed) -> JobAdmin:
    return JobAdmin(seed.database, seed.history)


# -- jobs list --


def test_jobs_list_filters_by_state_repository_and_due_time(cli: Cli, seed: Seed) -> None:
    later = seed.job(1, due=now() + timedelta(hours=1))
    dead = seed.job(2, state="dead", due=now() - timedelta(hours=1), attempt=3, last_error="boom")
    running = seed.job(3, repository="orders", state="claimed", owner="node-a", attempt=1)

    def keys(*args: str) -> list[str]:
        result = cli("jobs", "list", "--db", db(seed), "--json", *args)
        assert result.code == 0, result.err
        return [row["job_key"] for row in result.json()]

    assert keys() == [dead, running, later]  # soonest due first
    assert keys("--state", "dead") == [dead]
    assert keys("--repo", "orders") == [running]
    assert keys("--due-before", (now() + timedelta(minutes=1)).isoformat()) == [dead, running]
    assert keys("--due-before", "2000-01-01T00:00:00Z") == []
    assert keys("--limit", "1") == [dead]
    row = cli("jobs", "list", "--db", db(seed), "--json", "--state", "dead").json()[0]
    assert (row["attempt"], row["last_error"], row["repository"]) == (3, "boom", "sms")

    table = cli("jobs", "list", "--db", db(seed), "--state", "claimed")
    assert table.code == 0
    assert running in table.out
    assert "node-a" in table.out
    assert dead not in table.out


def test_jobs_list_refuses_a_time_without_timezone_and_an_unknown_state(
    cli: Cli, seed: Seed
) -> None:
    naive = cli("jobs", "list", "--db", db(seed), "--due-before", "2025-01-01T12:00:00")
    assert naive.code == 2
    assert "has no timezone" in naive.err
    assert cli("jobs", "list", "--db", db(seed), "--state", "sleeping").code == 2
    with pytest.raises(ValueError, match="naive"):
        admin(seed).list_jobs(due_before=now().replace(tzinfo=None))


def test_commands_refuse_a_database_that_is_not_a_schedulers(cli: Cli, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "other.db") as other:
        other.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    result = cli("jobs", "list", "--db", f"sqlite:///{tmp_path / 'other.db'}")
    assert result.code == 1
    assert "not a scheduler's database" in result.err


# -- jobs show --


def test_jobs_show_finds_a_job_by_key_and_an_entity_by_id(cli: Cli, seed: Seed) -> None:
    due = now() - timedelta(minutes=5)
    key = seed.job(77, state="dead", due=due, attempt=2, last_error="gateway down")
    seed.outcome(77, Outcome.FAILED, key=key, attempt=1, error="gateway down")
    seed.outcome(77, Outcome.DEAD, key=key, attempt=2, error="gateway down")
    seed.outcome(77, Outcome.SUCCEEDED, key="sms:77:earlier")  # another job of the entity

    by_key = cli("jobs", "show", key, "--db", db(seed), "--json")
    assert by_key.code == 0, by_key.err
    [status] = by_key.json()
    assert status["state"] == "dead"
    assert status["live"]["job_key"] == key
    assert "payload" not in status["live"]
    assert [o["state"] for o in status["outcomes"]] == ["failed", "dead"]

    by_entity = cli("jobs", "show", "77", "--db", db(seed), "--json")
    [entity] = by_entity.json()
    assert sorted(o["job_key"] for o in entity["outcomes"]) == sorted([key, key, "sms:77:earlier"])

    text = cli("jobs", "show", key, "--db", db(seed))
    assert "gateway down" in text.out
    assert "dead" in text.out
    missing = cli("jobs", "show", "sms:404:x", "--db", db(seed))
    assert missing.code == 1
    assert missing.out == ""
    assert missing.err == "error: no job with key or entity id sms:404:x\n"
    missing_json = cli("jobs", "show", "sms:404:x", "--db", db(seed), "--json")
    assert missing_json.code == 1
    assert missing_json.out == ""
    assert json.loads(missing_json.err) == {"error": "no job with key or entity id sms:404:x"}


# -- jobs cancel --


def test_jobs_cancel_removes_waiting_and_dead_jobs_and_records_them(cli: Cli, seed: Seed) -> None:
    waiting = seed.job(1, due=now() + timedelta(minutes=10))
    dead = seed.job(2, state="dead", attempt=3, last_error="boom")
    kept = seed.job(3)

    result = cli("jobs", "cancel", waiting, dead, "--db", db(seed), "--json")
    assert result.code == 0, result.err
    assert result.json() == {"cancelled": 2, "job_keys": [waiting, dead]}
    assert seed.states() == {kept: "waiting"}
    for key, attempt in ((waiting, 0), (dead, 3)):
        [status] = admin(seed).show(key)
        assert status.live is None
        assert [(o.state, o.attempt) for o in status.outcomes] == [(Outcome.CANCELLED, attempt)]
        assert status.outcomes[0].node.startswith("cli:")
    assert cli("jobs", "cancel", kept, "--db", db(seed)).out.strip() == "cancelled 1 job"


def test_a_running_job_cannot_be_cancelled_and_nothing_changes(cli: Cli, seed: Seed) -> None:
    waiting = seed.job(1)
    running = seed.job(2, state="claimed", owner="node-b", attempt=1)

    result = cli("jobs", "cancel", waiting, running, "--db", db(seed))
    assert result.code == 1
    assert f"job {running} is claimed on node node-b (attempt 1)" in result.err
    assert "cancel applies only to waiting or dead jobs" in result.err
    assert seed.states() == {waiting: "waiting", running: "claimed"}
    assert admin(seed).show(waiting)[0].outcomes == ()  # no history row either

    unknown = cli("jobs", "cancel", "sms:9:nope", "--db", db(seed))
    assert unknown.code == 1
    assert "no job with key 'sms:9:nope'" in unknown.err


# -- jobs retry --


def test_jobs_retry_puts_dead_letters_back_due_now_with_attempts_reset(
    cli: Cli, seed: Seed
) -> None:
    long_ago = now() - timedelta(hours=3)
    dead = seed.job(1, state="dead", due=long_ago, attempt=3, last_error="boom")
    waiting = seed.job(2, due=now() + timedelta(hours=1))

    refused = cli("jobs", "retry", dead, waiting, "--db", db(seed))
    assert refused.code == 1
    assert f"job {waiting} is waiting" in refused.err
    assert seed.states()[dead] == "dead"

    before = now()
    result = cli("jobs", "retry", dead, "--db", db(seed), "--json")
    assert result.json() == {"retried": 1}
    [row] = admin(seed).list_jobs(state="waiting", due_before=now())
    assert (row.job_key, row.attempt, row.owner) == (dead, 0, None)
    assert before - timedelta(seconds=2) <= row.run_at <= now() + timedelta(seconds=2)
    assert row.due_at == long_ago  # the due time is kept

    assert cli("jobs", "retry", "--db", db(seed)).code == 2  # keys, --repo or --all


def test_bulk_retry_of_a_repository_in_batches_with_a_progress_bar(cli: Cli, seed: Seed) -> None:
    due = now() - timedelta(minutes=1)
    rows = [
        {
            "job_key": f"sms:{i}:x",
            "repository": "sms",
            "executor": "sms",
            "entity_id": str(i),
            "due_at": due.replace(tzinfo=None),
            "run_at": due.replace(tzinfo=None),
            "state": "dead",
            "attempt": 3,
            "payload": "{}",
            "created_at": due.replace(tzinfo=None),
        }
        for i in range(2500)
    ]
    with seed.engine.begin() as conn:
        conn.execute(jobs.insert(), rows)
    other = seed.job(1, repository="orders", state="dead", attempt=3)

    result = cli("jobs", "retry", "--repo", "sms", "--db", db(seed))
    assert result.code == 0, result.err
    assert "2500 dead letters back to waiting" in result.out
    assert "retrying dead letters" in result.err  # the progress bar, on stderr
    assert "2500/2500" in result.err
    states = seed.states()
    assert sum(s == "waiting" for s in states.values()) == 2500
    assert states[other] == "dead"

    calls: list[tuple[int, int]] = []
    assert admin(seed).retry(all_dead=True, progress=lambda d, t: calls.append((d, t))) == 1
    assert calls == [(0, 1), (1, 1)]
    assert set(seed.states().values()) == {"waiting"}


# -- jobs run-now --


def test_jobs_run_now_makes_waiting_jobs_due_now(cli: Cli, seed: Seed) -> None:
    later = seed.job(1, due=now() + timedelta(hours=2))
    dead = seed.job(2, state="dead")

    result = cli("jobs", "run-now", later, "--db", db(seed), "--json")
    assert result.json() == {"updated": 1}
    [row] = admin(seed).list_jobs(repository="sms", state="waiting")
    assert row.run_at <= now() + timedelta(seconds=2)
    assert row.due_at > now() + timedelta(hours=1)

    refused = cli("jobs", "run-now", dead, "--db", db(seed))
    assert refused.code == 1
    assert "run-now applies only to waiting jobs" in refused.err
    with pytest.raises(JobStateError):
        admin(seed).run_now([dead])


# -- pause and resume --


def test_pause_and_resume_one_repository_or_all(cli: Cli, seed: Seed) -> None:
    controls = Controls(seed.database)
    seed.lease("fetch:sms", "node-a", {})  # a node serves sms: the name exists

    assert cli("pause", "sms", "--db", db(seed)).out.strip() == "paused: sms"
    assert cli("pause", "--db", db(seed), "--json").json() == {"paused": ["*", "sms"]}
    assert controls.paused(fresh=True) == {"*", "sms"}
    assert controls.is_paused("orders")

    assert cli("resume", "--db", db(seed), "--json").json() == {"paused": ["sms"]}
    assert controls.paused(fresh=True) == {"sms"}
    assert cli("resume", "sms", "--db", db(seed)).out.strip() == "nothing is paused"
    assert controls.paused(fresh=True) == set()


# -- nodes --


def test_nodes_lists_heartbeat_age_and_jobs_in_flight(cli: Cli, seed: Seed) -> None:
    seed.node("node-a", heartbeat_age=1.0, in_flight=12)
    seed.node("node-b", heartbeat_age=120.0, in_flight=3)

    result = cli("nodes", "--db", db(seed), "--json")
    assert result.code == 0, result.err
    a, b = result.json()
    assert (a["node_id"], a["in_flight"], a["state"], a["pid"]) == ("node-a", 12, "running", 4242)
    assert 0.5 <= a["heartbeat_age"] <= 10
    assert 115 <= b["heartbeat_age"] <= 130

    table = cli("nodes", "--db", db(seed))
    assert "2 nodes" in table.out
    assert "node-b" in table.out
    assert "12" in table.out


# -- stats --


def test_stats_counts_states_recent_outcomes_and_lag_quantiles(cli: Cli, seed: Seed) -> None:
    seed.job(1)
    seed.job(2, due=now() - timedelta(seconds=30))
    seed.job(3, due=now() + timedelta(hours=1))
    seed.job(4, state="claimed", owner="node-a")
    seed.job(5, state="dead")
    for i, lag in enumerate((0.1, 0.2, 0.3, 2.0)):
        seed.outcome(10 + i, Outcome.SUCCEEDED, lag=lag, finished=now() - timedelta(seconds=20))
    seed.outcome(20, Outcome.FAILED, finished=now() - timedelta(seconds=20))
    half_hour = now() - timedelta(minutes=30)
    seed.outcome(21, Outcome.SUCCEEDED, finished=half_hour, lag=50.0)
    seed.outcome(22, Outcome.DEAD, finished=half_hour)
    seed.outcome(23, Outcome.SUCCEEDED, finished=now() - timedelta(hours=2))  # out of every window
    seed.outcome(30, Outcome.SUCCEEDED, repository="orders", finished=now(), lag=1.5)

    result = cli("stats", "--db", db(seed), "--json")
    assert result.code == 0, result.err
    found = {r["repository"]: r for r in result.json()["repositories"]}
    sms = found["sms"]
    assert (sms["waiting"], sms["due"], sms["claimed"], sms["dead"]) == (3, 2, 1, 1)
    assert (sms["executed_last_minute"], sms["failed_last_minute"]) == (4, 1)
    assert (sms["executed_last_hour"], sms["failed_last_hour"]) == (5, 2)
    # Lag over the last 5 minutes: the four successes and the failure (lag 0.1).
    assert sms["lag_samples"] == 5
    assert sms["lag_p50"] == pytest.approx(0.2, abs=1e-3)
    assert sms["lag_p99"] == pytest.approx(2.0, abs=1e-3)
    assert found["orders"]["executed_last_minute"] == 1
    assert found["orders"]["lag_p50"] == pytest.approx(1.5, abs=1e-3)

    wide = JobAdmin(seed.database, seed.history).stats(lag_minutes=60)
    assert next(r for r in wide.repositories if r.repository == "sms").lag_p99 == pytest.approx(
        50.0, abs=1e-3
    )
    table = cli("stats", "--db", db(seed))
    assert "sms" in table.out
    assert "200 ms" in table.out  # lag p50


# -- the Python API on the scheduler --


def test_a_retried_dead_letter_runs_even_under_do_nothing(every_url: DatabaseUrl) -> None:
    repo = repository_for(every_url)
    repo.maintain()
    entity = repo.insert(Reminder(due=now() - timedelta(seconds=1), text="broken"))
    executor = RecordingExecutor()
    executor.permanent = {"broken"}
    config = SchedulerConfig(
        database_url=every_url,
        fetch_interval=0.2,
        lookahead_window=1.0,
        heartbeat_interval=0.5,
        job_lease=5.0,
        misfire_policy="do_nothing",
        misfire_threshold=60,
    )
    with InfiniteScheduler(
        [RepositoryBinding(repo, executor="remind")], config, executors={"remind": executor}
    ) as s:
        wait_until(lambda: bool(s.list_jobs(state="dead")), what="a dead letter")
        [dead] = s.list_jobs(state="dead")
        # Its due time is now beyond misfire_threshold: only its run time says "now".
        with s.engine.begin() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.job_key == dead.job_key)
                .values(due_at=(now() - timedelta(hours=2)).replace(tzinfo=None))
            )
        executor.permanent = set()
        assert s.retry([dead.job_key]) == 1
        wait_until(lambda: executor.count() == 2, what="the retried run")
        wait_until(lambda: s.list_jobs() == [], what="the job to finish")
        states = [o.state for o in s.status("reminders", entity.id).outcomes]
        assert states == [Outcome.DEAD, Outcome.SUCCEEDED]
        assert [c.attempt for c in executor.calls] == [1, 1]
        stats = s.stats()
        assert stats.repositories[0].executed_last_minute == 1
