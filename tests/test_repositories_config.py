"""``[[repositories]]`` in the config, repositories built from it, and ``infsched partitions``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from infsched.cli.main import main
from infsched.config import RepositoryConfig, SchedulerConfig, describe, load_config
from infsched.configured_repositories import build_repositories
from infsched.dburl import DatabaseUrl
from infsched.errors import ConfigError, PluginError
from infsched.plugins import load_plugins
from infsched.repositories.multi_table import MultiTableRepository
from infsched.repositories.partitioned import PartitionedRepository
from infsched_sms import SmsEntity


def raw(url: DatabaseUrl) -> str:
    return url.sqlalchemy_url.render_as_string(hide_password=False)


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


SMS = """
[[repositories]]
name = "sms"
entity = "SmsEntity"
executor = "sms"
"""


# -- the config --


def test_repositories_are_read_from_toml_with_their_defaults(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        SMS
        + """
[[repositories]]
name = "orders"
entity = "OrderEntity"
executor = "orders"
backend = "multi_table"
table = "order_actions"
retention_days = 30
precreate_days = 0
database_url = "sqlite:///orders.db"
priority = 5
""",
    )
    sms, orders = load_config(path, env={}).config.repositories
    assert sms == RepositoryConfig(name="sms", entity="SmsEntity", executor="sms")
    assert (sms.backend, sms.table, sms.retention_days, sms.precreate_days) == (None, None, 7, 2)
    assert (sms.database_url, sms.priority) == (None, 0)
    assert orders.backend == "multi_table"
    assert orders.table == "order_actions"
    assert (orders.retention_days, orders.precreate_days, orders.priority) == (30, 0, 5)
    assert orders.database_url == DatabaseUrl("sqlite:///orders.db")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "retention_dys = 3",
            "unknown key 'retention_dys' in repositories.sms; did you mean 'retention_days'?",
        ),
        ("retention_days = -1", "repositories.sms.retention_days: -1 is invalid"),
        ("retention_days = true", "repositories.sms.retention_days: True is invalid"),
        ("priority = 1.5", "repositories.sms.priority: 1.5 is invalid"),
        ('table = "sms-2"', "repositories.sms.table 'sms-2' is invalid"),
        ('database_url = "postgres://h/db"', "repositories.sms.database_url: unsupported"),
    ],
)
def test_a_bad_repository_key_is_named(tmp_path: Path, extra: str, message: str) -> None:
    path = config_file(tmp_path, SMS + extra + "\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, env={})
    assert message in str(error.value)


def test_required_keys_and_distinct_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"repositories\.sms: 'executor' is required"):
        load_config(config_file(tmp_path, SMS.replace('executor = "sms"', "")), env={})
    with pytest.raises(ConfigError, match="two repositories are named 'sms'"):
        load_config(config_file(tmp_path, SMS + SMS), env={})
    with pytest.raises(ConfigError, match=r"repositories.1sms.name '1sms' is invalid"):
        load_config(config_file(tmp_path, SMS.replace('"sms"\nentity', '"1sms"\nentity')), env={})
    with pytest.raises(ConfigError, match="expected \\[\\[repositories\\]\\] tables"):
        SchedulerConfig(repositories="sms")


def test_the_environment_does_not_set_repositories(tmp_path: Path) -> None:
    # Refused rather than ignored: the operator meant it to change something.
    with pytest.raises(ConfigError) as err:
        load_config(config_file(tmp_path, SMS), env={"INFSCHED_REPOSITORIES": "x"})
    assert str(err.value) == (
        "INFSCHED_REPOSITORIES: repositories is set only in the config file "
        "([[repositories]] tables), not in the environment"
    )


def test_config_show_lists_the_repositories(tmp_path: Path) -> None:
    rows = {
        key: value for key, value, _ in describe(load_config(config_file(tmp_path, SMS), env={}))
    }
    assert rows["repositories"] == "sms (SmsEntity -> sms, auto)"


# -- building repositories --


def test_the_backend_defaults_to_what_the_database_offers(
    mysql_url: DatabaseUrl, sqlite_url: DatabaseUrl
) -> None:
    config = SchedulerConfig(
        database_url=sqlite_url,
        repositories=(
            RepositoryConfig(name="sms", entity="SmsEntity", executor="sms"),
            RepositoryConfig(
                name="big", entity="SmsEntity", executor="sms", database_url=mysql_url
            ),
            RepositoryConfig(
                name="small",
                entity="SmsEntity",
                executor="sms",
                database_url=mysql_url,
                backend="multi_table",
                table="sms_small",
                retention_days=1,
            ),
        ),
    )
    built = build_repositories(config, load_plugins(env={}))
    try:
        assert [(b.backend, type(b.repository)) for b in built] == [
            ("multi_table", MultiTableRepository),
            ("partitioned", PartitionedRepository),
            ("multi_table", MultiTableRepository),
        ]
        assert all(b.repository.entity_type is SmsEntity for b in built)
        assert built[1].repository.engine is built[2].repository.engine  # one per database
        small = built[2].repository
        assert isinstance(small, MultiTableRepository)
        assert (small.prefix, small.options.retention_days) == ("sms_small", 1)
    finally:
        for b in built:
            b.repository.engine.dispose()


def test_unknown_names_are_refused(sqlite_url: DatabaseUrl) -> None:
    plugins = load_plugins(env={})

    def build(repo: RepositoryConfig, names: list[str] | None = None) -> None:
        config = SchedulerConfig(database_url=sqlite_url, repositories=(repo,))
        for b in build_repositories(config, plugins, names=names):
            b.repository.engine.dispose()

    sms = RepositoryConfig(name="sms", entity="SmsEntity", executor="sms")
    with pytest.raises(PluginError, match="no entity type named 'Sms'"):
        build(RepositoryConfig(name="sms", entity="Sms", executor="sms"))
    with pytest.raises(PluginError, match="no repository backend named 'sharded'"):
        build(RepositoryConfig(name="sms", entity="SmsEntity", executor="sms", backend="sharded"))
    with pytest.raises(
        ConfigError, match=r"no repository named 'mail' is configured \(configured: sms\)"
    ):
        build(sms, names=["mail"])


# -- the command line --


@pytest.fixture
def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., tuple[int, str, str]]:
    """Run ``infsched ARGS`` in an empty directory with no INFSCHED_* variables set."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    for var in [v for v in os.environ if v.startswith("INFSCHED_")]:
        monkeypatch.delenv(var)

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(list(args))
        out, err = capsys.readouterr()
        assert isinstance(done.value.code, int)
        return done.value.code, out, err

    return invoke


def test_partitions_maintain_and_status(
    run: Callable[..., tuple[int, str, str]], tmp_path: Path, mysql_url: DatabaseUrl
) -> None:
    path = config_file(
        tmp_path,
        SMS + 'retention_days = 1\nprecreate_days = 1\n\n[[repositories]]\nname = "mail"\n'
        'entity = "SmsEntity"\nexecutor = "mail"\nbackend = "multi_table"\n'
        "retention_days = 0\nprecreate_days = 0\n",
    )
    code, out, err = run("partitions", "maintain", "--config", str(path), "--db", raw(mysql_url))
    assert code == 0, err
    assert "sms: created 4" in out
    assert "pmax" in out
    assert "mail: created 1 (mail_" in out

    engine = sa.create_engine(mysql_url.sqlalchemy_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO sms (id, scheduled_time, phone_number, sender, message, coding, "
            "priority, delivery_report) VALUES (1, UTC_TIMESTAMP(), '+4915112345678', 'ACME', "
            "'hi', 'auto', 0, 0)"
        )
    engine.dispose()
    code, out, err = run(
        "partitions", "status", "--config", str(path), "--db", raw(mysql_url), "--repo", "sms"
    )
    assert code == 0, err
    assert "sms (partitioned, SmsEntity)" in out
    assert "retention 1 d, precreate 1 d" in out
    assert "mail" not in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert set(rows) == {*[n for n in rows if n.startswith("p2")], "pmax"}
    assert len(rows) == 4
    assert sum(" 1 " in line for line in rows.values()) == 1  # the row, in today's partition


def test_partitions_status_never_prints_the_password(
    run: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    path = config_file(
        tmp_path, SMS + 'database_url = "mysql+pymysql://u:Sup3r-s3cret@127.0.0.1:1/x"\n'
    )
    code, out, err = run("partitions", "status", "--config", str(path))
    assert code == 1
    assert "cannot connect to the database at 127.0.0.1:1" in err
    assert "Sup3r-s3cret" not in out + err


def test_partitions_with_nothing_configured(run: Callable[..., tuple[int, str, str]]) -> None:
    code, out, _ = run("partitions", "status")
    assert code == 0
    assert "no repositories configured" in out
    code, _, err = run("partitions", "maintain", "--repo", "sms")
    assert code == 1
    assert "no repository named 'sms' is configured" in err


def test_partitions_check_lists_rows_in_the_wrong_day_table_and_exits_1(
    run: Callable[..., tuple[int, str, str]], tmp_path: Path, sqlite_url: DatabaseUrl
) -> None:
    path = config_file(tmp_path, SMS + "retention_days = 2\nprecreate_days = 1\n")
    db = ("--config", str(path), "--db", raw(sqlite_url))
    assert run("partitions", "maintain", *db)[0] == 0
    code, out, err = run("partitions", "check", *db)
    assert (code, out, err) == (0, "sms: ok\n", "")

    # Another application writes a row due now into tomorrow's table (docs/integrating.md).
    today = datetime.now(UTC)
    wrong = f"sms_{today + timedelta(days=1):%Y%m%d}"
    engine = sa.create_engine(sqlite_url.sqlalchemy_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE sms_id_seq SET next_id = next_id + 1 WHERE slot = 1")
        new_id = conn.exec_driver_sql("SELECT next_id - 1 FROM sms_id_seq").scalar_one()
        conn.exec_driver_sql(
            f"INSERT INTO {wrong} (id, scheduled_time, phone_number, sender, message, coding, "
            "priority, delivery_report) VALUES (?, ?, '+4915112345678', 'ACME', 'hi', 'auto', "
            "0, 0)",
            (new_id, today.strftime("%Y-%m-%d %H:%M:%S.%f")),
        )
        conn.exec_driver_sql(f"DROP TABLE sms_{today:%Y%m%d}")  # and today's table is gone
    engine.dispose()

    code, out, err = run("partitions", "check", *db)
    assert code == 1, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"sms: misrouted {wrong}: 1 row of table {wrong} due outside")
    tomorrow = f"{today + timedelta(days=1):%Y-%m-%d}"
    assert f"due outside its day [{tomorrow}T00:00:00+00:00, " in lines[0]  # times with offset
    assert "(1 without a job yet)" in lines[0]
    assert lines[0].endswith(f"(ids {new_id})")
    assert lines[1].startswith(f"sms: missing_day sms_{today:%Y%m%d}: day {today:%Y-%m-%d} has no")

    code, out, err = run("partitions", "check", "--json", *db)
    assert code == 1, err
    report = json.loads(out)
    assert report["ok"] is False
    (sms,) = report["repositories"]
    assert (sms["repository"], sms["backend"]) == ("sms", "multi_table")
    misrouted, missing = sms["problems"]
    assert misrouted["kind"] == "misrouted"
    assert (misrouted["shard"], misrouted["rows"], misrouted["unscheduled"]) == (wrong, 1, 1)
    assert misrouted["example_ids"] == [new_id]
    assert (missing["kind"], missing["shard"]) == ("missing_day", f"sms_{today:%Y%m%d}")

    # A database that cannot be reached: one line, under --json a JSON object.
    code, out, err = run(
        "partitions",
        "check",
        "--json",
        "--config",
        str(path),
        "--db",
        "sqlite:////nonexistent-dir/x.db",
    )
    assert code == 1
    assert out == ""
    assert "error" in json.loads(err)
