"""The metrics-sink contract: where counters, gauges and histograms go."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from infsched.names import check_name

Labels = Mapping[str, str]


@runtime_checkable
class MetricsSink(Protocol):
    """Receives measurements as they happen; must be thread-safe and quick.

    Names are Prometheus-style base names without the ``infsched_`` prefix,
    e.g. ``jobs_executed_total`` or ``lag_seconds``.
    """

    def increment(self, name: str, value: float = 1.0, labels: Labels | None = None) -> None: ...

    def set_gauge(self, name: str, value: float, labels: Labels | None = None) -> None: ...

    def observe(self, name: str, value: float, labels: Labels | None = None) -> None: ...

    def close(self) -> None: ...


MetricsSinkFactory = Callable[[Mapping[str, Any]], MetricsSink]


@attrs.frozen
class MetricsSinkSpec:
    """A named sink, registered through `register_metrics_sinks`.

    The factory receives the sink's config section (``[plugins.NAME]``).
    """

    name: str = attrs.field(validator=lambda _, __, v: check_name(v, "metrics sink name"))
    factory: MetricsSinkFactory
    description: str = ""
