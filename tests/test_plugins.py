"""Plugin loading: failures, collisions, selection, and what `infsched plugins list` shows.

The end-to-end tests install throwaway plugin distributions for real: a module
and a ``NAME-0.1.dist-info`` directory (METADATA, entry_points.txt) in a
temporary directory on PYTHONPATH, which importlib.metadata discovers, and run
the installed ``infsched`` executable against them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import attrs
import click
import pytest

from infsched.cli.main import build_cli
from infsched.config import read_env
from infsched.errors import PluginConflictError, PluginError
from infsched.executors import ExecutorSpec
from infsched.hookspecs import hookimpl
from infsched.plugins import PluginRegistry, load_plugins

INFSCHED = str(Path(sys.executable).with_name("infsched"))
SHIPPED = {
    "sms": "infsched-sms",
    "orders": "infsched-orders",
    "notifications": "infsched-notifications",
}
SHIPPED_ENTITIES = {
    "sms": "SmsEntity",
    "orders": "OrderEntity",
    "notifications": "NotificationEntity",
}

# -- throwaway distributions --


def install_dist(site: Path, dist: str, entry_point: str, source: str) -> None:
    """Install distribution `dist` into `site`: one module, one [infsched] entry point."""
    module = f"{dist.replace('-', '_')}_plugin"
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[infsched]\n{entry_point} = {module}\n")


def executor_plugin(name: str) -> str:
    """Source of a plugin module registering one executor called `name`."""
    return f"""
        from infsched.executors import ExecutorSpec
        from infsched.hookspecs import hookimpl

        @hookimpl
        def register_executors():
            return [ExecutorSpec(name={name!r}, factory=lambda section: print)]
    """


def infsched(
    site: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``infsched`` in `site`, with it on PYTHONPATH and no INFSCHED_* vars."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INFSCHED_")}
    environ.update(PYTHONPATH=str(site), COLUMNS="300", **(env or {}))
    return subprocess.run(
        [INFSCHED, *args], capture_output=True, text=True, env=environ, cwd=site, timeout=60
    )


def listed(site: Path, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    result = infsched(site, "plugins", "list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    entries: list[dict[str, Any]] = json.loads(result.stdout)
    return {entry["name"]: entry for entry in entries}


def assert_shipped_plugins_ok(plugins: dict[str, dict[str, Any]]) -> None:
    for name in SHIPPED:
        assert plugins[name]["status"] == "ok", plugins[name]


@pytest.fixture
def broken_site(tmp_path: Path) -> Path:
    """A site with a plugin that raises on import."""
    install_dist(
        tmp_path,
        "infsched-broken",
        "broken",
        """
        raise RuntimeError("licence server unreachable")
        """,
    )
    return tmp_path


def test_installed_plugins_are_listed_with_versions_and_registrations(tmp_path: Path) -> None:
    plugins = listed(tmp_path)
    registry = load_plugins(env={})
    build_cli(registry)  # the command line adds the plugins' commands, as `plugins list` does
    in_process = {info.name: info for info in registry.listing()}
    for name, dist in SHIPPED.items():
        entry = plugins[name]
        assert (entry["distribution"], entry["version"]) == (dist, version(dist))
        assert (entry["status"], entry["error"], entry["conflicts"]) == ("ok", None, [])
        assert "register_entity_types" in entry["hooks"]
        assert f"entity: {SHIPPED_ENTITIES[name]}" in entry["registers"]
        assert entry["builtin"] is False
        assert entry == in_process[name].as_json()
    log_sink = plugins["log_sink"]
    assert log_sink["builtin"] is True
    assert log_sink["distribution"] == "infinite-scheduler"
    assert log_sink["status"] == "ok"
    assert "metrics sink: log" in log_sink["registers"]
    builtins = [entry["builtin"] for entry in plugins.values()]
    assert builtins == sorted(builtins), "built-ins are listed after the entry-point plugins"


def test_plugin_raising_on_import_is_listed_as_failed(broken_site: Path) -> None:
    plugins = listed(broken_site)
    broken = plugins["broken"]
    assert broken["status"] == "failed"
    assert broken["error"] == "RuntimeError: licence server unreachable"
    assert (broken["distribution"], broken["version"]) == ("infsched-broken", "0.1")
    assert_shipped_plugins_ok(plugins)

    table = infsched(broken_site, "plugins", "list")
    assert table.returncode == 0, table.stderr
    header = next(line for line in table.stdout.splitlines() if "┃ name" in line)
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == [
        "name",
        "distribution",
        "version",
        "hooks",
        "registers",
        "status",
    ]
    row = next(line for line in table.stdout.splitlines() if "│ broken" in line)
    assert "infsched-broken" in row
    assert "failed" in row
    assert "RuntimeError: licence server unreachable" in table.stdout
    assert "SmsEntity" in table.stdout


def test_db_init_refuses_with_one_line_naming_the_failed_plugin(broken_site: Path) -> None:
    result = infsched(broken_site, "db", "init")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: plugin 'broken' (infsched-broken) failed to load: RuntimeError: licence server "
        "unreachable. Fix or uninstall it, or disable it with INFSCHED_DISABLE_PLUGINS=broken\n"
    )
    assert not (broken_site / "infsched.db").exists()

    disabled = {"INFSCHED_DISABLE_PLUGINS": "broken"}
    result = infsched(broken_site, "db", "init", env=disabled)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("created infsched_")
    assert (broken_site / "infsched.db").is_file()
    plugins = listed(broken_site, env=disabled)
    assert plugins["broken"]["status"] == "disabled"
    assert plugins["broken"]["error"] is None


def test_two_plugins_registering_the_same_executor_are_a_conflict_naming_both(
    tmp_path: Path,
) -> None:
    install_dist(tmp_path, "infsched-sms-a", "sms_a", executor_plugin("sms"))
    install_dist(tmp_path, "infsched-sms-b", "sms_b", executor_plugin("sms"))
    conflict = (
        "executor 'sms' is registered by both plugin 'sms_a' and plugin 'sms_b'; "
        "disable one with INFSCHED_DISABLE_PLUGINS=sms_a"
    )
    # Only these two, so the shipped sms plugin's own executor `sms` stays out of it.
    only = {"INFSCHED_LOAD_PLUGINS": "sms_a,sms_b"}
    plugins = listed(tmp_path, env=only)
    assert plugins["sms_a"]["registers"] == ["executor: sms"]
    assert plugins["sms_b"]["registers"] == []
    assert plugins["sms_a"]["conflicts"] == [conflict]
    assert plugins["sms_b"]["conflicts"] == [conflict]

    result = infsched(tmp_path, "db", "init", env=only)
    assert result.returncode == 1
    assert result.stderr == f"error: {conflict}\n"


def test_unknown_hook_wrong_arguments_and_system_exit_fail_their_plugin_only(
    tmp_path: Path,
) -> None:
    install_dist(
        tmp_path,
        "infsched-typo",
        "typo",
        """
        from infsched.hookspecs import hookimpl

        @hookimpl
        def register_executor():
            return []
        """,
    )
    install_dist(
        tmp_path,
        "infsched-wrongargs",
        "wrongargs",
        """
        from infsched.hookspecs import hookimpl

        @hookimpl
        def register_executors(config):
            return []
        """,
    )
    install_dist(tmp_path, "infsched-exits", "exits", "raise SystemExit(3)\n")
    plugins = listed(tmp_path)

    typo = plugins["typo"]
    assert typo["status"] == "failed"
    assert typo["error"].startswith("implements unknown hook(s) register_executor; known hooks: ")
    assert "register_executors" in typo["error"]
    assert typo["hooks"] == []

    wrong = plugins["wrongargs"]
    assert wrong["status"] == "failed"
    assert wrong["error"].startswith(
        "incompatible hook: Plugin 'wrongargs' for hook 'register_executors'"
    )
    assert "Argument(s) {'config'} are declared in the hookimpl" in wrong["error"]
    assert "\n" not in wrong["error"]

    assert plugins["exits"]["status"] == "failed"
    assert plugins["exits"]["error"] == "SystemExit: 3"
    assert_shipped_plugins_ok(plugins)


def test_load_plugins_loads_only_the_named_ones_and_disable_blocks_several(
    tmp_path: Path,
) -> None:
    only = listed(tmp_path, env={"INFSCHED_LOAD_PLUGINS": "sms, orders"})
    assert {name: only[name]["status"] for name in SHIPPED} == {
        "sms": "ok",
        "orders": "ok",
        "notifications": "disabled",
    }
    builtins = [entry for entry in only.values() if entry["builtin"]]
    assert builtins, "built-ins are part of the core, loaded whatever is selected"
    assert all(entry["status"] == "ok" for entry in builtins)
    assert only["notifications"]["registers"] == []

    blocked = listed(tmp_path, env={"INFSCHED_DISABLE_PLUGINS": "orders,notifications"})
    assert [blocked[name]["status"] for name in ("sms", "orders", "notifications")] == [
        "ok",
        "disabled",
        "disabled",
    ]
    # The version of a disabled plugin is still shown: it comes from its metadata.
    assert blocked["orders"]["version"] == version("infsched-orders")


def test_a_plugin_selection_naming_no_installed_plugin_is_refused(tmp_path: Path) -> None:
    for variable in ("INFSCHED_DISABLE_PLUGINS", "INFSCHED_LOAD_PLUGINS"):
        result = infsched(tmp_path, "db", "init", env={variable: "sms,ordrs"})
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith(
            f"error: {variable}: 'ordrs' is no installed plugin; the installed plugins are: "
        )
        assert all(name in result.stderr for name in SHIPPED)
        assert not (tmp_path / "infsched.db").exists()
    builtin = infsched(tmp_path, "plugins", "list", env={"INFSCHED_DISABLE_PLUGINS": "log_sink"})
    assert builtin.returncode == 1
    assert "'log_sink' is built in and always loaded" in builtin.stderr
    with pytest.raises(PluginError, match="'ordrs' is no installed plugin"):
        load_plugins(env={"INFSCHED_DISABLE_PLUGINS": "ordrs"})
    # `none` selects no entry-point plugin at all: only the built-ins load.
    plugins = load_plugins(env={"INFSCHED_LOAD_PLUGINS": "none"})
    assert all(plugins.infos[name].status == "disabled" for name in SHIPPED)
    assert plugins.infos["log_sink"].status == "ok"


def test_plugin_registrations_reach_the_command_line(tmp_path: Path) -> None:
    install_dist(
        tmp_path,
        "infsched-everything",
        "everything",
        """
        import click
        from infsched.executors import ExecutorSpec
        from infsched.hookspecs import hookimpl
        from infsched.metrics.sink import MetricsSinkSpec

        @hookimpl
        def register_executors():
            return [ExecutorSpec(name="fax", factory=lambda section: print)]

        @hookimpl
        def register_metrics_sinks():
            return [MetricsSinkSpec(name="null", factory=lambda section: None)]

        @hookimpl
        def register_commands(cli):
            @cli.command("fax")
            @click.argument("number")
            def fax(number):
                click.echo(f"faxing {number}")
        """,
    )
    plugins = listed(tmp_path)
    assert plugins["everything"]["hooks"] == [
        "register_commands",
        "register_executors",
        "register_metrics_sinks",
    ]
    assert plugins["everything"]["registers"] == [
        "executor: fax",
        "metrics sink: null",
        "command: fax",
    ]
    result = infsched(tmp_path, "fax", "+4930123456")
    assert (result.returncode, result.stdout) == (0, "faxing +4930123456\n")


# -- the registry in-process --


def registry() -> PluginRegistry:
    """The registry as the CLI loads it, with only the built-ins (no entry points)."""
    return load_plugins(env={"INFSCHED_LOAD_PLUGINS": "none"})


@attrs.define
class Plugin:
    """A plugin object whose hooks return what the test gives it."""

    executors: Iterable[Any] = ()

    @hookimpl
    def register_executors(self) -> Iterable[Any]:
        return self.executors


def spec(name: str) -> ExecutorSpec:
    return ExecutorSpec(name=name, factory=lambda section: print)


def test_healthy_registry_passes_require_healthy() -> None:
    plugins = load_plugins(env={})
    plugins.require_healthy()
    assert {"sms", "orders", "notifications", "log_sink"} <= set(plugins.infos)
    assert set(plugins.entity_types()) >= set(SHIPPED_ENTITIES.values())
    assert plugins.entity_types()["SmsEntity"].plugin == "sms"


def test_hook_that_raises_fails_its_plugin_and_registers_nothing() -> None:
    class Raising:
        @hookimpl
        def register_executors(self) -> Iterable[ExecutorSpec]:
            yield spec("half")
            raise OSError("config file missing\nsecond line")

    plugins = registry()
    info = plugins.register(Raising(), "raising", distribution="raising-dist")
    assert info.status == "failed"
    assert info.error == "OSError: config file missing; second line"
    assert "half" not in plugins.executors()
    with pytest.raises(PluginError) as err:
        plugins.require_healthy()
    assert str(err.value).startswith("plugin 'raising' (raising-dist) failed to load: OSError")
    assert str(err.value).endswith("INFSCHED_DISABLE_PLUGINS=raising")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sms", "register_executors returned 's', expected ExecutorSpec values"),
        (spec("ok_one"), "TypeError: 'ExecutorSpec' object is not iterable"),
    ],
)
def test_hook_returning_the_wrong_kind_of_value_fails_its_plugin(value: Any, expected: str) -> None:
    plugins = registry()
    info = plugins.register(Plugin(executors=value), "wrong")
    assert info.status == "failed"
    assert info.error is not None
    assert expected in info.error
    assert plugins.executors() == {}


def test_badly_declared_entity_fails_its_plugin_naming_the_field() -> None:
    @attrs.define
    class NoSharding:
        id: int

    class Declares:
        @hookimpl
        def register_entity_types(self) -> Iterable[Any]:
            return [NoSharding, "not a class"]

    info = registry().register(Declares(), "declares")
    assert info.status == "failed"
    assert info.error == ("EntityError: NoSharding must declare exactly one id_field(), found 0")


def test_lookup_of_an_unregistered_name_lists_the_known_ones() -> None:
    plugins = registry()
    plugins.register(Plugin(executors=[spec("email"), spec("sms")]), "senders")
    assert plugins.executor("sms").name == "sms"
    with pytest.raises(PluginError) as err:
        plugins.executor("fax")
    assert str(err.value) == "no executor named 'fax' is registered (known: email, sms)"


def test_registering_a_name_twice_is_refused() -> None:
    plugins = registry()
    with pytest.raises(PluginConflictError, match="a plugin named 'log_sink' is already loaded"):
        plugins.register(Plugin(), "log_sink")


def test_entry_point_named_like_a_builtin_is_a_conflict_not_a_silent_replacement() -> None:
    plugins = PluginRegistry()
    plugins.register(Plugin(), "log_sink", distribution="impostor")
    plugins.load(env={"INFSCHED_LOAD_PLUGINS": "none"})
    message = "two plugins are named 'log_sink' (impostor and infinite-scheduler); uninstall one"
    assert plugins.conflicts == [message]
    assert plugins.infos["log_sink"].conflicts == [message]
    with pytest.raises(PluginConflictError, match="two plugins are named 'log_sink'"):
        plugins.require_healthy()


def test_two_distributions_with_one_entry_point_name_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_dist(tmp_path, "infsched-dup-one", "dup", executor_plugin("dup_one"))
    install_dist(tmp_path, "infsched-dup-two", "dup", executor_plugin("dup_two"))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = load_plugins(env={"INFSCHED_LOAD_PLUGINS": "dup"})
    [message] = plugins.conflicts
    assert message.startswith("two plugins are named 'dup' (infsched-dup-")
    assert "infsched-dup-one" in message
    assert "infsched-dup-two" in message
    assert plugins.infos["dup"].conflicts == [message]
    assert len(plugins.executors()) == 1, "only the first one is loaded"
    with pytest.raises(PluginConflictError):
        plugins.require_healthy()


def test_builtins_load_after_entry_points_and_the_plugin_is_named_to_disable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_dist(
        tmp_path,
        "infsched-shadow",
        "shadow",
        """
        from infsched.hookspecs import hookimpl
        from infsched.metrics.sink import MetricsSinkSpec

        @hookimpl
        def register_metrics_sinks():
            return [MetricsSinkSpec(name="log", factory=lambda section: None)]
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = load_plugins(env={"INFSCHED_LOAD_PLUGINS": "shadow"})
    # The entry point came first, so the built-in is the one refused; the advice names
    # the plugin that can be disabled (built-ins cannot).
    assert plugins.metrics_sinks()["log"].plugin == "shadow"
    assert plugins.conflicts == [
        "metrics sink 'log' is registered by both plugin 'shadow' and plugin 'log_sink'; "
        "disable one with INFSCHED_DISABLE_PLUGINS=shadow"
    ]


def test_empty_load_plugins_variable_means_unset() -> None:
    plugins = load_plugins(env={"INFSCHED_LOAD_PLUGINS": " "})
    assert plugins.infos["sms"].status == "ok"


def root_group() -> click.Group:
    group = click.Group("infsched")

    @group.command("db")
    def db() -> None:
        click.echo("core db")

    return group


def test_command_replacing_a_core_command_is_refused_naming_both() -> None:
    class Replaces:
        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            @cli.command("db")
            def db() -> None:
                click.echo("plugin db")

    plugins = registry()
    plugins.register(Replaces(), "replaces")
    group = root_group()
    core_db = group.commands["db"]
    plugins.add_commands(group)
    assert group.commands["db"] is core_db
    assert plugins.conflicts == [
        "command 'db' is registered by both the core and plugin 'replaces', which may not "
        "replace it; disable it with INFSCHED_DISABLE_PLUGINS=replaces"
    ]
    assert plugins.infos["replaces"].conflicts == plugins.conflicts


def test_two_plugins_adding_the_same_command_conflict_naming_both() -> None:
    def adds_hello(word: str) -> object:
        class Adds:
            @hookimpl
            def register_commands(self, cli: click.Group) -> None:
                cli.add_command(click.Command("hello", callback=lambda: click.echo(word)))

        return Adds()

    plugins = registry()
    plugins.register(adds_hello("first"), "first")
    plugins.register(adds_hello("second"), "second")
    group = root_group()
    plugins.add_commands(group)
    assert plugins.infos["first"].registers == ["command: hello"]
    assert plugins.conflicts[0].startswith(
        "command 'hello' is registered by both plugin 'first' and plugin 'second'"
    )
    assert plugins.infos["first"].conflicts == plugins.infos["second"].conflicts


def test_register_commands_that_raises_fails_the_plugin_and_drops_its_registrations() -> None:
    class HalfCommands(Plugin):
        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            cli.add_command(click.Command("half"))
            raise RuntimeError("no click today")

    plugins = registry()
    plugins.register(HalfCommands(executors=[spec("pager")]), "half")
    assert "pager" in plugins.executors()
    group = root_group()
    plugins.add_commands(group)
    assert set(group.commands) == {"db"}
    info = plugins.infos["half"]
    assert (info.status, info.error) == (
        "failed",
        "register_commands: RuntimeError: no click today",
    )
    assert "pager" not in plugins.executors()
    assert info.registers == []


# -- hooks are called through pluggy --


RAISING_PLUGIN = """
    from infsched.executors import ExecutorSpec
    from infsched.hookspecs import hookimpl

    @hookimpl
    def register_executors():
        yield ExecutorSpec(name="half", factory=lambda section: print)
        raise OSError("spool directory missing")
"""

WATCHING_PLUGIN = """
    import sys
    from infsched.hookspecs import hookimpl

    @hookimpl(wrapper=True)
    def register_executors():
        results = yield
        names = sorted(spec.name for found in results for spec in found)
        print(f"watched register_executors: {names}", file=sys.stderr)
        return results

    @hookimpl(wrapper=True)
    def register_commands(cli):
        yield
        print(f"watched register_commands: {'plugins' in cli.commands}", file=sys.stderr)
"""


def test_a_raising_implementation_fails_its_plugin_only_in_one_call_through_pluggy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_dist(tmp_path, "infsched-first", "first", executor_plugin("one"))
    install_dist(tmp_path, "infsched-raiser", "raiser", RAISING_PLUGIN)
    install_dist(tmp_path, "infsched-third", "third", executor_plugin("three"))
    monkeypatch.syspath_prepend(str(tmp_path))
    # One pm.hook call for all three: pluggy calls third, raiser, first (last registered
    # first), so without attribution the raise would abort the call before `first` ran.
    plugins = load_plugins(env={"INFSCHED_LOAD_PLUGINS": "first,raiser,third"})
    assert {name: r.plugin for name, r in plugins.executors().items()} == {
        "one": "first",
        "three": "third",
    }
    raiser = plugins.infos["raiser"]
    assert (raiser.status, raiser.error, raiser.registers) == (
        "failed",
        "OSError: spool directory missing",
        [],
    )
    assert not plugins.pm.has_plugin("raiser"), "a failed plugin's hooks are not called again"
    assert plugins.infos["first"].registers == ["executor: one"]


@attrs.define
class Watcher:
    """A plugin whose hook wrappers record every call they see."""

    seen: list[tuple[str, list[str]]] = attrs.Factory(list)
    fail_with: Exception | None = None

    @hookimpl(wrapper=True)
    def register_executors(self) -> Any:
        results = yield
        if self.fail_with is not None:
            raise self.fail_with
        self.seen.append(("register_executors", [s.name for found in results for s in found]))
        return results

    @hookimpl(wrapper=True)
    def register_commands(self, cli: click.Group) -> Any:
        result = yield
        self.seen.append(("register_commands", sorted(cli.commands)))
        assert result == [], "register_commands implementations return nothing"
        return result


def test_a_hook_wrapper_sees_every_call_and_each_plugin_keeps_its_own_values() -> None:
    watcher = Watcher()
    plugins = PluginRegistry()
    plugins.register(watcher, "watcher")
    plugins.load(env={"INFSCHED_LOAD_PLUGINS": "none"})
    plugins.register(Plugin(executors=[spec("email")]), "email")
    plugins.register(Plugin(executors=[spec("pager"), spec("fax")]), "paging")
    plugins.add_commands(root_group())
    assert watcher.seen == [
        ("register_executors", []),  # its own registration
        ("register_executors", []),  # the built-ins register no executor
        ("register_executors", ["email"]),
        ("register_executors", ["pager", "fax"]),
        ("register_commands", ["db"]),
    ]
    assert {name: r.plugin for name, r in plugins.executors().items()} == {
        "email": "email",
        "pager": "paging",
        "fax": "paging",
    }
    watching = plugins.infos["watcher"]
    assert (watching.status, watching.hooks) == ("ok", ["register_commands", "register_executors"])


def test_a_hook_wrapper_that_raises_fails_its_plugin_and_the_call_is_made_without_it() -> None:
    plugins = registry()
    plugins.register(Plugin(executors=[spec("email")]), "email")
    info = plugins.register(Watcher(fail_with=RuntimeError("wrapper broke")), "watcher")
    assert (info.status, info.error) == (
        "failed",
        "register_executors wrapper: RuntimeError: wrapper broke",
    )
    assert not plugins.pm.has_plugin("watcher")
    later = plugins.register(Plugin(executors=[spec("pager")]), "pager")
    assert later.status == "ok"
    assert set(plugins.executors()) == {"email", "pager"}


def test_a_failed_plugin_is_unregistered_at_once_so_its_wrappers_see_no_later_call() -> None:
    class FailsEarly(Watcher):
        @hookimpl
        def register_entity_types(self) -> Iterable[type]:
            raise LookupError("no schema")

    failing, healthy = FailsEarly(), Watcher()
    plugins = registry()
    plugins.register(healthy, "healthy")
    info = plugins.register(failing, "early")
    assert (info.status, info.error) == ("failed", "LookupError: no schema")
    # register_entity_types is called before register_executors, which it wraps.
    assert failing.seen == []
    plugins.register(Plugin(executors=[spec("email")]), "email")
    plugins.add_commands(root_group())
    assert failing.seen == []
    assert healthy.seen[-2:] == [("register_executors", ["email"]), ("register_commands", ["db"])]


TRACE_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+00:00 INFO +infsched\.hooks: "
    r"(?P<hook>\w+)\((?P<args>[\w, ]*)\) plugin=(?P<plugin>\w+) (?P<ms>\d+\.\d{3}) ms"
    r"(?P<failed>, raised \w+)?$"
)


def test_trace_hooks_logs_each_implementation_call_with_plugin_and_duration(
    tmp_path: Path,
) -> None:
    install_dist(tmp_path, "infsched-raiser", "raiser", RAISING_PLUGIN)
    install_dist(tmp_path, "infsched-watching", "watching", WATCHING_PLUGIN)
    traced = infsched(tmp_path, "plugins", "list", "--json", env={"INFSCHED_TRACE_HOOKS": "1"})
    assert traced.returncode == 0, traced.stderr
    entries = {entry["name"]: entry for entry in json.loads(traced.stdout)}
    assert entries["raiser"]["status"] == "failed"
    assert_shipped_plugins_ok(entries)

    lines = traced.stderr.splitlines()
    calls = [m.groupdict() for line in lines if (m := TRACE_LINE.match(line))]
    called = {(c["hook"], c["args"], c["plugin"], c["failed"]) for c in calls}
    assert ("register_executors", "", "raiser", ", raised OSError") in called
    assert ("register_executors", "", "sms", None) in called
    assert ("register_entity_types", "", "orders", None) in called
    assert ("register_metrics_sinks", "", "log_sink", None) in called
    assert ("register_commands", "cli", "notifications", None) in called
    assert all(float(c["ms"]) >= 0 for c in calls)
    assert not any(c["plugin"] == "watching" for c in calls), "wrappers are no implementation"
    # Every implementation is called once: a failed plugin is not called again.
    assert len(called) == len(calls)
    assert ("register_commands", "cli", "raiser", None) not in called
    # The test plugin's hook wrapper saw the calls, with every plugin's values.
    assert "watched register_executors: ['notifications', 'orders', 'sms']" in lines
    assert "watched register_commands: True" in lines
    others = [line for line in lines if not TRACE_LINE.match(line)]
    assert all(line.startswith("watched ") for line in others), others

    quiet = infsched(tmp_path, "plugins", "list", "--json")
    assert quiet.returncode == 0, quiet.stderr
    assert "infsched.hooks" not in quiet.stderr
    assert quiet.stdout == traced.stdout


def test_trace_hooks_accepts_only_on_or_off(tmp_path: Path) -> None:
    result = infsched(tmp_path, "plugins", "list", env={"INFSCHED_TRACE_HOOKS": "verbose"})
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "error: INFSCHED_TRACE_HOOKS='verbose': expected 1, true, yes, on or 0, false, no, off\n"
    )
    off = infsched(tmp_path, "plugins", "list", env={"INFSCHED_TRACE_HOOKS": "0"})
    assert off.returncode == 0, off.stderr
    assert "infsched.hooks" not in off.stderr
    # It is no config field, yet the config accepts it rather than refusing it as unknown.
    assert read_env({"INFSCHED_TRACE_HOOKS": "1"}) == {}
