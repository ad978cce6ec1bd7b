"""LimitAdmin: what ``infsched limits`` and the Python API do with flow limits.

On top of `LimitStore` (which keeps them in ``infsched_limits``), it checks an
operator's limit before anything is stored, with one-line errors naming the
target and the field, and gives a removed operator limit's target back to
what is declared for it (``[[limits]]``, an executor's `ExecutorSpec.limit`),
so that a declared limit holds again at once, not only when a node next
starts.  Every node reads which targets have rows once a second, so a change
reaches the whole cluster within about a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import attrs

from infsched.config import SchedulerConfig, from_plugin_section
from infsched.engine.flow import declared_limits
from infsched.flow_limits import RATE_UNITS, FlowLimit, Limit, LimitError, LimitScope, LimitTarget
from infsched.limit_store import LimitStore, Put, StoredLimit
from infsched.plugins import PluginRegistry

#: The limits a caller knows to be declared, each with its source (``config``, ``executor NAME``).
Declared = Callable[[], Sequence[tuple[Limit, str]]]


def _none() -> Sequence[tuple[Limit, str]]:
    return ()


def target_of(target: str | LimitTarget) -> LimitTarget:
    """``executor:sms``, ``repository:orders`` or ``key:acme`` (or a LimitTarget) as a target."""
    if isinstance(target, LimitTarget):
        return target
    if not isinstance(target, str):
        raise LimitError(f"limit {target!r}: the target must be text, SCOPE:NAME")
    return LimitTarget.parse(target)


def operator_limit(
    target: str | LimitTarget,
    *,
    rate: float | None = None,
    per: str = "second",
    burst: int = 1,
    max_concurrent: int | None = None,
) -> Limit:
    """The limit `limits set` would store, checked: LimitError naming the target and field."""
    found = target_of(target)
    if per not in RATE_UNITS:
        raise LimitError(f"limit {found}: per: {per!r} must be 'second' or 'minute'")
    if rate is not None and (
        isinstance(rate, bool)
        or not isinstance(rate, int | float)
        or not rate > 0
        or not math.isfinite(rate)
    ):
        raise LimitError(f"limit {found}: rate: {rate!r} must be a number of starts per {per} > 0")
    if rate is None and max_concurrent is None:
        raise LimitError(f"limit {found}: give a rate, max_concurrent or both")
    if rate is None and burst != 1:
        raise LimitError(f"limit {found}: burst: {burst!r} needs a rate (it is the rate's burst)")
    try:
        limit = FlowLimit(
            rate=None if rate is None else rate / RATE_UNITS[per],
            burst=burst,
            max_concurrent=max_concurrent,
        )
    except LimitError as exc:
        raise LimitError(f"limit {found}: {exc}") from None
    return Limit(found, limit)


def declared_by(config: SchedulerConfig, plugins: PluginRegistry | None) -> list[tuple[Limit, str]]:
    """What a node started with `config` and `plugins` declares: ``[[limits]]``, and the
    limits of the executors its repositories name (`ExecutorSpec.limit`)."""
    executor_limits = []
    registered = plugins.executors() if plugins is not None else {}
    for name in sorted({r.executor for r in config.repositories}):
        found = registered.get(name)
        if found is None:
            continue
        section = config.plugin_section(found.plugin)
        limit = from_plugin_section(found.plugin, found.value.limit_for, section)
        if limit is not None:
            executor_limits.append(Limit(LimitTarget(LimitScope.EXECUTOR, name), limit))
    return declared_limits(config.limits, executor_limits)


@attrs.frozen
class Removal:
    """What `LimitAdmin.remove` did to a target."""

    #: The limit removed, as it was.
    removed: StoredLimit
    #: The declared limit in force in its place, its state kept (None: the target has no limit).
    in_force: StoredLimit | None


class LimitAdmin:
    """Set (checked), read and remove one database's flow limits."""

    def __init__(self, store: LimitStore, declared: Declared = _none) -> None:
        self.store = store
        #: The declarations a removed operator limit gives its target back to.
        self.declared = declared

    def set(
        self,
        target: str | LimitTarget,
        *,
        rate: float | None = None,
        per: str = "second",
        burst: int = 1,
        max_concurrent: int | None = None,
    ) -> tuple[Limit, Put]:
        """Store an operator's limit (``added``, ``replaced`` or ``unchanged``); it holds
        over a declared one until removed.  A refused one stores nothing."""
        limit = operator_limit(
            target, rate=rate, per=per, burst=burst, max_concurrent=max_concurrent
        )
        return limit, self.store.set(limit)

    def limits(self) -> list[StoredLimit]:
        """Every target's limit and state (throttled gateways' holds too), by target."""
        return self.store.all()

    def get(self, target: str | LimitTarget) -> StoredLimit:
        """The limit on `target`; LimitError naming the limits there are when it has none."""
        found = target_of(target)
        stored = self.store.get(found)
        if stored is None:
            raise LimitError(f"no limit on {found} ({self._listing()})")
        return stored

    def remove(self, target: str | LimitTarget) -> Removal:
        """Remove the limit on `target`; a limit declared for it holds again in its place.

        LimitError naming the limits there are when `target` has none.
        """
        removed = self.get(target)
        declared = {limit.target.id: (limit, source) for limit, source in self.declared()}
        again = declared.get(removed.target.id)
        if again is not None and self.store.replace(*again):
            return Removal(removed, self.store.get(removed.target))
        self.store.remove(removed.target)
        return Removal(removed, None)

    def _listing(self) -> str:
        targets = [s.target.id for s in self.store.all()]
        return f"the limits: {', '.join(targets)}" if targets else "no target has a limit"
