"""``infsched schedules …``, and a schedule's runs in ``jobs list|show|history``."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from infsched.dburl import DatabaseUrl
from infsched.jobstore.base import NewJob, Outcome, job_key
from infsched.jobstore.sql import SqlJobStore
from infsched.schedules import SCHEDULE_REPOSITORY, CatchUp, Overlap, RunRules, ScheduledRun
from infsched.schema import schedules as schedules_table
from tests.management_support import Cli, Seed, clean_cli


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    return clean_cli(capsys, monkeypatch, tmp_path)


@pytest.fixture
def seed(every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]) -> Seed:
    return Seed(engine_for(every_url))


NIGHTLY = ("nightly", "--executor", "sms", "--cron", "30 2 * * *", "--zone", "Europe/Berlin")


def stored(seed: Seed) -> list[tuple[object, ...]]:
    """Every schedule row as it is: what a refused command must leave unchanged."""
    with seed.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(schedules_table).order_by("name"))]


def test_add_by_flags_then_list_show_and_next(cli: Cli, seed: Seed) -> None:
    db = ("--db", seed.url())
    first = cli("schedules", "add", *NIGHTLY, "--payload", '{"to": ["ops"]}', *db)
    assert (first.code, first.out, first.err) == (0, "nightly: added\n", "")
    assert cli("schedules", "add", *NIGHTLY, "--payload", '{"to": ["ops"]}', *db).out == (
        "nightly: unchanged\n"
    )
    assert cli("schedules", "add", *NIGHTLY, "--priority", "3", *db).out == "nightly: replaced\n"
    every = cli("schedules", "add", "ping", "--executor", "orders", "--every", "300", "--json", *db)
    assert every.json() == {"ping": "added"}

    [nightly, ping] = sorted(
        cli("schedules", "list", "--json", *db).json(), key=lambda s: s["name"]
    )
    assert (nightly["cron"], nightly["zone"], nightly["priority"]) == (
        "30 2 * * *",
        "Europe/Berlin",
        3,
    )
    assert (nightly["source"], nightly["paused"], nightly["materialized_until"]) == (
        "cli",
        False,
        None,
    )
    assert nightly["payload"] is None  # replaced by the definition without one
    fire = datetime.fromisoformat(nightly["next_fire"])
    assert (fire.hour, fire.minute) == (2, 30)
    assert fire.utcoffset() in (timedelta(hours=1), timedelta(hours=2))  # Berlin's zone
    assert datetime.fromisoformat(nightly["created_at"]).utcoffset() == timedelta(0)
    assert ping["every"] == 300.0

    table = cli("schedules", "list", *db)
    assert table.code == 0
    assert "2 schedules" in table.out
    assert "cron '30 2 * * *'" in table.out
    assert "every 300 s" in table.out

    shown = cli("schedules", "show", "nightly", *db)
    assert "executor: sms" in shown.out
    assert "source: cli" in shown.out
    assert cli("schedules", "show", "nightly", "--json", *db).json()["name"] == "nightly"

    upcoming = cli("schedules", "next", "nightly", "-n", "3", *db).out.splitlines()
    assert len(upcoming) == 3
    times = [datetime.fromisoformat(t) for t in upcoming]
    assert all((t.hour, t.minute) == (2, 30) for t in times)
    assert {b.date() - a.date() for a, b in itertools.pairwise(times)} == {timedelta(days=1)}
    assert cli("schedules", "next", "nightly", "--json", *db).json()[:3] == upcoming
    every_five = [
        datetime.fromisoformat(t) for t in cli("schedules", "next", "ping", "--json", *db).json()
    ]
    assert {b - a for a, b in itertools.pairwise(every_five)} == {timedelta(minutes=5)}


def test_list_and_show_give_each_schedules_last_outcome(cli: Cli, seed: Seed) -> None:
    db = ("--db", seed.url())
    cli("schedules", "add", *NIGHTLY, *db)
    cli("schedules", "add", "ping", "--executor", "orders", "--every", "300", *db)
    t = datetime.now(UTC)
    for state, ago in (
        (Outcome.SUCCEEDED, timedelta(days=2)),
        (Outcome.FAILED, timedelta(hours=30)),  # nightly's newest, more than a day back
        (Outcome.SUCCEEDED, timedelta(hours=31)),
    ):
        seed.outcome("nightly", state, repository=SCHEDULE_REPOSITORY, finished=t - ago)
    seed.outcome("other", Outcome.SUCCEEDED, repository=SCHEDULE_REPOSITORY, finished=t)
    seed.outcome("nightly", Outcome.SUCCEEDED, finished=t)  # a repository's entity, no run of it

    nightly, ping = cli("schedules", "list", "--json", *db).json()
    assert nightly["last_outcome"]["state"] == "failed"
    finished = datetime.fromisoformat(nightly["last_outcome"]["finished_at"])
    assert abs(finished - (t - timedelta(hours=30))) < timedelta(seconds=1)
    assert finished.utcoffset() == timedelta(0)
    assert ping["last_outcome"] is None
    assert (
        cli("schedules", "show", "nightly", "--json", *db).json()["last_outcome"]
        == (nightly["last_outcome"])
    )

    table = cli("schedules", "list", *db).out
    assert "last outcome" in table
    assert "failed" in table
    shown = cli("schedules", "show", "nightly", *db).out.splitlines()
    [last] = [line for line in shown if line.startswith("last outcome: ")]
    shown_state, when = last.removeprefix("last outcome: ").split(" ")
    assert shown_state == "failed"
    assert datetime.fromisoformat(when) == finished  # in Berlin's zone, the same instant
    assert datetime.fromisoformat(when).utcoffset() in (timedelta(hours=1), timedelta(hours=2))
    assert "last outcome: -" in cli("schedules", "show", "ping", *db).out


def test_add_by_definition_and_file(cli: Cli, seed: Seed, tmp_path: Path) -> None:
    db = ("--db", seed.url())
    definition = {"name": "weekly", "executor": "sms", "cron": "0 9 * * mon", "overlap": "queue"}
    assert cli("schedules", "add", "--definition", json.dumps(definition), *db).out == (
        "weekly: added\n"
    )
    path = tmp_path / "defs.json"
    path.write_text(json.dumps([definition, {"name": "often", "executor": "sms", "every": 60}]))
    result = cli("schedules", "add", "--file", str(path), "--json", *db)
    assert result.json() == {"weekly": "unchanged", "often": "added"}
    assert cli("schedules", "show", "weekly", "--json", *db).json()["overlap"] == "queue"


def test_pause_resume_remove_and_unknown_names(cli: Cli, seed: Seed) -> None:
    db = ("--db", seed.url())
    cli("schedules", "add", *NIGHTLY, *db)
    assert cli("schedules", "pause", "nightly", *db).out == "nightly: paused\n"
    assert cli("schedules", "pause", "nightly", *db).out == "nightly: paused already\n"
    assert cli("schedules", "show", "nightly", "--json", *db).json()["paused"] is True
    assert cli("schedules", "resume", "nightly", "--json", *db).json() == {
        "name": "nightly",
        "paused": False,
        "changed": True,
    }
    assert cli("schedules", "resume", "nightly", *db).out == "nightly: not paused\n"
    for command in ("pause", "resume", "remove", "show", "next"):
        result = cli("schedules", command, "nightlyy", *db)
        assert (result.code, result.out) == (1, ""), command
        assert result.err == "error: no schedule named 'nightlyy' (the schedules: nightly)\n"
    assert cli("schedules", "remove", "nightly", *db).out == "nightly: removed\n"
    assert cli("schedules", "list", "--json", *db).json() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("x", "--executor", "nosuch", "--every", "60"),
            "schedule 'x': executor: no executor named 'nosuch' is registered (known: ",
        ),
        (
            ("x", "--executor", "sms", "--cron", "61 * * * *"),
            "schedule 'x': cron: '61 * * * *' is invalid",
        ),
        (
            ("x", "--executor", "sms", "--cron", "0 1 * * *", "--zone", "Mars/Olympus"),
            "schedule 'x': zone: 'Mars/Olympus' is no IANA time zone",
        ),
        (("x", "--executor", "sms", "--every", "0"), "schedule 'x': every: 0.0 is invalid"),
        (
            (
                "x",
                "--executor",
                "sms",
                "--every",
                "60",
                "--start",
                "2026-02-01T00:00:00Z",
                "--end",
                "2026-01-01T00:00:00Z",
            ),
            "schedule 'x': end: 2026-01-01T00:00:00+00:00 is not after start",
        ),
        (
            ("x", "--executor", "sms", "--every", "60", "--start", "2026-02-01T00:00:00"),
            "schedule 'x': start: datetime.datetime(2026, 2, 1, 0, 0) is invalid; expected a "
            "date and time with its offset",
        ),
        (("x", "--executor", "sms"), "schedule 'x': cron or every: give exactly one of them"),
        (
            ("x", "--executor", "sms", "--every", "5", "--payload", "{nope"),
            "schedule 'x': payload: not JSON",
        ),
        (("--executor", "sms", "--every", "5"), "schedules add: give NAME and --executor"),
        (("--definition", "{nope"), "--definition: not JSON"),
        (("--definition", '{"name": "x", "executor": "sms"}'), "schedule 'x': cron or every"),
        (
            (
                "--definition",
                '[{"name": "x", "executor": "sms", "every": 5}, {"name": "x", '
                '"executor": "sms", "every": 6}]',
            ),
            "--definition: two schedules are named 'x'",
        ),
        (
            ("x", "--definition", '{"name": "x", "executor": "sms", "every": 5}'),
            "schedules add: --definition takes no NAME or schedule flags too",
        ),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    cli: Cli, seed: Seed, args: tuple[str, ...], message: str
) -> None:
    db = ("--db", seed.url())
    cli("schedules", "add", *NIGHTLY, *db)
    before = stored(seed)
    result = cli("schedules", "add", *args, *db)
    assert (result.code, result.out) == (1, "")
    assert result.err.startswith(f"error: {message}"), result.err
    assert result.err.count("\n") == 1
    as_json = cli("schedules", "add", *args, "--json", *db)
    assert json.loads(as_json.err)["error"].startswith(message)
    assert stored(seed) == before


def test_an_unknown_executor_in_a_batch_stores_none_of_it(cli: Cli, seed: Seed) -> None:
    batch = [
        {"name": "good", "executor": "sms", "every": 60},
        {"name": "bad", "executor": "nosuch", "every": 60},
    ]
    result = cli("schedules", "add", "--definition", json.dumps(batch), "--db", seed.url())
    assert result.code == 1
    assert "schedule 'bad': executor: no executor named 'nosuch'" in result.err
    assert stored(seed) == []


# -- a schedule's runs among the jobs --

OCCURRENCE = datetime(2026, 12, 2, 10, tzinfo=UTC)


RULES = RunRules(CatchUp.FIRE_ONCE_NOW, Overlap.SKIP, None)


def test_a_schedules_jobs_are_listed_shown_and_in_the_history(cli: Cli, seed: Seed) -> None:
    db = ("--db", seed.url())
    key = job_key(SCHEDULE_REPOSITORY, "nightly", OCCURRENCE)
    assert key == "@schedules:nightly:20261202T100000.000000Z"
    other = job_key(SCHEDULE_REPOSITORY, "hourly", OCCURRENCE)
    store = SqlJobStore(seed.database)
    with seed.engine.begin() as conn:
        for name, job in (("nightly", key), ("hourly", other)):
            run = ScheduledRun(name, OCCURRENCE, {"to": ["ops"]})
            added = store.add_jobs(
                conn,
                [NewJob(job, SCHEDULE_REPOSITORY, "sms", name, OCCURRENCE, 0, RULES.snapshot(run))],
            )
            assert added == 1
    seed.outcome("nightly", Outcome.SUCCEEDED, repository=SCHEDULE_REPOSITORY)
    seed.outcome("hourly", Outcome.FAILED, repository=SCHEDULE_REPOSITORY)
    cli("schedules", "add", *NIGHTLY, *db)

    shown = cli("jobs", "show", key, "--json", *db)
    assert shown.code == 0, shown.err
    [status] = shown.json()
    assert (status["repository"], status["entity_id"], status["state"]) == (
        SCHEDULE_REPOSITORY,
        "nightly",
        "waiting",
    )
    assert cli("jobs", "show", key, *db).code == 0

    listed = cli("jobs", "list", "--schedule", "nightly", "--json", *db)
    assert [j["job_key"] for j in listed.json()] == [key]
    assert (
        cli("jobs", "list", "--schedule", "nightly", "--state", "dead", "--json", *db).json() == []
    )
    assert len(cli("jobs", "list", "--repo", SCHEDULE_REPOSITORY, "--json", *db).json()) == 2
    unknown = cli("jobs", "list", "--schedule", "nosuch", *db)
    assert unknown.err == "error: no schedule named 'nosuch' (the schedules: nightly)\n"
    both = cli("jobs", "list", "--schedule", "nightly", "--repo", "sms", *db)
    assert both.err == "error: --schedule and --repo: give one of them\n"

    history = cli("jobs", "history", "--schedule", "nightly", "--json", *db).json()
    assert [(o["repository"], o["entity_id"]) for o in history["outcomes"]] == [
        (SCHEDULE_REPOSITORY, "nightly")
    ]
    hourly = cli("jobs", "history", "--schedule", "hourly", "--json", *db).json()
    assert [o["state"] for o in hourly["outcomes"]] == ["failed"]
    clash = cli("jobs", "history", "--schedule", "nightly", "--repo", "sms", *db)
    assert clash.err == "error: --schedule and --repo: give one of them\n"
