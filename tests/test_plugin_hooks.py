"""Every hook in infsched.hookspecs: tested here (test_hook_<name>) and documented in docs/.

Each test registers a plugin object through the registry, checks that the
registry hands back what it registered, and that ``infsched plugins list``
shows it.  The last tests fail when a hook is added without a test named
``test_hook_<hook>`` in this module or a heading in docs/plugin_hooks.md.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import click
import pluggy
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

from infsched import hookspecs
from infsched.cli.context import AppContext
from infsched.cli.main import build_cli
from infsched.clock import FixedClock
from infsched.config import SchedulerConfig
from infsched.database import database_of
from infsched.dburl import DatabaseUrl, UrlScheme
from infsched.dialects.sqlite import SQLiteDialect
from infsched.engine.scheduler import SchedulerNode
from infsched.entities import column, id_field, sharding_key
from infsched.errors import ConfigError, PluginError
from infsched.executors import ExecutorSpec, JobContext
from infsched.hookspecs import hookimpl
from infsched.jobstore.backend import JobStoreBackend
from infsched.jobstore.sql import SqlJobStore
from infsched.management.scheduler import InfiniteScheduler
from infsched.metrics.log_sink import LogMetricsSink
from infsched.metrics.sink import Labels, MetricsSink, MetricsSinkSpec
from infsched.plugins import DeclaredSchedule, PluginRegistry, load_plugins
from infsched.repositories.backend import RepositoryBackend, RepositoryOptions
from infsched.repositories.base import ShardingRepository
from infsched.repositories.multi_table import MultiTableRepository
from infsched.schedules import Schedule

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugin_hooks.md"
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def hook_names() -> list[str]:
    """The hooks a plugin may implement, read from the specifications themselves."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return sorted(
        name
        for name, caller in vars(pm.hook).items()
        if isinstance(caller, pluggy.HookCaller) and caller.spec is not None
    )


def registry_with(plugin: object, name: str = "testplugin") -> PluginRegistry:
    """The built-ins (no entry points) plus `plugin`, which must load cleanly."""
    registry = load_plugins(env={"INFSCHED_LOAD_PLUGINS": "none"})
    info = registry.register(plugin, name, distribution="infsched-testplugin", version="9.9")
    assert (info.status, info.error) == ("ok", None)
    return registry


def cli_listing(registry: PluginRegistry, root: click.Group | None = None) -> dict[str, Any]:
    """`plugins list --json` as the CLI prints it for `registry`; the test plugin's entry."""
    root = root if root is not None else build_cli(registry)
    result = CliRunner().invoke(
        root, ["plugins", "list", "--json"], obj=AppContext(plugins=registry)
    )
    assert result.exit_code == 0, result.output
    entries = {entry["name"]: entry for entry in json.loads(result.stdout)}
    entry: dict[str, Any] = entries["testplugin"]
    assert (entry["distribution"], entry["version"], entry["status"]) == (
        "infsched-testplugin",
        "9.9",
        "ok",
    )
    return entry


@attrs.define(kw_only=True)
class Widget:
    id: int | None = id_field()
    due: datetime = sharding_key()
    colour: str = column(length=16)


# -- one test per hook --


def test_hook_register_entity_types() -> None:
    class Declares:
        @hookimpl
        def register_entity_types(self) -> Iterable[type]:
            return [Widget]

    registry = registry_with(Declares())
    assert registry.entity_type("Widget") is Widget
    assert registry.entity_types()["Widget"].plugin == "testplugin"
    entry = cli_listing(registry)
    assert entry["hooks"] == ["register_entity_types"]
    assert entry["registers"] == ["entity: Widget"]


def test_hook_register_executors() -> None:
    ran: list[tuple[str, int, str]] = []

    def make_executor(section: Mapping[str, Any]) -> Callable[[JobContext[Widget]], None]:
        def run(job: JobContext[Widget]) -> None:
            ran.append((section["greeting"], job.attempt, job.entity.colour))

        return run

    class Executes:
        @hookimpl
        def register_executors(self) -> Iterable[ExecutorSpec]:
            return [ExecutorSpec(name="paint", factory=make_executor, max_attempts=2)]

    registry = registry_with(Executes())
    spec = registry.executor("paint")
    assert spec.max_attempts == 2
    executor = spec.factory({"greeting": "hello"})
    job = JobContext(
        entity=Widget(id=1, due=NOW, colour="teal"),
        job_key="widgets:1:20240601T120000",
        attempt=1,
        due_at=NOW,
        repository="widgets",
        logger=logging.LoggerAdapter(logging.getLogger("test"), {}),
    )
    executor(job)  # type: ignore[operator]
    assert ran == [("hello", 1, "teal")]
    entry = cli_listing(registry)
    assert entry["hooks"] == ["register_executors"]
    assert entry["registers"] == ["executor: paint"]


def test_hook_register_repository_backends(
    sqlite_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    def daily_tables(options: RepositoryOptions[Any]) -> ShardingRepository[Any, Any]:
        return MultiTableRepository(options)

    class Shards:
        @hookimpl
        def register_repository_backends(self) -> Iterable[RepositoryBackend]:
            return [RepositoryBackend("daily_widgets", daily_tables, "widgets by day")]

    registry = registry_with(Shards())
    backend = registry.repository_backend("daily_widgets")
    assert registry.repository_backends()["daily_widgets"].plugin == "testplugin"
    repository = backend.factory(
        RepositoryOptions(
            name="widgets",
            entity_type=Widget,
            engine=engine_for(sqlite_url),
            clock=FixedClock(NOW),
        )
    )
    repository.maintain()
    stored = repository.insert(Widget(due=NOW + timedelta(hours=1), colour="red"))
    assert stored.id is not None
    assert repository.find_by_id(stored.id) == stored
    entry = cli_listing(registry)
    assert entry["registers"] == ["repository backend: daily_widgets"]


class SqliteAliasDriver(SQLiteDialect_pysqlite):
    """SQLAlchemy's side of a database a plugin adds: here SQLite under its own driver name."""

    supports_statement_cache = True


sa.dialects.registry.register("testlite", __name__, "SqliteAliasDriver")


class AliasDialect(SQLiteDialect):
    """A plugin's dialect for ``testlite:///PATH`` URLs; it notes each engine it sets up."""

    name = "testlite"
    names = ()
    url_scheme = UrlScheme(
        dialect="testlite",
        title="Testlite",
        drivers=frozenset({"testlite"}),
        driver="testlite",
        server=False,
        default_port=None,
        example="testlite:///PATH",
    )

    def __init__(self) -> None:
        self.configured: list[sa.Engine] = []

    def configure_engine(self, engine: sa.Engine) -> None:
        self.configured.append(engine)
        super().configure_engine(engine)


def test_hook_register_dialects(tmp_path: Path) -> None:
    dialect = AliasDialect()

    class Dialects:
        @hookimpl
        def register_dialects(self) -> Iterable[AliasDialect]:
            return [dialect]

    registry = registry_with(Dialects())
    assert registry.dialects()["testlite"].plugin == "testplugin"
    assert registry.dialects()["sqlite"].plugin == "builtin_dialects"
    entry = cli_listing(registry)
    assert entry["hooks"] == ["register_dialects"]
    assert entry["registers"] == ["dialect: testlite"]

    # Its URLs are accepted, and what connects to them is set up by it.
    path = tmp_path / "site.db"
    root = build_cli(registry)
    result = CliRunner().invoke(
        root, ["db", "init", "--db", f"testlite:///{path}"], obj=AppContext(registry)
    )
    assert result.exit_code == 0, result.output
    assert len(dialect.configured) == 1
    assert "infsched_jobs" in sa.inspect(dialect.configured[0]).get_table_names()
    node = SchedulerNode([], SchedulerConfig(database_url=f"testlite:///{path}"), plugins=registry)
    assert node.database.dialect is dialect
    assert node.store.claim_due("n1", 10, 30.0, ["r"]) == []
    node.database.dispose()

    # A scheme no dialect serves: one line, naming the known ones.
    result = CliRunner().invoke(
        root, ["db", "init", "--db", "nosuchdb://host/x"], obj=AppContext(registry)
    )
    assert isinstance(result.exception, ConfigError)
    message = str(result.exception)
    assert "\n" not in message
    assert "unsupported database 'nosuchdb'" in message
    for known in ("mysql+pymysql://", "sqlite:///PATH", "testlite:///PATH"):
        assert known in message


def test_hook_register_job_stores(
    sqlite_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    class Stores:
        @hookimpl
        def register_job_stores(self) -> Iterable[JobStoreBackend]:
            return [JobStoreBackend("audited_sql", SqlJobStore, "the SQL store under another name")]

    registry = registry_with(Stores())
    engine = engine_for(sqlite_url)
    database = database_of(engine, FixedClock(NOW))
    store = registry.open_job_store("audited_sql", database)
    assert isinstance(store, SqlJobStore)
    assert store.engine is engine
    assert registry.job_stores()["audited_sql"].plugin == "testplugin"
    # The built-in is registered through the same hook, by a built-in plugin.
    assert registry.job_stores()["sql"].plugin == "sql_store"
    with pytest.raises(PluginError, match=r"job store named .redis. .*known: audited_sql, sql\)$"):
        registry.open_job_store("redis", database)
    entry = cli_listing(registry)
    assert entry["hooks"] == ["register_job_stores"]
    assert entry["registers"] == ["job store: audited_sql"]


class CountingSink:
    def __init__(self, section: Mapping[str, Any]) -> None:
        self.prefix = str(section.get("prefix", ""))
        self.counts: dict[str, float] = {}
        self.closed = False

    def increment(self, name: str, value: float = 1.0, labels: Labels | None = None) -> None:
        key = self.prefix + name
        self.counts[key] = self.counts.get(key, 0.0) + value

    def set_gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        self.counts[self.prefix + name] = value

    def observe(self, name: str, value: float, labels: Labels | None = None) -> None:
        self.increment(name + "_count")

    def close(self) -> None:
        self.closed = True


def test_hook_register_metrics_sinks() -> None:
    class Sinks:
        @hookimpl
        def register_metrics_sinks(self) -> Sequence[MetricsSinkSpec]:
            return [MetricsSinkSpec(name="counting", factory=CountingSink)]

    registry = registry_with(Sinks())
    sink = registry.metrics_sink("counting").factory({"prefix": "infsched_"})
    assert isinstance(sink, MetricsSink)
    sink.increment("jobs_executed_total", 2)
    sink.observe("lag_seconds", 0.1)
    sink.close()
    assert isinstance(sink, CountingSink)
    assert sink.counts == {"infsched_jobs_executed_total": 2.0, "infsched_lag_seconds_count": 1.0}
    assert sink.closed

    # The built-in `log` sink comes through the same hook and reads its section too.
    builtin = registry.metrics_sinks()["log"]
    assert registry.infos[builtin.plugin].builtin
    log_sink = builtin.value.factory({"interval": 42})
    assert isinstance(log_sink, LogMetricsSink)
    assert log_sink.interval == 42.0
    log_sink.close()

    entry = cli_listing(registry)
    assert entry["registers"] == ["metrics sink: counting"]


def test_hook_register_commands() -> None:
    class Commands:
        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            @cli.group("widgets")
            def widgets() -> None:
                """Widget tools."""

            @widgets.command("paint")
            @click.argument("colour")
            def paint(colour: str) -> None:
                click.echo(f"painted {colour}")

    registry = registry_with(Commands())
    root = build_cli(registry)
    result = CliRunner().invoke(root, ["widgets", "paint", "teal"], obj=AppContext(registry))
    assert (result.exit_code, result.stdout) == (0, "painted teal\n")
    entry = cli_listing(registry, root)
    assert entry["hooks"] == ["register_commands"]
    assert entry["registers"] == ["command: widgets"]


def test_hook_register_schedules(sqlite_url: DatabaseUrl) -> None:
    nightly = Schedule(name="nightly", executor="paint", trigger="30 2 * * *", zone="Europe/Berlin")

    class Declares:
        @hookimpl
        def register_executors(self) -> Iterable[ExecutorSpec]:
            return [ExecutorSpec(name="paint", factory=lambda section: lambda job: None)]

        @hookimpl
        def register_schedules(self) -> Iterable[Schedule]:
            return [nightly]

    registry = registry_with(Declares())
    assert registry.schedules() == [DeclaredSchedule(nightly, "testplugin")]
    entry = cli_listing(registry)
    assert entry["hooks"] == ["register_executors", "register_schedules"]
    assert entry["registers"] == ["executor: paint", "schedule: nightly"]
    # A node starting puts it in the database, attributed to the plugin.
    node = InfiniteScheduler([], SchedulerConfig(database_url=sqlite_url), plugins=registry)
    try:
        node.declare_schedules()
        stored = node.schedule("nightly")
        assert (stored.schedule, stored.source) == (nightly, "plugin testplugin")
    finally:
        node.engine.dispose()

    class NotASchedule:
        @hookimpl
        def register_schedules(self) -> Iterable[object]:
            return [{"name": "nightly"}]

    registry = load_plugins(env={"INFSCHED_LOAD_PLUGINS": "none"})
    info = registry.register(NotASchedule(), "testplugin")
    assert info.status == "failed"
    assert info.error is not None
    assert "expected Schedule values" in info.error
    assert registry.schedules() == []


# -- the contract itself --


def test_the_hooks_are_the_register_hooks() -> None:
    assert hook_names() == [
        "register_commands",
        "register_dialects",
        "register_entity_types",
        "register_executors",
        "register_job_stores",
        "register_metrics_sinks",
        "register_repository_backends",
        "register_schedules",
    ]


@pytest.mark.parametrize("hook", hook_names())
def test_plugin_hooks_are_typed_and_have_docstrings(hook: str) -> None:
    spec = getattr(hookspecs, hook)
    doc = inspect.getdoc(spec)
    assert doc, f"hookspec {hook} has no docstring"
    assert "Called once" in doc, f"hookspec {hook}'s docstring does not say when it is called"
    signature = inspect.signature(spec)
    assert signature.return_annotation is not inspect.Signature.empty, f"{hook} has no return type"
    for parameter in signature.parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, f"{hook}({parameter.name})"


@pytest.mark.parametrize("hook", hook_names())
def test_plugin_hooks_have_tests(hook: str) -> None:
    tests = [name for name in globals() if name.startswith(f"test_hook_{hook}")]
    assert tests, f"hook {hook} has no test named test_hook_{hook} in {Path(__file__).name}"


def documented_hooks() -> list[str]:
    return re.findall(r"^##+ `?(\w+)", DOCS.read_text(), flags=re.MULTILINE)


@pytest.mark.parametrize("hook", hook_names())
def test_plugin_hooks_are_documented(hook: str) -> None:
    assert hook in documented_hooks(), f"docs/plugin_hooks.md has no heading for {hook}"


def test_documented_hooks_exist() -> None:
    documented = {name for name in documented_hooks() if name.startswith("register_")}
    assert documented <= set(hook_names()), "docs/plugin_hooks.md documents hooks that do not exist"
