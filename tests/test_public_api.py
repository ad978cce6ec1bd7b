"""``import infsched``: the public API, cheap to import, every name documented in docs/api.md."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import infsched
from infsched.dburl import DatabaseUrl
from infsched.errors import ConfigError, DatabaseUnreachableError
from infsched.plugins import load_plugins
from infsched_orders.entity import OrderEntity
from infsched_sms import SmsEntity

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"


def documented_names() -> list[str]:
    """The names docs/api.md's tables describe: rows starting with ``| `infsched.NAME` |``."""
    return re.findall(r"^\| `infsched\.(\w+)", API_DOC.read_text(), flags=re.MULTILINE)


def test_every_public_name_is_there_and_is_its_own_modules_object() -> None:
    for name, module in infsched._PUBLIC.items():
        assert getattr(infsched, name) is getattr(importlib.import_module(module), name), name
    assert set(infsched.__all__) == {"__version__", *infsched._PUBLIC}
    assert set(infsched.__all__) <= set(dir(infsched))
    namespace: dict[str, object] = {}
    exec("from infsched import *", namespace)
    assert set(infsched.__all__) <= set(namespace)


def test_a_misspelt_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'infsched' has no attribute 'open_repo'"):
        _ = infsched.open_repo  # type: ignore[attr-defined]  # the misspelling is the test


def test_every_public_name_is_documented_and_nothing_else() -> None:
    documented = documented_names()
    assert sorted(documented) == sorted(set(documented)), "a name is documented twice"
    public = [n for n in infsched.__all__ if n != "__version__"]
    assert sorted(public) == sorted(documented)


def test_importing_infsched_loads_neither_sqlalchemy_nor_the_engine() -> None:
    probe = (
        "import sys, infsched; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'sqlalchemy', 'pluggy', 'click', 'rich'} or m.startswith('infsched.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_read_config_reads_the_file_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "site.toml"
    path.write_text("batch_size = 250\nthread_pool_size = 4\n")
    monkeypatch.setenv("INFSCHED_THREAD_POOL_SIZE", "8")
    config = infsched.read_config(path)
    assert (config.batch_size, config.thread_pool_size) == (250, 8)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "infsched.toml").write_text("batch_size = 300\n")
    assert infsched.read_config().batch_size == 300
    (tmp_path / "infsched.toml").write_text("batch_sise = 300\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'batch_sise'.*did you mean"):
        infsched.read_config()


def sms_config(tmp_path: Path, url: DatabaseUrl) -> Path:
    path = tmp_path / "infsched.toml"
    raw = url.sqlalchemy_url.render_as_string(hide_password=False)
    path.write_text(
        f"""
[[repositories]]
name = "texts"
entity = "SmsEntity"
executor = "sms"
database_url = "{raw}"
priority = 7
"""
    )
    return path


def message(text: str) -> SmsEntity:
    due = datetime.now(UTC) + timedelta(hours=1)
    return SmsEntity(scheduled_time=due, phone_number="+4915112345678", sender="ACME", message=text)


def test_an_entity_goes_into_a_repository_named_in_the_config(
    every_url: DatabaseUrl, tmp_path: Path
) -> None:
    config = infsched.read_config(sms_config(tmp_path, every_url))
    with infsched.open_repositories(config) as repositories:
        assert repositories.names == ("texts",)
        assert "texts" in repositories
        texts = repositories.repository("texts", SmsEntity)
        assert texts is repositories["texts"]
        texts.maintain()  # what `infsched partitions maintain` does
        stored = texts.insert(message("hello"))
        assert stored.id is not None
        engine = texts.engine
        pool = engine.pool
    assert engine.pool is not pool, "leaving the block disposes the engine's pool"
    with infsched.open_repositories(config) as again:
        found = again.repository("texts", SmsEntity).find_by_id(stored.id)
    assert found is not None
    assert found.message == "hello"


def test_a_repository_asked_for_as_another_entity_type_is_refused(
    sqlite_url: DatabaseUrl, tmp_path: Path
) -> None:
    config = infsched.read_config(sms_config(tmp_path, sqlite_url))
    with infsched.open_repositories(config) as repositories:
        with pytest.raises(
            ConfigError,
            match=r"^repository 'texts' holds SmsEntity entities \(entity = 'SmsEntity' in its "
            r"config\), not OrderEntity$",
        ):
            repositories.repository("texts", OrderEntity)
        with pytest.raises(
            ConfigError,
            match=r"^no repository named 'sms' is configured \(configured: texts\)$",
        ):
            repositories["sms"]


def test_only_the_named_repositories_are_opened(sqlite_url: DatabaseUrl, tmp_path: Path) -> None:
    path = sms_config(tmp_path, sqlite_url)
    path.write_text(
        path.read_text() + '\n[[repositories]]\nname = "orders"\nentity = "OrderEntity"\n'
        'executor = "orders"\n'
    )
    config = infsched.read_config(path)
    with infsched.open_repositories(config, names=["orders"]) as repositories:
        assert repositories.names == ("orders",)
    with pytest.raises(ConfigError, match="no repository named 'nope'"):
        infsched.open_repositories(config, names=["nope"])


def test_a_database_that_does_not_answer_is_one_clear_error(tmp_path: Path) -> None:
    url = DatabaseUrl("mysql+pymysql://someone:secret@127.0.0.1:1/nowhere")
    config = infsched.read_config(sms_config(tmp_path, url))
    with pytest.raises(DatabaseUnreachableError, match="cannot connect to the database at") as exc:
        infsched.open_repositories(config)
    assert "secret" not in str(exc.value)


def test_a_scheduler_serves_the_configured_repositories_with_their_executors(
    sqlite_url: DatabaseUrl, tmp_path: Path
) -> None:
    config = infsched.read_config(sms_config(tmp_path, sqlite_url))
    plugins = load_plugins()
    with infsched.open_repositories(config, plugins=plugins) as repositories:
        scheduler = infsched.InfiniteScheduler(
            repositories, config, plugins=repositories.plugins, engine=repositories["texts"].engine
        )
        binding = scheduler.bindings["texts"]
        assert (binding.executor, binding.default_priority) == ("sms", 7)
        assert binding.repository is repositories["texts"]
        # Without plugins=, the executors come from the plugins the repositories were built with.
        implied = infsched.InfiniteScheduler(repositories, config)
        assert implied.workers.executors["sms"].spec is plugins.executor("sms")
        implied.engine.dispose()
        with pytest.raises(ValueError, match="no executor 'sms'"):
            infsched.InfiniteScheduler(list(repositories), config)


def test_the_built_in_plugins_table_lists_every_built_in_and_what_it_registers() -> None:
    text = (ROOT / "docs" / "plugins.md").read_text()
    section = text.split("## Built-in plugins", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", section, flags=re.MULTILINE))
    builtins = {info.name: info for info in load_plugins().listing() if info.builtin}
    assert sorted(rows) == sorted(builtins)
    for name, info in builtins.items():
        for registered in info.registers:  # "metrics sink: prometheus"
            kind, value = registered.split(": ")
            assert kind in rows[name], (name, registered)
            assert f"`{value}`" in rows[name], (name, registered)


def test_with_no_arguments_the_working_directorys_infsched_toml_is_opened(
    sqlite_url: DatabaseUrl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sms_config(tmp_path, sqlite_url)
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("INFSCHED_")]:
        monkeypatch.delenv(var)
    with infsched.open_repositories() as repositories:
        assert repositories.names == ("texts",)
        assert repositories.plugins.executors()["sms"].plugin == "sms"
