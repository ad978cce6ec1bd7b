"""SchedulerConfig validation, and the file < environment < flags layering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from infsched.config import (
    FIELD_NAMES,
    MisfirePolicy,
    SchedulerConfig,
    describe,
    load_config,
    read_env,
)
from infsched.dburl import DEFAULT_SQLITE_URL, DatabaseUrl
from infsched.errors import ConfigError

SECRET = "hunter2-pw"


def config_error(**values: Any) -> str:
    with pytest.raises(ConfigError) as err:
        SchedulerConfig(**values)
    return str(err.value)


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- defaults and validation --


def test_defaults_are_valid_and_documented_values() -> None:
    config = SchedulerConfig()
    assert config.fetch_interval == 25.0
    assert config.lookahead_window == 30.0
    assert config.lookahead_window > config.fetch_interval
    assert config.misfire_policy is MisfirePolicy.FIRE_ONCE_NOW
    assert config.clustering is False
    assert config.database_url == DatabaseUrl(DEFAULT_SQLITE_URL)
    assert config.node_id


def test_config_is_frozen() -> None:
    config = SchedulerConfig()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.fetch_interval = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("lookahead", [10.0, 25.0])
def test_lookahead_window_must_exceed_fetch_interval(lookahead: float) -> None:
    message = config_error(fetch_interval=25.0, lookahead_window=lookahead)
    assert message.startswith(f"lookahead_window: {lookahead:g} is invalid")
    assert "greater than fetch_interval (25)" in message


def test_lookahead_just_beyond_fetch_interval_is_accepted() -> None:
    config = SchedulerConfig(fetch_interval=25.0, lookahead_window=25.5)
    assert config.lookahead_window == 25.5


@pytest.mark.parametrize("field", ["fetch_interval", "lookahead_window", "heartbeat_interval"])
@pytest.mark.parametrize("value", [0, -1.5])
def test_intervals_must_be_positive(field: str, value: float) -> None:
    values: dict[str, Any] = {field: value}
    if field == "fetch_interval":
        values["lookahead_window"] = 30.0
    message = config_error(**values)
    assert message == f"{field}: {value!r} is invalid; must be greater than 0"


@pytest.mark.parametrize("field", ["max_jobs_per_fetch", "batch_size", "thread_pool_size"])
@pytest.mark.parametrize("value", [0, -3])
def test_counts_must_be_at_least_one(field: str, value: int) -> None:
    assert config_error(**{field: value}) == f"{field}: {value} is invalid; must be 1 or greater"


def test_misfire_threshold_may_be_zero_but_not_negative() -> None:
    assert SchedulerConfig(misfire_threshold=0).misfire_threshold == 0
    message = config_error(misfire_threshold=-1)
    assert message == "misfire_threshold: -1 is invalid; must be 0 or greater"


def test_nan_is_not_a_positive_interval() -> None:
    assert "must be greater than 0" in config_error(heartbeat_interval=float("nan"))


def test_unknown_misfire_policy_names_the_allowed_ones() -> None:
    message = config_error(misfire_policy="sometimes")
    assert message == ("misfire_policy: 'sometimes' is invalid; allowed: fire_once_now, do_nothing")


def test_misfire_policy_accepts_its_value_in_any_case() -> None:
    assert SchedulerConfig(misfire_policy=" Do_Nothing ").misfire_policy is MisfirePolicy.DO_NOTHING


def test_malformed_database_url_is_a_config_error_naming_the_field() -> None:
    message = config_error(database_url=f"mysql+pymysql://root:{SECRET}@host:port/db")
    assert message.startswith("database_url: malformed URL")
    assert SECRET not in message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # Python callers get no coercion: a string is not a number of seconds.
        ({"fetch_interval": "5", "lookahead_window": 30.0}, "fetch_interval: '5' is invalid"),
        ({"misfire_threshold": "1"}, "misfire_threshold: '1' is invalid"),
        ({"fetch_interval": True}, "fetch_interval: True is invalid"),
        ({"batch_size": 2.5}, "batch_size: 2.5 is invalid; expected a whole number"),
        ({"batch_size": True}, "batch_size: True is invalid; expected a whole number"),
        ({"clustering": "yes"}, "clustering: 'yes' is invalid; expected true or false"),
        ({"node_id": 5}, "node_id: 5 is invalid; expected a non-empty string"),
        ({"node_id": "  "}, "node_id: '  ' is invalid; expected a non-empty string"),
        ({"misfire_policy": 3}, "misfire_policy: 3 is invalid; allowed:"),
        ({"plugins": 5}, "plugins: 5 is invalid; expected a table of plugin sections"),
        ({"plugins": {"sms": 1}}, "plugins.sms: expected a table, got 1"),
        ({"database_url": 5}, "database_url: expected a URL string or a list of them, got int"),
    ],
)
def test_wrong_types_name_the_field_value_and_what_is_allowed(
    values: dict[str, Any], expected: str
) -> None:
    assert config_error(**values).startswith(expected)


def test_plugin_sections_are_read_only_and_missing_ones_are_empty() -> None:
    config = SchedulerConfig(plugins={"sms": {"gateway": "https://sms.example"}})
    assert config.plugin_section("sms")["gateway"] == "https://sms.example"
    assert dict(config.plugin_section("orders")) == {}
    with pytest.raises(TypeError):
        config.plugin_section("sms")["gateway"] = "x"  # type: ignore[index]


def test_repr_and_str_of_config_hide_the_password() -> None:
    config = SchedulerConfig(database_url=f"mysql+pymysql://app:{SECRET}@db.example/sched")
    for shown in (repr(config), str(config), repr(config.database_url)):
        assert SECRET not in shown
        assert "app:***@db.example" in shown
    assert config.database_url.sqlalchemy_url.password == SECRET


def test_repr_of_config_shows_plugin_section_keys_but_not_their_values() -> None:
    config = SchedulerConfig(
        plugins={"notifications": {"smtp_password": SECRET, "smtp_host": "mail"}, "log": {}}
    )
    assert "plugins=<notifications: smtp_password, smtp_host; log: ->" in repr(config)
    assert SECRET not in repr(config)
    assert config.plugin_section("notifications")["smtp_password"] == SECRET


def test_repository_database_password_is_hidden_too(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path / "sched.toml",
        f"""
[[repositories]]
name = "sms"
entity = "SmsEntity"
executor = "sms"
database_url = "mysql+pymysql://app:{SECRET}@shard1.example/sms"
""",
    )
    loaded = load_config(path, env={})
    assert loaded.config.repositories[0].database_url is not None
    assert SECRET not in repr(loaded.config)
    assert SECRET not in repr(describe(loaded))


# -- the TOML file --


def test_toml_values_are_coerced_and_validated(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path / "sched.toml",
        """
fetch_interval = 10
lookahead_window = 12.5
batch_size = 200
clustering = true
misfire_policy = "do_nothing"
db = "sqlite:///x.db"

[plugins.sms]
gateway = "https://sms.example"
""",
    )
    loaded = load_config(path, env={})
    config = loaded.config
    assert (config.fetch_interval, config.lookahead_window) == (10.0, 12.5)
    assert isinstance(config.fetch_interval, float)
    assert config.batch_size == 200
    assert config.clustering is True
    assert config.misfire_policy is MisfirePolicy.DO_NOTHING
    assert config.database_url == DatabaseUrl("sqlite:///x.db")
    assert config.plugin_section("sms") == {"gateway": "https://sms.example"}
    assert loaded.file == path
    assert loaded.sources["batch_size"] == f"file {path}"
    assert loaded.sources["database_url"] == f"file {path}"
    assert loaded.sources["thread_pool_size"] == "default"


def test_unknown_key_in_file_is_refused_with_a_did_you_mean_hint(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "sched.toml", "fetch_intervall = 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    message = str(err.value)
    assert f"unknown config key 'fetch_intervall' in {path}" in message
    assert "did you mean 'fetch_interval'?" in message
    assert "known keys: fetch_interval, lookahead_window" in message


def test_unknown_key_without_a_close_match_lists_the_known_keys(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "sched.toml", "colour = 'blue'\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "did you mean" not in str(err.value)
    assert all(name in str(err.value) for name in FIELD_NAMES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('fetch_interval = "soon"\n', "fetch_interval: 'soon' is invalid; expected a number"),
        ("batch_size = 1.5\n", "batch_size: 1.5 is invalid; expected a whole number"),
        ('clustering = "maybe"\n', "clustering: 'maybe' is invalid; expected true or false"),
        ("node_id = 7\n", "node_id: 7 is invalid; expected a non-empty string"),
        ('misfire_policy = "later"\n', "misfire_policy: 'later' is invalid; allowed:"),
        ("fetch_interval = 40\n", "lookahead_window: 30 is invalid; it must be greater than"),
    ],
)
def test_bad_values_in_file_name_field_value_and_what_is_allowed(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write_toml(tmp_path / "sched.toml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert str(err.value).startswith(expected)


def test_missing_and_invalid_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})
    broken = write_toml(tmp_path / "broken.toml", "fetch_interval = = 3\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(broken, env={})


def test_infsched_toml_in_the_working_directory_is_read_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(env={}).file is None
    write_toml(tmp_path / "infsched.toml", "batch_size = 77\n")
    loaded = load_config(env={})
    assert loaded.config.batch_size == 77
    assert loaded.file == Path("infsched.toml")
    assert loaded.sources["batch_size"] == "file infsched.toml"


# -- the environment and the layering --


def test_environment_variables_are_read_by_field_name_and_alias() -> None:
    env = {
        "INFSCHED_BATCH_SIZE": "500",
        "INFSCHED_CLUSTERING": "yes",
        "INFSCHED_DB": "sqlite:///env.db",
        "INFSCHED_DISABLE_PLUGINS": "sms",  # not a config field: left to the plugin manager
        "INFSCHED_THREAD_POOL_SIZE": "",  # empty means unset
        "OTHER": "x",
    }
    assert read_env(env) == {
        "batch_size": ("500", "INFSCHED_BATCH_SIZE"),
        "clustering": ("yes", "INFSCHED_CLUSTERING"),
        "database_url": ("sqlite:///env.db", "INFSCHED_DB"),
    }
    config = load_config(None, env=env).config
    assert (config.batch_size, config.clustering) == (500, True)


def test_bad_environment_value_names_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"INFSCHED_THREAD_POOL_SIZE": "lots"})
    assert str(err.value) == "thread_pool_size: 'lots' is invalid; expected a whole number"


def test_file_then_environment_then_flags_later_wins(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path / "sched.toml",
        'fetch_interval = 20\nlookahead_window = 45\nbatch_size = 300\ndb = "sqlite:///file.db"\n',
    )
    env = {"INFSCHED_FETCH_INTERVAL": "15", "INFSCHED_DATABASE_URL": "sqlite:///env.db"}
    loaded = load_config(path, env=env, flags={"database_url": "sqlite:///flag.db", "x": None})
    config = loaded.config
    assert (config.fetch_interval, config.lookahead_window, config.batch_size) == (15.0, 45.0, 300)
    assert config.database_url == DatabaseUrl("sqlite:///flag.db")
    assert loaded.sources["fetch_interval"] == "env INFSCHED_FETCH_INTERVAL"
    assert loaded.sources["lookahead_window"] == f"file {path}"
    assert loaded.sources["database_url"] == "flag --db"
    assert loaded.sources["node_id"] == "default"


def test_unknown_flag_is_refused_with_a_hint() -> None:
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        load_config(None, env={}, flags={"batchsize": 3})


def test_describe_lists_every_field_with_its_source_and_hides_the_password() -> None:
    loaded = load_config(
        None,
        env={"INFSCHED_MISFIRE_POLICY": "do_nothing"},
        flags={"database_url": f"mysql+pymysql://app:{SECRET}@127.0.0.1/sched"},
    )
    rows = {key: (value, source) for key, value, source in describe(loaded)}
    assert list(rows) == list(FIELD_NAMES)
    assert rows["misfire_policy"] == ("do_nothing", "env INFSCHED_MISFIRE_POLICY")
    assert rows["database_url"] == ("mysql+pymysql://app:***@127.0.0.1/sched", "flag --db")
    assert rows["plugins"] == ("(none)", "default")
    assert SECRET not in repr(rows)


def test_a_node_id_must_fit_the_job_tables_owner_column() -> None:
    assert SchedulerConfig(node_id="n" * 128).node_id == "n" * 128
    assert "node_id: " in config_error(node_id="n" * 129)
    assert "at most 128 characters" in config_error(node_id="n" * 129)
    assert "without surrounding spaces" in config_error(node_id="node-a ")
    assert "non-empty" in config_error(node_id="  ")


# -- names that match nothing, and two spellings of one setting --


def test_a_file_spelling_one_setting_twice_is_refused(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path / "sched.toml", 'db = "sqlite:///a.db"\ndatabase_url = "sqlite:///b.db"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert str(err.value) == (
        f"config file {path} sets database_url twice, as db and as database_url; keep one of them"
    )


def test_the_environment_spelling_one_setting_twice_is_refused() -> None:
    env = {"INFSCHED_DB": "sqlite:///a.db", "INFSCHED_DATABASE_URL": "sqlite:///b.db"}
    with pytest.raises(ConfigError) as err:
        load_config(None, env=env)
    message = str(err.value)
    assert message.startswith("the environment sets database_url twice, as INFSCHED_")
    assert "INFSCHED_DB" in message
    assert "INFSCHED_DATABASE_URL" in message
    # One of them, or one empty (unset), is fine.
    assert load_config(None, env={**env, "INFSCHED_DB": ""}).sources["database_url"] == (
        "env INFSCHED_DATABASE_URL"
    )


def test_an_unknown_infsched_variable_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"INFSCHED_BATCHSIZE": "5"})
    message = str(err.value)
    assert message.startswith(
        "unknown environment variable INFSCHED_BATCHSIZE; did you mean INFSCHED_BATCH_SIZE? "
        "(known: "
    )
    assert "INFSCHED_DISABLE_PLUGINS" in message
    assert "INFSCHED_FETCH_INTERVAL" in message
    # Unset (empty), the plugin selection and the test suite's own settings are no config.
    env = {
        "INFSCHED_BATCHSIZE": "",
        "INFSCHED_LOAD_PLUGINS": "sms",
        "INFSCHED_TEST_MYSQL_URL": "mysql+pymysql://root@127.0.0.1/x",
    }
    assert read_env(env) == {}


def test_cli_refuses_two_spellings_in_the_environment_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.management_support import clean_cli

    cli = clean_cli(capsys, monkeypatch, tmp_path)
    monkeypatch.setenv("INFSCHED_DB", f"sqlite:///{tmp_path}/a.db")
    monkeypatch.setenv("INFSCHED_DATABASE_URL", f"sqlite:///{tmp_path}/b.db")
    result = cli("db", "init")
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert result.err.startswith("error: the environment sets database_url twice")
    assert list(tmp_path.glob("*.db")) == []


def test_the_job_store_is_sql_unless_the_file_or_the_environment_names_another(
    tmp_path: Path,
) -> None:
    assert SchedulerConfig().job_store == "sql"
    path = write_toml(tmp_path / "infsched.toml", 'job_store = "memory"\n')
    loaded = load_config(path, env={})
    assert (loaded.config.job_store, loaded.sources["job_store"]) == ("memory", f"file {path}")
    from_env = load_config(path, env={"INFSCHED_JOB_STORE": "redis"})
    assert (from_env.config.job_store, from_env.sources["job_store"]) == (
        "redis",
        "env INFSCHED_JOB_STORE",
    )
    assert config_error(job_store="no such store").startswith("job_store: ")
    assert config_error(job_store=3).startswith("job_store: 3 is invalid")


def test_a_database_of_several_members_is_a_list_in_the_file_and_spaced_in_the_environment(
    tmp_path: Path,
) -> None:
    members = [f"mysql://u@db{i}:3306/s" for i in (1, 2, 3)]
    path = tmp_path / "infsched.toml"
    listed = ", ".join(f'"{m}"' for m in members)
    path.write_text(f"database_url = [{listed}]\n")
    from_file = load_config(path, env={}).config.database_url
    from_env = load_config(None, env={"INFSCHED_DATABASE_URL": "  ".join(members)}).config
    assert from_file == from_env.database_url == DatabaseUrl.members(members)
    assert [str(e) for e in from_file.endpoints] == ["db1:3306", "db2:3306", "db3:3306"]


def test_members_of_different_databases_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "infsched.toml"
    path.write_text('database_url = ["mysql://u@db1:3306/a", "mysql://u@db2:3306/b"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "differ in more than host and port" in str(err.value)
    assert "\n" not in str(err.value)
