"""Calling hooks through pluggy while each implementation stays attributed to its plugin.

The registry calls every hook as ``pm.hook.NAME(...)``, so plugins' hook
wrappers (``@hookimpl(wrapper=True)``) see each call.  pluggy stops a call at
the first implementation that raises and cannot say whose it was; so every
plugin is registered with pluggy as an `AttributedPlugin`, whose hook
implementations are the plugin's own, each run inside `HookCalls`: it times
the call, turns the result into the value registered (the ``settle`` step,
which checks it), and records an `Outcome` per plugin.  A raising
implementation becomes a failed outcome of its plugin and returns None, which
pluggy leaves out of the results, and the other implementations still run.

A hook wrapper that raises does abort the call; its plugin is found because
wrappers are wrapped too, and the registry calls again without it.

Results are attributed by the outcome each implementation recorded, never by
their position: pluggy calls implementations last registered first (and
``tryfirst``/``trylast`` reorder them), so the registry applies the outcomes
in its own load order.  A wrapper may observe, time or log a call; what a
plugin registers is what its own implementation returned.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import time
from collections.abc import Callable, Collection, Generator, Mapping
from typing import Any, Generic, TypeVar

import attrs
import pluggy

from infsched.logs import LineFormatter

log = logging.getLogger("infsched.hooks")

V = TypeVar("V")
#: Runs one implementation (the callable) for a plugin and returns the value it registers.
Settle = Callable[[str, Callable[[], object]], V]


@attrs.frozen
class Outcome(Generic[V]):
    """What one plugin's implementation of one hook gave: a value, or the error it raised.

    `value` is only meaningful when `error` is None.
    """

    plugin: str
    value: V
    error: Exception | None
    ms: float


@attrs.frozen
class WrapperFailure:
    """A plugin's hook wrapper raised, which aborted the whole call."""

    plugin: str
    error: Exception


@attrs.frozen
class CallResult(Generic[V]):
    outcomes: list[Outcome[V]]
    wrapper_failure: WrapperFailure | None


@attrs.define
class _Pass:
    """One ``pm.hook.NAME(...)`` call in progress."""

    hook: str
    plugins: Collection[str]
    settle: Settle[Any]
    outcomes: list[Outcome[Any]] = attrs.Factory(list)
    wrapper_failure: WrapperFailure | None = None


#: The stderr handler added for INFSCHED_TRACE_HOOKS, found by its name to add it once.
_TRACE_HANDLER = "infsched.hooks.stderr"


def trace_to_stderr() -> None:
    """Show the ``infsched.hooks`` lines on stderr, whatever the root logger does."""
    log.setLevel(logging.INFO)
    if not any(h.get_name() == _TRACE_HANDLER for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_TRACE_HANDLER)
        handler.setFormatter(LineFormatter())
        log.addHandler(handler)


class AttributedPlugin:
    """What pluggy registers for one plugin: its marked hooks, each run through `HookCalls`."""

    def __init__(self, plugin: object, name: str, calls: HookCalls, pm: pluggy.PluginManager):
        self.plugin = plugin
        self.name = name
        self._hooks: list[str] = []
        for attribute in dir(plugin):
            if attribute.startswith("__"):  # no hook; skipping them halves the start-up cost
                continue
            try:
                opts = pm.parse_hookimpl_opts(plugin, attribute)
            except Exception:  # an attribute that raises when read is no hook
                continue
            if opts is None:
                continue
            function = getattr(plugin, attribute)
            wrapper = opts.get("wrapper") or opts.get("hookwrapper")
            if wrapper and inspect.isgeneratorfunction(function):
                setattr(self, attribute, calls.wrapper(name, function))
            else:  # a wrapper that is no generator is refused by pluggy on registration
                setattr(self, attribute, calls.implementation(name, function))
            self._hooks.append(attribute)

    def __dir__(self) -> list[str]:
        # pluggy looks for hooks in dir(plugin): only the hooks, not every attribute of object.
        return list(self._hooks)

    def __repr__(self) -> str:
        return f"<plugin {self.name!r}: {self.plugin!r}>"


class HookCalls:
    """Runs each hook implementation on the registry's behalf and keeps what it gave."""

    def __init__(self, *, trace: bool = False) -> None:
        self.trace = trace
        self._pass: _Pass | None = None

    def call(
        self,
        caller: pluggy.HookCaller,
        plugins: Collection[str],
        settle: Settle[V],
        kwargs: Mapping[str, object],
    ) -> CallResult[V]:
        """Call `caller` through pluggy; only `plugins`' implementations run, every wrapper does.

        The others were called already, when they loaded; running them again
        would register their values twice.
        """
        current = _Pass(caller.name, plugins, settle)
        self._pass = current
        try:
            caller(**kwargs)
        except Exception:
            if current.wrapper_failure is None:
                raise  # no implementation raises through HookCalls; a wrapper's is recorded
        finally:
            self._pass = None
        return CallResult(current.outcomes, current.wrapper_failure)

    def implementation(self, plugin: str, function: Callable[..., object]) -> Callable[..., object]:
        @functools.wraps(function)
        def attributed(*args: Any, **kwargs: Any) -> object:
            current = self._pass
            if current is None:  # called outside the registry (an embedding application)
                return function(*args, **kwargs)
            if plugin not in current.plugins:
                return None
            started = time.perf_counter()
            value: Any = None
            error: Exception | None = None
            try:
                value = current.settle(plugin, lambda: function(*args, **kwargs))
            except Exception as exc:
                error = exc
            ms = (time.perf_counter() - started) * 1000
            current.outcomes.append(Outcome(plugin, value, error, ms))
            if self.trace:
                self._trace(current.hook, function, plugin, ms, error)
            return value if error is None else None

        return attributed

    def wrapper(
        self, plugin: str, function: Callable[..., Generator[Any, Any, Any]]
    ) -> Callable[..., Generator[Any, Any, Any]]:
        @functools.wraps(function)
        def attributed(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            try:
                return (yield from function(*args, **kwargs))
            except Exception as exc:
                current = self._pass
                # The innermost wrapper records first: the one that raised.
                if current is not None and current.wrapper_failure is None:
                    current.wrapper_failure = WrapperFailure(plugin, exc)
                raise

        return attributed

    @staticmethod
    def _trace(
        hook: str, function: Callable[..., object], plugin: str, ms: float, error: Exception | None
    ) -> None:
        arguments = ", ".join(inspect.signature(function).parameters)
        failed = "" if error is None else f", raised {type(error).__name__}"
        log.info("%s(%s) plugin=%s %.3f ms%s", hook, arguments, plugin, ms, failed)
