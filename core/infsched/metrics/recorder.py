"""MetricsRecorder: fans measurements out to the configured sinks.

A sink that raises never reaches the scheduler: the error is logged once per
sink and counted in ``metrics_sink_errors_total`` on the healthy sinks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence

from infsched.metrics.sink import Labels, MetricsSink

log = logging.getLogger("infsched.metrics")


class MetricsRecorder:
    """The one object the engine records through."""

    def __init__(self, sinks: Sequence[MetricsSink] = ()) -> None:
        self._sinks = list(sinks)
        self._failed: set[int] = set()
        self._lock = threading.Lock()
        self.sink_errors = 0

    @property
    def sinks(self) -> list[MetricsSink]:
        return list(self._sinks)

    def _fail(self, sink: MetricsSink, exc: Exception) -> None:
        with self._lock:
            self.sink_errors += 1
            first = id(sink) not in self._failed
            self._failed.add(id(sink))
        if first:
            log.error(
                "metrics sink %s failed and is skipped for this value: %s: %s",
                type(sink).__name__,
                type(exc).__name__,
                exc,
            )
        for other in self._sinks:
            if other is not sink:
                # A second failing sink is logged by its own call.
                with contextlib.suppress(Exception):
                    other.increment("metrics_sink_errors_total", 1.0, {"sink": type(sink).__name__})

    def increment(self, name: str, value: float = 1.0, labels: Labels | None = None) -> None:
        for sink in self._sinks:
            try:
                sink.increment(name, value, labels)
            except Exception as exc:
                self._fail(sink, exc)

    def set_gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        for sink in self._sinks:
            try:
                sink.set_gauge(name, value, labels)
            except Exception as exc:
                self._fail(sink, exc)

    def observe(self, name: str, value: float, labels: Labels | None = None) -> None:
        for sink in self._sinks:
            try:
                sink.observe(name, value, labels)
            except Exception as exc:
                self._fail(sink, exc)

    def close(self) -> None:
        for sink in self._sinks:
            try:
                sink.close()
            except Exception as exc:
                self._fail(sink, exc)
