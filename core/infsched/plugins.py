"""The plugin manager: entry points first, then the built-ins, each call attributed.

Hooks are called through pluggy (``pm.hook.NAME(...)``), so plugins' hook
wrappers see every call; `infsched.hookcalls` keeps each implementation's
result and failure attributed to its plugin, and ``INFSCHED_TRACE_HOOKS=1``
logs each implementation's call with its plugin and duration.

Loading never raises for one bad plugin (only for a name in
INFSCHED_DISABLE_PLUGINS or INFSCHED_LOAD_PLUGINS that no installed plugin
has: a typo there would change nothing without a word): a plugin that fails to import, whose
hooks do not match the specifications, or whose hook raises, is recorded as
failed with its error and left out, so ``infsched plugins list`` still runs.
Commands that need every plugin call `PluginRegistry.require_healthy`, which
refuses with one line naming the plugin and how to disable it.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, Literal, TypeVar, cast

import attrs
import click
import pluggy

from infsched import hookspecs
from infsched.config import DISABLE_PLUGINS_ENV, LOAD_PLUGINS_ENV, TRACE_HOOKS_ENV, env_flag
from infsched.database import Database
from infsched.dialects import Dialect, register_dialect
from infsched.entities import entity_spec
from infsched.errors import PluginConflictError, PluginError
from infsched.executors import ExecutorSpec
from infsched.hookcalls import AttributedPlugin, HookCalls, Outcome, Settle, trace_to_stderr
from infsched.jobstore.backend import JobStoreBackend
from infsched.jobstore.base import JobStore
from infsched.metrics.sink import MetricsSinkSpec
from infsched.repositories.backend import RepositoryBackend
from infsched.schedules import Schedule
from infsched.version import __version__

ENTRY_POINT_GROUP = "infsched"
DISABLE_ENV = DISABLE_PLUGINS_ENV
LOAD_ONLY_ENV = LOAD_PLUGINS_ENV
#: ``INFSCHED_LOAD_PLUGINS=none``: no entry-point plugin, only the built-ins.
NO_PLUGINS = "none"

#: Built-in features, registered after the entry points through the same hooks.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "infsched.dialects.builtin_dialects",
    "infsched.metrics.log_sink",
    "infsched.metrics.prometheus_sink",
    "infsched.repositories.builtin",
    "infsched.jobstore.sql_store",
)

Status = Literal["ok", "failed", "disabled"]
V = TypeVar("V")


@attrs.define
class PluginInfo:
    """One plugin as `plugins list` shows it."""

    name: str
    distribution: str | None
    version: str | None
    status: Status
    builtin: bool = False
    error: str | None = None
    hooks: list[str] = attrs.Factory(list)
    registers: list[str] = attrs.Factory(list)
    #: Names this plugin registered that another plugin (or the core) registered too.
    conflicts: list[str] = attrs.Factory(list)

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class Registered(Generic[V]):
    """A value a plugin registered, with the plugin's name."""

    value: V
    plugin: str


@attrs.frozen
class DeclaredSchedule:
    """A schedule a plugin declared (`register_schedules`), with the plugin's name."""

    schedule: Schedule
    plugin: str

    @property
    def source(self) -> str:
        """What the schedule's row records as its source."""
        return f"plugin {self.plugin}"


#: (hook name, label in listings, how to name a registered value)
_KINDS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("register_dialects", "dialect", lambda v: v.name),
    ("register_entity_types", "entity", lambda v: v.__name__),
    ("register_executors", "executor", lambda v: v.name),
    ("register_repository_backends", "repository backend", lambda v: v.name),
    ("register_job_stores", "job store", lambda v: v.name),
    ("register_metrics_sinks", "metrics sink", lambda v: v.name),
    ("register_schedules", "schedule", lambda v: v.name),
)
_EXPECTED: Mapping[str, type | None] = {
    "register_dialects": Dialect,
    "register_entity_types": None,
    "register_executors": ExecutorSpec,
    "register_repository_backends": RepositoryBackend,
    "register_job_stores": JobStoreBackend,
    "register_metrics_sinks": MetricsSinkSpec,
    "register_schedules": Schedule,
}


def _names(raw: str | None) -> set[str] | None:
    if raw is None or not raw.strip():  # empty means unset, as for every INFSCHED_* variable
        return None
    return {n.strip() for n in raw.split(",") if n.strip()}


def _refuse_unknown(variable: str, names: set[str], installed: list[str]) -> None:
    """A selection naming no installed plugin is a typo: it would select nothing, silently."""
    for name in sorted(names):
        if name in installed:
            continue
        listed = ", ".join(installed) or "none"
        builtin = {module.rsplit(".", 1)[-1] for module in BUILTIN_PLUGINS}
        why = " is built in and always loaded" if name in builtin else " is no installed plugin"
        raise PluginError(f"{variable}: {name!r}{why}; the installed plugins are: {listed}")


def _one_line(text: str) -> str:
    """Errors are shown on one line (pluggy's validation messages span several)."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _describe(exc: BaseException) -> str:
    return _one_line(f"{type(exc).__name__}: {exc}")


def _check_value(hook: str, value: object) -> None:
    expected = _EXPECTED[hook]
    if expected is None:
        if not isinstance(value, type):
            raise PluginError(f"{hook} returned {value!r}, expected entity classes")
        entity_spec(value)  # raises EntityError naming the field
    elif not isinstance(value, expected):
        raise PluginError(f"{hook} returned {value!r}, expected {expected.__name__} values")


def _registrations(hook: str) -> Settle[list[object]]:
    """Run a register_* implementation to the end (it may be a generator) and check each value.

    The list is also what pluggy's result and the plugins' hook wrappers see.
    """

    def settle(plugin: str, run: Callable[[], object]) -> list[object]:
        # Not iterable raises TypeError here, attributed to the plugin like any failure.
        returned = cast(Iterable[object] | None, run())
        found = list(returned or ())
        for value in found:
            _check_value(hook, value)
        return found

    return settle


@attrs.define
class _AddedCommands:
    """Settles register_commands: takes each plugin's new or replaced commands back out.

    The registry adds them afterwards in load order, refusing replacements.
    """

    cli: click.Group
    by_plugin: dict[str, dict[str, click.Command]] = attrs.Factory(dict)

    def __call__(self, plugin: str, run: Callable[[], object]) -> None:
        before = dict(self.cli.commands)
        try:
            run()
            changed = {n: c for n, c in self.cli.commands.items() if before.get(n) is not c}
            self.by_plugin[plugin] = changed
        finally:
            self.cli.commands = before


class PluginRegistry:
    """The loaded plugins and everything they registered."""

    def __init__(self, *, trace_hooks: bool = False) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.calls = HookCalls()
        if trace_hooks:
            self.trace_hooks()
        self.infos: dict[str, PluginInfo] = {}
        self.conflicts: list[str] = []
        self._registered: dict[str, dict[str, Registered[Any]]] = {h: {} for h, _, _ in _KINDS}
        #: Which plugin added each CLI command; None for the core's own.
        self._command_owner: dict[str, str | None] = {}

    # -- loading --

    def trace_hooks(self) -> None:
        """Log each hook implementation's call (logger ``infsched.hooks``), also on stderr."""
        self.calls.trace = True
        trace_to_stderr()

    def load(self, env: Mapping[str, str] | None = None) -> PluginRegistry:
        env = os.environ if env is None else env
        if env_flag(env, TRACE_HOOKS_ENV):
            self.trace_hooks()
        disabled = _names(env.get(DISABLE_ENV)) or set()
        only = _names(env.get(LOAD_ONLY_ENV))
        if only == {NO_PLUGINS}:
            only = set()
        found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        installed = [ep.name for ep in found]
        _refuse_unknown(DISABLE_ENV, disabled, installed)
        _refuse_unknown(LOAD_ONLY_ENV, only or set(), installed)
        pending = [n for ep in found if (n := self._load_entry_point(ep, disabled, only))]
        for module_name in BUILTIN_PLUGINS:
            module = importlib.import_module(module_name)
            name = module_name.rsplit(".", 1)[-1]
            if self._name_taken(name, "infinite-scheduler"):
                continue
            if self._add(module, name, "infinite-scheduler", __version__, builtin=True):
                pending.append(name)
        self._collect(pending)
        return self

    def register(
        self,
        plugin: object,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> PluginInfo:
        """Add a plugin object that no entry point names (an embedding application, a test).

        It is checked and attributed exactly like an entry-point plugin; a
        failure is recorded in the returned `PluginInfo`, not raised.  A name
        already in use raises PluginConflictError: the caller chose it.
        """
        if name in self.infos:
            raise PluginConflictError(
                f"a plugin named {name!r} is already loaded "
                f"({self.infos[name].distribution}); register this one under another name"
            )
        if self._add(plugin, name, distribution, version, builtin=False):
            self._collect([name])
        return self.infos[name]

    def _name_taken(self, name: str, dist: str | None) -> bool:
        if name not in self.infos:
            return False
        first = self.infos[name]
        self._conflict(
            f"two plugins are named {name!r} ({first.distribution} and {dist}); uninstall one",
            first,
        )
        return True

    def _load_entry_point(
        self, ep: EntryPoint, disabled: set[str], only: set[str] | None
    ) -> str | None:
        """Import and register one entry point; its name if its hooks are to be collected."""
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        if self._name_taken(ep.name, dist):
            return None
        if ep.name in disabled or (only is not None and ep.name not in only):
            self.infos[ep.name] = PluginInfo(ep.name, dist, version, "disabled")
            return None
        try:
            plugin = ep.load()
        except BaseException as exc:  # a plugin's import may raise anything, even SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.infos[ep.name] = PluginInfo(ep.name, dist, version, "failed", error=_describe(exc))
            return None
        return ep.name if self._add(plugin, ep.name, dist, version, builtin=False) else None

    def _add(
        self, plugin: object, name: str, dist: str | None, version: str | None, *, builtin: bool
    ) -> bool:
        """Register `plugin` with pluggy, checking its hooks; False if it failed."""
        info = PluginInfo(name, dist, version, "ok", builtin=builtin)
        self.infos[name] = info
        attributed = AttributedPlugin(plugin, name, self.calls, self.pm)
        try:
            self.pm.register(attributed, name=name)
        except pluggy.PluginValidationError as exc:
            info.status, info.error = "failed", _one_line(f"incompatible hook: {exc}")
            return False
        except ValueError as exc:
            info.status, info.error = "failed", _describe(exc)
            return False
        callers = self.pm.get_hookcallers(attributed) or []
        unknown = [c.name for c in callers if c.spec is None]
        if unknown:
            self.pm.unregister(attributed)
            known = ", ".join(sorted(_KNOWN_HOOKS))
            info.status = "failed"
            info.error = f"implements unknown hook(s) {', '.join(unknown)}; known hooks: {known}"
            return False
        info.hooks = sorted(c.name for c in callers)
        return True

    def _call(
        self, hook: str, plugins: Collection[str], settle: Settle[V], **kwargs: object
    ) -> dict[str, Outcome[V]]:
        """Call `hook` through pluggy for `plugins`: {plugin: its outcome}.

        A hook wrapper that raises fails its plugin, and the call is made again without it.
        """
        plugins = set(plugins)
        while True:
            result = self.calls.call(getattr(self.pm.hook, hook), plugins, settle, kwargs)
            failure = result.wrapper_failure
            if failure is None:
                return {outcome.plugin: outcome for outcome in result.outcomes}
            self._fail(failure.plugin, f"{hook} wrapper: {_describe(failure.error)}")
            plugins.discard(failure.plugin)

    def _collect(self, names: list[str]) -> None:
        """Call each register_* hook for the plugins `names`, once for all of them.

        A plugin keeps its values only if all its hooks succeed; the values
        are registered in load order, so the first plugin to register a name keeps it.
        """
        found: dict[str, list[tuple[str, str, Any]]] = {name: [] for name in names}
        for hook, _label, name_of in _KINDS:
            calling = [name for name in names if self.infos[name].status == "ok"]
            for name, outcome in self._call(hook, calling, _registrations(hook)).items():
                if outcome.error is not None:
                    # Unregistered at once: its wrappers must not run around the next hooks.
                    self._fail(name, _describe(outcome.error))
                else:
                    found[name].extend((hook, name_of(value), value) for value in outcome.value)
        for name in names:
            if self.infos[name].status == "ok":
                self._register_values(self.infos[name], found[name])

    def _register_values(self, info: PluginInfo, found: list[tuple[str, str, Any]]) -> None:
        labels = {hook: label for hook, label, _ in _KINDS}
        for hook, key, value in found:
            existing = self._registered[hook].get(key)
            if existing is not None:
                first = self.infos[existing.plugin]
                self._conflict(
                    f"{labels[hook]} {key!r} is registered by both plugin {existing.plugin!r} "
                    f"and plugin {info.name!r}; disable one with {DISABLE_ENV}="
                    f"{existing.plugin if not first.builtin else info.name}",
                    first,
                    info,
                )
                continue
            self._registered[hook][key] = Registered(value, info.name)
            info.registers.append(f"{labels[hook]}: {key}")
            if hook == "register_dialects":
                register_dialect(value)  # its URLs are accepted from now on

    def _conflict(self, message: str, *infos: PluginInfo) -> None:
        self.conflicts.append(message)
        for info in infos:
            info.conflicts.append(message)

    def _fail(self, name: str, error: str) -> None:
        """Mark a loaded plugin failed and forget everything it registered."""
        info = self.infos[name]
        self.pm.unregister(name=name)
        for values in self._registered.values():
            for key in [k for k, v in values.items() if v.plugin == info.name]:
                del values[key]
        info.status, info.error, info.registers = "failed", error, []

    # -- commands --

    def add_commands(self, cli: click.Group) -> None:
        """Let each healthy plugin add its commands; refuse replacing an existing one."""
        for name in cli.commands:
            self._command_owner.setdefault(name, None)
        healthy = [name for name, info in self.infos.items() if info.status == "ok"]
        added = _AddedCommands(cli)
        outcomes = self._call("register_commands", healthy, added, cli=cli)
        for plugin in healthy:
            outcome = outcomes.get(plugin)
            info = self.infos[plugin]
            if outcome is None or info.status != "ok":
                continue
            if outcome.error is not None:
                self._fail(plugin, f"register_commands: {_describe(outcome.error)}")
                continue
            for name, command in added.by_plugin[plugin].items():
                if name in cli.commands:
                    owner = self._command_owner.get(name)
                    first = [self.infos[owner]] if owner is not None else []
                    self._conflict(
                        f"command {name!r} is registered by both "
                        + (f"plugin {owner!r}" if owner is not None else "the core")
                        + f" and plugin {info.name!r}, which may not replace it; "
                        f"disable it with {DISABLE_ENV}={info.name}",
                        *first,
                        info,
                    )
                else:
                    cli.commands[name] = command
                    self._command_owner[name] = info.name
                    info.registers.append(f"command: {name}")

    # -- queries --

    def require_healthy(self) -> None:
        """Raise PluginError with one clear line if any plugin failed or two conflict."""
        for info in self.infos.values():
            if info.status == "failed":
                raise PluginError(
                    f"plugin {info.name!r} ({info.distribution or 'unknown distribution'}) failed "
                    f"to load: {info.error}. Fix or uninstall it, or disable it with "
                    f"{DISABLE_ENV}={info.name}"
                )
        if self.conflicts:
            raise PluginConflictError(self.conflicts[0])

    def require_sections(self, sections: Collection[str]) -> None:
        """Refuse a ``[plugins.NAME]`` section that no plugin and no metrics sink reads.

        A section is read by the plugin of its name (its executors and
        commands) or by the metrics sink of its name; a misspelt one would
        leave its settings (a gateway, a password) unused without a word.
        """
        readers = sorted({*self.infos, *self._registered["register_metrics_sinks"]})
        for name in sorted(sections):
            if name not in readers:
                raise PluginError(
                    f"config section [plugins.{name}] names no plugin or metrics sink; "
                    f"the sections that are read are: {', '.join(readers)}"
                )

    def _get(self, hook: str, what: str, name: str) -> Registered[Any]:
        found = self._registered[hook].get(name)
        if found is None:
            known = ", ".join(sorted(self._registered[hook])) or "none"
            raise PluginError(f"no {what} named {name!r} is registered (known: {known})")
        return found

    def dialects(self) -> dict[str, Registered[Dialect]]:
        return dict(self._registered["register_dialects"])

    def entity_types(self) -> dict[str, Registered[type]]:
        return dict(self._registered["register_entity_types"])

    def executors(self) -> dict[str, Registered[ExecutorSpec]]:
        return dict(self._registered["register_executors"])

    def repository_backends(self) -> dict[str, Registered[RepositoryBackend]]:
        return dict(self._registered["register_repository_backends"])

    def job_stores(self) -> dict[str, Registered[JobStoreBackend]]:
        return dict(self._registered["register_job_stores"])

    def metrics_sinks(self) -> dict[str, Registered[MetricsSinkSpec]]:
        return dict(self._registered["register_metrics_sinks"])

    def schedules(self) -> list[DeclaredSchedule]:
        """The schedules the healthy plugins declared, by name."""
        found = self._registered["register_schedules"]
        return [DeclaredSchedule(found[name].value, found[name].plugin) for name in sorted(found)]

    def entity_type(self, name: str) -> type:
        value: type = self._get("register_entity_types", "entity type", name).value
        return value

    def executor(self, name: str) -> ExecutorSpec:
        value: ExecutorSpec = self._get("register_executors", "executor", name).value
        return value

    def repository_backend(self, name: str) -> RepositoryBackend:
        value: RepositoryBackend = self._get(
            "register_repository_backends", "repository backend", name
        ).value
        return value

    def job_store(self, name: str) -> JobStoreBackend:
        value: JobStoreBackend = self._get("register_job_stores", "job store", name).value
        return value

    def open_job_store(self, name: str, database: Database) -> JobStore:
        """The job store `name` (the configuration's ``job_store``) on `database`.

        A name no plugin registered is refused with one line naming those that are.
        """
        found = self._registered["register_job_stores"].get(name)
        if found is None:
            known = ", ".join(sorted(self._registered["register_job_stores"])) or "none"
            raise PluginError(
                f"job_store: no job store named {name!r} is registered (known: {known})"
            )
        backend: JobStoreBackend = found.value
        return backend.factory(database)

    def metrics_sink(self, name: str) -> MetricsSinkSpec:
        value: MetricsSinkSpec = self._get("register_metrics_sinks", "metrics sink", name).value
        return value

    def listing(self) -> list[PluginInfo]:
        return sorted(self.infos.values(), key=lambda i: (i.builtin, i.name))


_KNOWN_HOOKS = {
    name
    for name in dir(hookspecs)
    if name.startswith("register_") and callable(getattr(hookspecs, name))
}


def load_plugins(env: Mapping[str, str] | None = None) -> PluginRegistry:
    """Load the entry-point plugins and the built-ins."""
    return PluginRegistry().load(env)


@functools.cache
def builtin_plugins() -> PluginRegistry:
    """The built-ins alone: what a node or a JobAdmin made without plugins uses."""
    return load_plugins({LOAD_ONLY_ENV: NO_PLUGINS})


def open_job_store(plugins: PluginRegistry | None, name: str, database: Database) -> JobStore:
    """The job store `name` on `database`, from `plugins` (the built-ins when None)."""
    return (plugins if plugins is not None else builtin_plugins()).open_job_store(name, database)
