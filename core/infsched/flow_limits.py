"""Flow limits: what may start how often, and how many at once, across the whole cluster.

A limit applies to a *target*: every job of an executor (``executor:sms``), of
a repository (``repository:orders``), or of a flow key (``key:acme``, the value
of the entity field a repository names as its ``flow_key``).  A job's *lane*
is its (repository, executor, flow key); the targets of a lane are the three
it belongs to, and a job starts only when each of those that has a limit
allows it.  docs/flow-control.md says how the cluster enforces them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import attrs

from infsched.errors import InvalidArgumentError


class LimitError(InvalidArgumentError):
    """A limit is malformed: the message names the limit and the field."""


class LimitScope(enum.Enum):
    """What a limit's target names."""

    EXECUTOR = "executor"
    REPOSITORY = "repository"
    KEY = "key"


#: Longest target id ("scope:name"): the width of the limits table's key.
MAX_TARGET = 240


def _target_name(inst: LimitTarget, field: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value or value != value.strip():
        raise LimitError(
            f"limit {inst.scope.value}: name {value!r} must be a non-empty string "
            "without surrounding spaces"
        )
    if len(value) > MAX_TARGET - len("repository:"):
        raise LimitError(f"limit {inst.scope.value}:{value[:40]}…: name is too long")


@attrs.frozen
class LimitTarget:
    """What one limit applies to."""

    scope: LimitScope
    name: str = attrs.field(validator=_target_name)

    @property
    def id(self) -> str:
        """``scope:name``: the key of the limit's row, and its label in metrics."""
        return f"{self.scope.value}:{self.name}"

    def __str__(self) -> str:
        return self.id

    @classmethod
    def parse(cls, text: str) -> LimitTarget:
        """``executor:sms``, ``repository:orders`` or ``key:acme``."""
        scope, sep, name = text.partition(":")
        scopes = ", ".join(s.value for s in LimitScope)
        if not sep:
            raise LimitError(f"limit {text!r}: write SCOPE:NAME, SCOPE one of {scopes}")
        try:
            kind = LimitScope(scope)
        except ValueError:
            raise LimitError(f"limit {text!r}: unknown scope {scope!r} (one of {scopes})") from None
        return cls(kind, name)


class Lane(NamedTuple):
    """Where a job waits for its turn: jobs of one lane start in due order."""

    repository: str
    executor: str
    flow_key: str

    def targets(self) -> tuple[str, ...]:
        """The ids of the targets this lane's jobs count against (limited or not)."""
        found = (f"executor:{self.executor}", f"repository:{self.repository}")
        return (*found, f"key:{self.flow_key}") if self.flow_key else found


def _positive_rate(inst: FlowLimit, field: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise LimitError(f"rate: {value!r} must be a number of starts per second > 0")
    if not math.isfinite(value):
        raise LimitError(f"rate: {value!r} must be finite")


def _whole(inst: FlowLimit, field: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LimitError(f"{field.name}: {value!r} must be a whole number >= 1")


@attrs.frozen
class FlowLimit:
    """A rate (starts per second, with a burst) and/or a cap on jobs in flight.

    A limit with neither holds nothing back by itself; it exists where a
    throttled gateway's hold is kept (`held_until` in the limits table).
    """

    #: Starts per second across the cluster; None: no rate limit.
    rate: float | None = attrs.field(default=None, validator=_positive_rate)
    #: Starts allowed back to back after an idle spell (1: evenly spaced).
    burst: int = attrs.field(default=1, validator=_whole)
    #: Jobs in flight (claimed, running, being recorded) across the cluster, at most.
    max_concurrent: int | None = attrs.field(default=None, validator=_whole)

    def describe(self) -> str:
        parts = []
        if self.rate is not None:
            parts.append(f"rate {self.rate:g}/s burst {self.burst}")
        if self.max_concurrent is not None:
            parts.append(f"max_concurrent {self.max_concurrent}")
        return ", ".join(parts) or "no limit (holds only)"


@attrs.frozen
class Limit:
    """A limit on a target."""

    target: LimitTarget
    limit: FlowLimit

    def __str__(self) -> str:
        return f"{self.target}: {self.limit.describe()}"


#: Seconds per unit a rate may be given in.
RATE_UNITS = {"second": 1.0, "minute": 60.0}
#: The keys of a ``[[limits]]`` table (one of the first three names the target).
LIMIT_KEYS = ("executor", "repository", "key", "rate", "per", "burst", "max_concurrent")


def limit_from_table(where: str, raw: object) -> Limit:
    """A ``[[limits]]`` table (or an ExecutorSpec's) as a Limit; LimitError naming `where`."""
    if not isinstance(raw, Mapping):
        raise LimitError(f"{where}: expected a table, got {raw!r}")
    unknown = [k for k in raw if k not in LIMIT_KEYS]
    if unknown:
        raise LimitError(
            f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(LIMIT_KEYS)})"
        )
    scopes = [s for s in LimitScope if s.value in raw]
    if len(scopes) != 1:
        raise LimitError(f"{where}: name exactly one of executor, repository or key")
    scope = scopes[0]
    try:
        target = LimitTarget(scope, raw[scope.value])
    except LimitError as exc:
        raise LimitError(f"{where}: {exc}") from None
    where = f"{where} ({target})"
    per = raw.get("per", "second")
    if per not in RATE_UNITS:
        raise LimitError(f"{where}.per: {per!r} must be 'second' or 'minute'")
    rate = raw.get("rate")
    if "rate" not in raw and "max_concurrent" not in raw:
        raise LimitError(f"{where}: give rate, max_concurrent or both")
    try:
        _positive_rate(FlowLimit(), attrs.fields(FlowLimit).rate, rate)
        limit = FlowLimit(
            rate=None if rate is None else float(rate) / RATE_UNITS[per],
            burst=raw.get("burst", 1),
            max_concurrent=raw.get("max_concurrent"),
        )
    except LimitError as exc:
        raise LimitError(f"{where}.{exc}") from None
    return Limit(target, limit)
