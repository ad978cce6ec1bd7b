"""Errors on the command line: one line (or one JSON object), never a traceback or a password."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest

from infsched.dburl import DatabaseUrl
from tests.management_support import Cli, clean_cli
from tests.test_run_command import write_config

SECRET = "Sup3r-s3cret-Pw"

#: Every command that touches the scheduler's database, with the arguments it needs.
DATABASE_COMMANDS = [
    ("run",),
    ("demo", "--seconds", "1", "--per-kind", "1"),
    ("db", "init"),
    ("partitions", "status"),
    ("partitions", "maintain"),
    ("jobs", "list"),
    ("jobs", "show", "texts:1:20250101T000000.000000Z"),
    ("jobs", "cancel", "texts:1:20250101T000000.000000Z"),
    ("jobs", "retry", "--all"),
    ("jobs", "run-now", "texts:1:20250101T000000.000000Z"),
    ("pause",),
    ("resume",),
    ("nodes",),
    ("stats",),
    ("dashboard", "--once"),
    ("limits", "show"),
    ("limits", "set", "executor:sms", "--rate", "5"),
]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    # A config with one repository (`run` and `partitions` need one); every test gives --db.
    write_config(tmp_path, DatabaseUrl(f"sqlite:///{tmp_path / 'unused' / 'x.db'}"))
    return clean_cli(capsys, monkeypatch, tmp_path)


def unreachable_url(case: str, mysql_server: DatabaseUrl, tmp_path: Path) -> str:
    server = mysql_server.sqlalchemy_url
    if case == "wrong password":
        # The test server's root has no password: any password is refused.
        url = server.set(username="root", password=SECRET, database="infsched_absent_too")
    elif case == "refused port":
        url = server.set(password=SECRET, port=closed_port(), database="x")
    elif case == "unknown database":
        url = server.set(database="infsched_no_such_database")
    else:
        return f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'sched.db'}"
    return url.render_as_string(hide_password=False)


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
@pytest.mark.parametrize(
    "case", ["wrong password", "refused port", "unknown database", "bad sqlite path"]
)
def test_an_unreachable_database_is_one_line_without_traceback_or_password(
    cli: Cli, command: tuple[str, ...], case: str, mysql_server: DatabaseUrl, tmp_path: Path
) -> None:
    url = unreachable_url(case, mysql_server, tmp_path)
    result = cli(*command, "--db", url)
    assert result.code != 0
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith("error: cannot connect to the database at "), result.err
    assert "Traceback" not in result.out + result.err
    assert SECRET not in result.out + result.err
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("command", [("jobs", "list"), ("run",), ("partitions", "maintain")])
def test_db_and_config_are_accepted_before_the_command_too(
    cli: Cli, command: tuple[str, ...], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.toml"
    before = cli("--config", str(missing), *command)
    assert before.code == 1
    assert before.err == f"error: config file {missing} does not exist\n"

    url = f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}"
    result = cli("--db", url, *command)
    assert result.err.startswith(f"error: cannot connect to the database at {tmp_path}/nowhere")


def test_a_db_flag_after_the_command_wins_over_one_before_it(cli: Cli, tmp_path: Path) -> None:
    first = f"sqlite:///{tmp_path / 'first' / 'x.db'}"
    second = f"sqlite:///{tmp_path / 'second' / 'x.db'}"
    result = cli("--db", first, "stats", "--db", second)
    assert f"{tmp_path}/second" in result.err


def test_usage_errors_read_error_like_every_other_error(cli: Cli) -> None:
    result = cli("jobs", "list", "--no-such-option")
    assert result.code == 2
    lines = result.err.splitlines()
    assert lines[0].startswith("Usage: infsched jobs list")
    assert lines[-1] == "error: No such option '--no-such-option'."
    assert "Error:" not in result.err


def test_click_exceptions_of_plugin_commands_read_error_too(cli: Cli) -> None:
    result = cli("sms", "send-test", "--to", "not-a-number", "--text", "hi")
    assert result.code == 1
    assert result.err.startswith("error: ")
    assert result.err.count("\n") == 1
    assert "Error:" not in result.err


@pytest.mark.parametrize(
    "args",
    [
        ("jobs", "list", "--json", "--no-such-option"),
        ("jobs", "retry", "--json"),
        ("sms", "send-test", "--json", "--to", "not-a-number", "--text", "hi"),
    ],
    ids=" ".join,
)
def test_usage_errors_under_json_are_one_json_object_on_stderr(
    cli: Cli, args: tuple[str, ...]
) -> None:
    result = cli(*args)
    assert result.code != 0
    assert result.out == ""
    assert result.err.count("\n") == 1
    assert set(json.loads(result.err)) == {"error"}


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_an_infsched_error_under_json_is_one_json_object_on_stderr(
    cli: Cli, command: tuple[str, ...], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'sched.db'}"
    result = cli(*command, "--json", "--db", url)
    assert result.code == 1
    assert result.out == ""
    error = json.loads(result.err)
    assert error["error"].startswith("cannot connect to the database at ")
    assert result.err.count("\n") == 1


@pytest.mark.parametrize("case", ["wrong password", "refused port", "unknown database"])
def test_bench_against_an_unreachable_server_is_one_line(
    cli: Cli, case: str, mysql_server: DatabaseUrl, tmp_path: Path
) -> None:
    # (On SQLite bench works in a temporary file of its own, whatever the URL's path.)
    url = unreachable_url(case, mysql_server, tmp_path)
    result = cli("bench", "--stage", "insert", "--rows", "1000", "--db", url)
    assert result.code == 1
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith("error: cannot connect to the database at "), result.err
    assert SECRET not in result.out + result.err


@pytest.mark.parametrize(
    "case", ["wrong password", "refused port", "unknown database", "bad sqlite path"]
)
def test_orders_events_against_an_unreachable_database_is_one_line(
    cli: Cli, case: str, mysql_server: DatabaseUrl, tmp_path: Path
) -> None:
    url = unreachable_url(case, mysql_server, tmp_path)
    config = tmp_path / "orders.toml"
    config.write_text(f'[plugins.orders]\ndatabase_url = "{url}"\n')
    result = cli("orders", "events", "o-1", "--config", str(config))
    assert result.code == 1
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith("error: cannot connect to the database at "), result.err
    assert "Traceback" not in result.err
    assert SECRET not in result.out + result.err
    assert not (tmp_path / "no").exists()


def test_a_database_error_in_the_middle_of_a_command_is_one_line(cli: Cli, tmp_path: Path) -> None:
    # Every table is there, but infsched_jobs has another shape (a foreign or broken schema):
    # the reachability and table checks pass and the query itself fails.
    path = tmp_path / "odd.db"
    with sqlite3.connect(path) as conn:
        for table in (
            "infsched_leases",
            "infsched_nodes",
            "infsched_pauses",
            "infsched_schedules",
            "infsched_limits",
        ):
            conn.execute(f"CREATE TABLE {table} (x INTEGER)")
        conn.execute("CREATE TABLE infsched_jobs (id INTEGER PRIMARY KEY)")
    for as_json in (False, True):
        result = cli("jobs", "list", "--db", f"sqlite:///{path}", *(["--json"] if as_json else []))
        assert result.code == 1
        assert result.out == ""
        assert result.err.count("\n") == 1, result.err
        message = json.loads(result.err)["error"] if as_json else result.err
        assert "database error: no such column" in message
        assert "SELECT" not in message


def test_a_group_without_its_command_shows_its_help_not_an_error_line(cli: Cli) -> None:
    result = cli("jobs")
    assert result.code in (0, 2)  # click 8.1 exits 0 after the help, 8.2+ exits 2
    text = result.out + result.err
    assert text.startswith("Usage: infsched jobs [OPTIONS] COMMAND [ARGS]...")
    assert "error:" not in text
    assert "retry" in text


@pytest.mark.parametrize(("value", "shown"), [("0", "0"), ("-5", "-5"), ('"abc"', "'abc'")])
def test_a_bad_value_in_a_metrics_sink_table_is_one_line(
    cli: Cli, tmp_path: Path, value: str, shown: str
) -> None:
    config = tmp_path / "infsched.toml"
    config.write_text(config.read_text() + f"\n[plugins.log]\ninterval = {value}\n")
    result = cli("run", "--db", f"sqlite:///{tmp_path / 'sched.db'}")
    assert result.code == 1
    assert result.err == (
        f"error: plugins.log.interval: {shown} is invalid; expected a number of seconds > 0\n"
    )


def test_the_cluster_bench_on_sqlite_is_one_line(cli: Cli, tmp_path: Path) -> None:
    result = cli("bench", "--stage", "cluster", "--db", f"sqlite:///{tmp_path / 'bench.db'}")
    assert result.code == 1
    assert result.err == (
        "error: the cluster stage needs a MySQL/MariaDB or PostgreSQL server "
        "(--db mysql+pymysql://… or postgresql+psycopg://…)\n"
    )


@pytest.mark.parametrize("command", [("db", "init"), ("jobs", "list"), ("stats",)])
def test_a_job_store_no_plugin_registered_is_refused_naming_those_that_are(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    url = f"sqlite:///{tmp_path / 'scheduler.db'}"
    assert cli("db", "init", "--db", url).code == 0
    monkeypatch.setenv("INFSCHED_JOB_STORE", "redis")
    result = cli(*command, "--db", url)
    assert result.code == 1
    assert result.err == "error: job_store: no job store named 'redis' is registered (known: sql)\n"
