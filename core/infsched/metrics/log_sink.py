"""The built-in ``log`` metrics sink: one summary line every N seconds.

It keeps, per series, a counter total, the last gauge value, or the
histogram samples of the current interval (bounded by reservoir sampling,
so memory does not grow with traffic), and logs them as one line.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from infsched.errors import ConfigError, InvalidArgumentError
from infsched.markers import hookimpl
from infsched.metrics.sink import Labels, MetricsSink, MetricsSinkSpec

log = logging.getLogger("infsched.metrics")

RESERVOIR_SIZE = 2048

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def _key(name: str, labels: Labels | None) -> SeriesKey:
    return name, tuple(sorted((labels or {}).items()))


def _series(key: SeriesKey) -> str:
    name, labels = key
    if not labels:
        return name
    return name + "{" + ",".join(f"{k}={v}" for k, v in labels) + "}"


def _number(value: float) -> str:
    # 15 significant digits: a counter of 1234567 reads 1234567, not 1.23457e+06.
    return f"{value:.15g}"


def _quantile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class LogMetricsSink:
    """Accumulates measurements and logs a summary every `interval` seconds."""

    def __init__(self, interval: float = 10.0, logger: logging.Logger | None = None) -> None:
        if interval <= 0:
            raise InvalidArgumentError(f"log sink interval: {interval!r} must be > 0 seconds")
        self.interval = interval
        self._log = logger or log
        self._lock = threading.Lock()
        self._counters: dict[SeriesKey, float] = {}
        self._gauges: dict[SeriesKey, float] = {}
        self._samples: dict[SeriesKey, list[float]] = {}
        self._seen: dict[SeriesKey, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="infsched-log-metrics", daemon=True)
        self._thread.start()

    def increment(self, name: str, value: float = 1.0, labels: Labels | None = None) -> None:
        key = _key(name, labels)
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + value

    def set_gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        with self._lock:
            self._gauges[_key(name, labels)] = value

    def observe(self, name: str, value: float, labels: Labels | None = None) -> None:
        key = _key(name, labels)
        with self._lock:
            seen = self._seen.get(key, 0) + 1
            self._seen[key] = seen
            samples = self._samples.setdefault(key, [])
            if len(samples) < RESERVOIR_SIZE:
                samples.append(value)
            else:
                slot = random.randrange(seen)
                if slot < RESERVOIR_SIZE:
                    samples[slot] = value

    def summary(self) -> str:
        """The current line; resets the histogram interval."""
        with self._lock:
            parts = [f"{_series(k)}={_number(v)}" for k, v in sorted(self._counters.items())]
            parts += [f"{_series(k)}={_number(v)}" for k, v in sorted(self._gauges.items())]
            for key, samples in sorted(self._samples.items()):
                if samples:
                    ordered = sorted(samples)
                    parts.append(
                        f"{_series(key)} n={self._seen[key]} p50={_quantile(ordered, 0.5):.3f} "
                        f"p99={_quantile(ordered, 0.99):.3f} max={ordered[-1]:.3f}"
                    )
            self._samples.clear()
            self._seen.clear()
        return "metrics: " + ("; ".join(parts) if parts else "(nothing recorded)")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._log.info(self.summary())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._log.info(self.summary())


def _make_log_sink(section: Mapping[str, Any]) -> MetricsSink:
    value = section.get("interval", 10.0)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # else refused below, as it was written
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(
            f"plugins.log.interval: {value!r} is invalid; expected a number of seconds > 0"
        )
    return LogMetricsSink(interval=float(value))


@hookimpl
def register_metrics_sinks() -> Iterable[MetricsSinkSpec]:
    return [
        MetricsSinkSpec(
            name="log",
            factory=_make_log_sink,
            description="one summary line every `interval` seconds (default 10)",
        )
    ]
