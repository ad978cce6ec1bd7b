"""The command line in-process: `config show` and `db init`, run through `main()`."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import sqlalchemy as sa

from infsched import __version__, schema
from infsched.cli.main import cli, main
from infsched.dburl import DatabaseUrl

SECRET = "Sup3r-s3cret"


@attrs.frozen
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., Run]:
    """Run ``infsched ARGS`` in a clean environment, in an empty working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    for var in [v for v in os.environ if v.startswith("INFSCHED_")]:
        monkeypatch.delenv(var)

    def invoke(*args: str) -> Run:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(list(args))
        captured = capsys.readouterr()
        code = done.value.code
        assert isinstance(code, int)
        return Run(code, captured.out, captured.err)

    return invoke


def raw(url: DatabaseUrl) -> str:
    """The URL as a user types it, password included."""
    return url.sqlalchemy_url.render_as_string(hide_password=False)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_version(run: Callable[..., Run]) -> None:
    result = run("--version")
    assert result.code == 0
    assert result.out.strip() == f"infsched, version {__version__}"


def test_building_the_cli_leaves_the_root_group_untouched(run: Callable[..., Run]) -> None:
    before = dict(cli.commands)
    assert run("plugins", "list", "--json").code == 0
    assert run("plugins", "list", "--json").code == 0
    assert cli.commands == before


# -- config show --


def test_config_show_layers_file_env_and_flag_and_names_each_source(
    run: Callable[..., Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "site.toml"
    config.write_text(
        'fetch_interval = 20\nlookahead_window = 45\nbatch_size = 300\ndb = "sqlite:///file.db"\n'
    )
    monkeypatch.setenv("INFSCHED_FETCH_INTERVAL", "15")
    monkeypatch.setenv("INFSCHED_DB", "sqlite:///env.db")

    result = run("config", "show", "--json", "--config", str(config), "--db", "sqlite:///flag.db")
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    assert shown["fetch_interval"] == {"value": "15.0", "source": "env INFSCHED_FETCH_INTERVAL"}
    assert shown["lookahead_window"] == {"value": "45.0", "source": f"file {config}"}
    assert shown["batch_size"] == {"value": "300", "source": f"file {config}"}
    assert shown["database_url"] == {"value": "sqlite:///flag.db", "source": "flag --db"}
    assert shown["thread_pool_size"] == {"value": "20", "source": "default"}

    table = run("config", "show", "--config", str(config), "--db", "sqlite:///flag.db")
    assert table.code == 0, table.err
    lines = {line.split()[1]: line for line in table.out.splitlines() if line.startswith("│")}
    assert "env INFSCHED_FETCH_INTERVAL" in lines["fetch_interval"]
    assert f"file {config}" in lines["lookahead_window"]
    assert "sqlite:///flag.db" in lines["database_url"]
    assert "flag --db" in lines["database_url"]
    assert "default" in lines["misfire_policy"]
    assert f"file: {config}" in table.out


def test_config_show_reads_infsched_toml_from_the_working_directory(
    run: Callable[..., Run], tmp_path: Path
) -> None:
    (tmp_path / "infsched.toml").write_text("thread_pool_size = 4\n")
    shown = json.loads(run("config", "show", "--json").out)
    assert shown["thread_pool_size"] == {"value": "4", "source": "file infsched.toml"}


@pytest.mark.parametrize("as_json", [False, True])
def test_config_show_never_prints_the_database_password(
    run: Callable[..., Run], as_json: bool
) -> None:
    args = ["config", "show", "--db", f"mysql+pymysql://root:{SECRET}@127.0.0.1/x"]
    result = run(*args, *(["--json"] if as_json else []))
    assert result.code == 0, result.err
    assert "root:***@127.0.0.1" in result.out
    assert SECRET not in result.out + result.err


def test_config_show_prints_text_that_looks_like_markup_as_it_is(
    run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFSCHED_NODE_ID", "node[/bold]7")
    result = run("config", "show")
    assert result.code == 0, result.err
    assert "node[/bold]7" in result.out


def test_config_errors_are_one_line_naming_field_and_hint(
    run: Callable[..., Run], tmp_path: Path
) -> None:
    (tmp_path / "infsched.toml").write_text("lookahed_window = 40\n")
    result = run("config", "show")
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith("error: unknown config key 'lookahed_window' in infsched.toml")
    assert "did you mean 'lookahead_window'?" in result.err
    assert result.err.count("\n") == 1


def test_config_show_with_missing_config_file_fails_clearly(
    run: Callable[..., Run], tmp_path: Path
) -> None:
    result = run("config", "show", "--config", str(tmp_path / "absent.toml"))
    assert result.code == 1
    assert result.err == f"error: config file {tmp_path / 'absent.toml'} does not exist\n"


# -- db init --


def engine_tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_db_init_creates_the_engine_tables_and_is_idempotent(
    run: Callable[..., Run], every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    expected = set(schema.metadata.tables)
    first = run("db", "init", "--db", raw(every_url))
    assert first.code == 0, first.err
    assert first.out.startswith("created ")
    assert all(name in first.out for name in expected)
    assert expected <= engine_tables(engine_for(every_url))

    again = run("db", "init", "--db", raw(every_url))
    assert again.code == 0, again.err
    assert again.out.strip() == f"all tables already exist in {every_url}"


def test_db_init_reads_the_url_from_the_environment(
    run: Callable[..., Run],
    mysql_url: DatabaseUrl,
    engine_for: Callable[[DatabaseUrl], sa.Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFSCHED_DATABASE_URL", raw(mysql_url))
    assert run("db", "init").code == 0
    assert set(schema.metadata.tables) <= engine_tables(engine_for(mysql_url))


def test_db_init_defaults_to_sqlite_in_the_working_directory(
    run: Callable[..., Run], tmp_path: Path
) -> None:
    result = run("db", "init")
    assert result.code == 0, result.err
    assert (tmp_path / "infsched.db").is_file()


def test_db_init_unreachable_server_names_host_and_port_not_the_password(
    run: Callable[..., Run],
) -> None:
    port = closed_port()
    result = run("db", "init", "--db", f"mysql+pymysql://root:{SECRET}@127.0.0.1:{port}/x")
    assert result.code == 1
    assert result.err.startswith(f"error: cannot connect to the database at 127.0.0.1:{port}")
    assert result.err.count("\n") == 1
    assert SECRET not in result.out + result.err


def test_db_init_with_a_rejected_password_does_not_print_it(
    run: Callable[..., Run], mysql_url: DatabaseUrl
) -> None:
    # The test server's root has no password, so this one is refused by the server itself.
    url = mysql_url.sqlalchemy_url.set(username="nobody_here", password=SECRET)
    result = run("db", "init", "--db", url.render_as_string(hide_password=False))
    assert result.code == 1
    assert f"cannot connect to the database at {mysql_url.where}" in result.err
    assert "Access denied" in result.err
    assert SECRET not in result.out + result.err


def test_db_init_unreachable_sqlite_file_names_the_path(
    run: Callable[..., Run], tmp_path: Path
) -> None:
    path = tmp_path / "no" / "such" / "dir" / "sched.db"
    result = run("db", "init", "--db", f"sqlite:///{path}")
    assert result.code == 1
    assert result.err.startswith(f"error: cannot connect to the database at {path}")


def test_db_init_refuses_a_malformed_url_without_echoing_it(run: Callable[..., Run]) -> None:
    result = run("db", "init", "--db", f"mysql+pymysql://root:{SECRET}@host:port/db")
    assert result.code == 1
    assert result.err.startswith("error: database_url: malformed URL")
    assert SECRET not in result.err
