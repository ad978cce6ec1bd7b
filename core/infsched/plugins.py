"""The plugin manager: entry points first, then the built-ins, each call attributed.

Loading never raises for one bad plugin (only for a name in
INFSCHED_DISABLE_PLUGINS or INFSCHED_LOAD_PLUGINS that no installed plugin
has: a typo there would change nothing without a word): a plugin that fails to import, whose
hooks do not match the specifications, or whose hook raises, is recorded as
failed with its error and left out, so ``infsched plugins list`` still runs.
Commands that need every plugin call `PluginRegistry.require_healthy`, which
refuses with one line naming the plugin and how to disable it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Collection, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, Literal, TypeVar

import attrs
import click
import pluggy

from infsched import hookspecs
from infsched.config import DISABLE_PLUGINS_ENV, LOAD_PLUGINS_ENV
from infsched.entities import entity_spec
from infsched.errors import PluginConflictError, PluginError
from infsched.executors import ExecutorSpec
from infsched.jobstore.backend import JobStoreBackend
from infsched.metrics.sink import MetricsSinkSpec
from infsched.repositories.backend import RepositoryBackend

ENTRY_POINT_GROUP = "infsched"
DISABLE_ENV = DISABLE_PLUGINS_ENV
LOAD_ONLY_ENV = LOAD_PLUGINS_ENV
#: ``INFSCHED_LOAD_PLUGINS=none``: no entry-point plugin, only the built-ins.
NO_PLUGINS = "none"

#: Built-in features, registered after the entry points through the same hooks.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "infsched.metrics.log_sink",
    "infsched.metrics.prometheus_sink",
    "infsched.repositories.builtin",
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


#: (hook name, label in listings, how to name a registered value)
_KINDS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("register_entity_types", "entity", lambda v: v.__name__),
    ("register_executors", "executor", lambda v: v.name),
    ("register_repository_backends", "repository backend", lambda v: v.name),
    ("register_job_stores", "job store", lambda v: v.name),
    ("register_metrics_sinks", "metrics sink", lambda v: v.name),
)
_EXPECTED: Mapping[str, type | None] = {
    "register_entity_types": None,
    "register_executors": ExecutorSpec,
    "register_repository_backends": RepositoryBackend,
    "register_job_stores": JobStoreBackend,
    "register_metrics_sinks": MetricsSinkSpec,
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


class PluginRegistry:
    """The loaded plugins and everything they registered."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.conflicts: list[str] = []
        self._registered: dict[str, dict[str, Registered[Any]]] = {h: {} for h, _, _ in _KINDS}
        #: Which plugin added each CLI command; None for the core's own.
        self._command_owner: dict[str, str | None] = {}

    # -- loading --

    def load(self, env: Mapping[str, str] | None = None) -> PluginRegistry:
        env = os.environ if env is None else env
        disabled = _names(env.get(DISABLE_ENV)) or set()
        only = _names(env.get(LOAD_ONLY_ENV))
        if only == {NO_PLUGINS}:
            only = set()
        found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        installed = [ep.name for ep in found]
        _refuse_unknown(DISABLE_ENV, disabled, installed)
        _refuse_unknown(LOAD_ONLY_ENV, only or set(), installed)
        for ep in found:
            self._load_entry_point(ep, disabled, only)
        for module_name in BUILTIN_PLUGINS:
            module = importlib.import_module(module_name)
            name = module_name.rsplit(".", 1)[-1]
            if self._name_taken(name, "infinite-scheduler"):
                continue
            self._add(module, name, "infinite-scheduler", _own_version(), builtin=True)
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
        self._add(plugin, name, distribution, version, builtin=False)
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

    def _load_entry_point(self, ep: EntryPoint, disabled: set[str], only: set[str] | None) -> None:
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        if self._name_taken(ep.name, dist):
            return
        if ep.name in disabled or (only is not None and ep.name not in only):
            self.infos[ep.name] = PluginInfo(ep.name, dist, version, "disabled")
            return
        try:
            plugin = ep.load()
        except BaseException as exc:  # a plugin's import may raise anything, even SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.infos[ep.name] = PluginInfo(ep.name, dist, version, "failed", error=_describe(exc))
            return
        self._add(plugin, ep.name, dist, version, builtin=False)

    def _add(
        self, plugin: object, name: str, dist: str | None, version: str | None, *, builtin: bool
    ) -> None:
        info = PluginInfo(name, dist, version, "ok", builtin=builtin)
        self.infos[name] = info
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            info.status, info.error = "failed", _one_line(f"incompatible hook: {exc}")
            return
        except ValueError as exc:
            info.status, info.error = "failed", _describe(exc)
            return
        callers = self.pm.get_hookcallers(plugin) or []
        unknown = [c.name for c in callers if c.spec is None]
        if unknown:
            self.pm.unregister(plugin)
            known = ", ".join(sorted(_KNOWN_HOOKS))
            info.status = "failed"
            info.error = f"implements unknown hook(s) {', '.join(unknown)}; known hooks: {known}"
            return
        info.hooks = sorted(c.name for c in callers)
        self._collect(plugin, info)

    def _collect(self, plugin: object, info: PluginInfo) -> None:
        """Call each register_* hook of one plugin; keep its values only if all succeed."""
        found: list[tuple[str, str, Any]] = []
        try:
            for hook, _label, name_of in _KINDS:
                for impl in getattr(self.pm.hook, hook).get_hookimpls():
                    if impl.plugin is not plugin:
                        continue
                    for value in impl.function() or ():
                        _check_value(hook, value)
                        found.append((hook, name_of(value), value))
        except Exception as exc:
            self._fail(plugin, info, _describe(exc))
            return
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

    def _conflict(self, message: str, *infos: PluginInfo) -> None:
        self.conflicts.append(message)
        for info in infos:
            info.conflicts.append(message)

    def _fail(self, plugin: object, info: PluginInfo, error: str) -> None:
        """Mark a loaded plugin failed and forget everything it registered."""
        self.pm.unregister(plugin)
        for values in self._registered.values():
            for key in [k for k, v in values.items() if v.plugin == info.name]:
                del values[key]
        info.status, info.error, info.registers = "failed", error, []

    # -- commands --

    def add_commands(self, cli: click.Group) -> None:
        """Let each healthy plugin add its commands; refuse replacing an existing one."""
        for name in cli.commands:
            self._command_owner.setdefault(name, None)
        for impl in self.pm.hook.register_commands.get_hookimpls():
            info = self.infos[self.pm.get_name(impl.plugin) or ""]
            before = dict(cli.commands)
            try:
                impl.function(**{arg: cli for arg in impl.argnames if arg == "cli"})
            except Exception as exc:
                cli.commands = before
                self._fail(impl.plugin, info, f"register_commands: {_describe(exc)}")
                continue
            for name, command in list(cli.commands.items()):
                if name in before and before[name] is not command:
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
                    cli.commands[name] = before[name]
                elif name not in before:
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


def _own_version() -> str:
    from infsched import __version__

    return __version__


def load_plugins(env: Mapping[str, str] | None = None) -> PluginRegistry:
    """Load the entry-point plugins and the built-ins."""
    return PluginRegistry().load(env)
