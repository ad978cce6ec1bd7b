"""Names that match nothing are refused with one line naming what exists, and change nothing.

A repository exists when the config names it or the database knows it (a
fetch lease, a job, a pause); see docs/operations.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from infsched.config import SchedulerConfig
from infsched.dburl import DatabaseUrl
from infsched.engine.binding import RepositoryBinding
from infsched.engine.controls import Controls
from infsched.management import JobAdmin, UnknownRepositoryError
from infsched.management.scheduler import InfiniteScheduler
from infsched.schema import nodes, pauses
from tests.engine_support import RecordingExecutor, repository_for
from tests.management_support import Cli, Seed, clean_cli

EXPECTED = "no repository named 'nosuchrepo'; the repositories are: notifications, orders, sms"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    return clean_cli(capsys, monkeypatch, tmp_path)


@pytest.fixture
def seed(every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]) -> Seed:
    """sms configured here; orders served by another node (its fetch lease); a notifications job."""
    seed = Seed(engine_for(every_url))
    seed.lease("fetch:orders", "node-b", {})
    seed.job(7, repository="notifications", executor="notifications")
    return seed


def config(tmp_path: Path, seed: Seed) -> str:
    path = tmp_path / "infsched.toml"
    url = seed.engine.url.render_as_string(hide_password=False)
    path.write_text(
        f'database_url = "{url}"\n\n'
        '[[repositories]]\nname = "sms"\nentity = "SmsEntity"\nexecutor = "sms"\n'
    )
    return str(path)


def contents(seed: Seed) -> tuple[dict[str, str], list[str]]:
    with seed.engine.connect() as conn:
        paused = sorted(conn.execute(sa.select(pauses.c.scope)).scalars())
    return seed.states(), paused


@pytest.mark.parametrize(
    "args",
    [
        ("pause", "nosuchrepo"),
        ("resume", "nosuchrepo"),
        ("jobs", "list", "--repo", "nosuchrepo"),
        ("jobs", "show", "7", "--repo", "nosuchrepo"),
        ("jobs", "retry", "--repo", "nosuchrepo"),
        ("jobs", "retry", "7", "--repo", "nosuchrepo"),
        ("jobs", "run-now", "7", "--repo", "nosuchrepo"),
        ("jobs", "cancel", "7", "--repo", "nosuchrepo"),
    ],
)
def test_an_unknown_repository_is_refused_naming_those_there_are(
    cli: Cli, seed: Seed, tmp_path: Path, args: tuple[str, ...]
) -> None:
    before = contents(seed)
    result = cli(*args, "--config", config(tmp_path, seed))
    assert (result.code, result.out) == (1, "")
    assert result.err == f"error: {EXPECTED}\n"
    assert contents(seed) == before

    as_json = cli(*args, "--config", config(tmp_path, seed), "--json")
    assert as_json.code == 1
    assert json.loads(as_json.err) == {"error": EXPECTED}
    assert contents(seed) == before


def test_repositories_known_to_the_config_or_the_database_and_star_are_taken(
    cli: Cli, seed: Seed, tmp_path: Path
) -> None:
    path = config(tmp_path, seed)
    for name in ("sms", "orders", "notifications"):  # configured, a fetch lease, a job
        assert cli("pause", name, "--config", path).code == 0
    assert cli("pause", "*", "--config", path, "--json").json() == {
        "paused": ["*", "notifications", "orders", "sms"]
    }
    assert cli("resume", "*", "--config", path).code == 0
    # A pause names its repository too, so it can be lifted from a machine without the config.
    assert cli("resume", "orders", "--db", seed.engine.url.render_as_string(False)).code == 0
    assert contents(seed)[1] == ["notifications", "sms"]


def test_without_any_repository_the_error_says_there_is_none(
    sqlite_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    seed = Seed(engine_for(sqlite_url))
    with pytest.raises(UnknownRepositoryError) as err:
        JobAdmin(seed.database, seed.history).pause("sms")
    assert str(err.value).startswith("no repository named 'sms'; none is configured")
    assert Controls(seed.database).paused(fresh=True) == set()


def test_partitions_refuse_a_repository_that_is_not_configured(
    cli: Cli, seed: Seed, tmp_path: Path
) -> None:
    result = cli("partitions", "status", "--repo", "nosuchrepo", "--config", config(tmp_path, seed))
    assert (result.code, result.out) == (1, "")
    assert result.err == (
        "error: no repository named 'nosuchrepo' is configured (configured: sms)\n"
    )


def test_the_python_api_refuses_unknown_repositories_too(every_url: DatabaseUrl) -> None:
    repo = repository_for(every_url)
    binding = RepositoryBinding(repo, executor="remind")
    scheduler = InfiniteScheduler(
        [binding],
        SchedulerConfig(database_url=every_url),
        executors={"remind": RecordingExecutor()},
    )
    try:
        scheduler.store.create_schema()
        with pytest.raises(UnknownRepositoryError, match="the repositories are: reminders"):
            scheduler.pause("remindrs")
        with pytest.raises(UnknownRepositoryError):
            scheduler.list_jobs(repository="remindrs")
        scheduler.pause("reminders")
        scheduler.pause()
        assert scheduler.controls.paused(fresh=True) == {"*", "reminders"}
    finally:
        scheduler.engine.dispose()
        repo.engine.dispose()


def test_a_plugin_section_that_nothing_reads_is_refused_before_the_node_starts(
    cli: Cli, seed: Seed, tmp_path: Path
) -> None:
    path = Path(config(tmp_path, seed))
    path.write_text(path.read_text() + '\n[plugins.smss]\ntransport = "kannel"\n')
    result = cli("run", "--config", str(path))
    assert (result.code, result.out) == (1, "")
    assert result.err.count("\n") == 1
    assert result.err.startswith(
        "error: config section [plugins.smss] names no plugin or metrics sink; "
        "the sections that are read are: "
    )
    assert all(name in result.err for name in ("log", "notifications", "orders", "sms"))
    with seed.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(nodes)).scalar_one() == 0
