"""The built-in ``prometheus`` metrics sink: an HTTP endpoint Prometheus scrapes.

Each sink has its own `CollectorRegistry` (never the process-wide default),
so several sinks, or several schedulers in one test, do not collide.  Metric
families are created on first use, named ``infsched_<name>``, with the label
names of that first use; a later use with other label names, or as another
kind, raises ValueError (the MetricsRecorder logs it once and counts it).

Configuration, ``[plugins.prometheus]``:

- ``port`` (default 9464; 0 picks a free port, see `PrometheusMetricsSink.port`);
- ``host`` (default ``127.0.0.1``: only this machine can scrape; ``0.0.0.0``
  for every interface).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from infsched.errors import ConfigError, MetricMismatchError
from infsched.markers import hookimpl
from infsched.metrics.catalog import CATALOG, PREFIX, Kind
from infsched.metrics.sink import Labels, MetricsSink, MetricsSinkSpec

DEFAULT_PORT = 9464
DEFAULT_HOST = "127.0.0.1"

#: Buckets of histograms in seconds: lag runs from milliseconds (on time) to an hour (an outage).
SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    900.0,
    3600.0,
)
#: Buckets of histograms of counts (entities per fetch cycle).
COUNT_BUCKETS = (0.0, 1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0)

_TYPES = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}


@attrs.frozen
class _Family:
    kind: Kind
    labels: tuple[str, ...]
    metric: Any


def _help(name: str) -> str:
    info = CATALOG.get(name)
    return info.help if info is not None else f"{name} (recorded by a plugin)"


class PrometheusMetricsSink:
    """Exposes what it receives on ``http://HOST:PORT/metrics``."""

    def __init__(self, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST) -> None:
        self.registry = CollectorRegistry()
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"prometheus metrics sink: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                "choose another port with --metrics-port or [plugins.prometheus] port"
            ) from None
        self.host = host
        #: The port listened on (the one chosen by the system when 0 was asked).
        self.port: int = self._server.server_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def _child(self, kind: Kind, name: str, labels: Labels | None) -> Any:
        labels = labels or {}
        names = tuple(sorted(labels))
        with self._lock:
            family = self._families.get(name)
            if family is None:
                extra: dict[str, Any] = {}
                if kind == "histogram":
                    seconds = name.endswith("_seconds")
                    extra["buckets"] = SECONDS_BUCKETS if seconds else COUNT_BUCKETS
                metric = _TYPES[kind](
                    PREFIX + name, _help(name), names, registry=self.registry, **extra
                )
                family = self._families[name] = _Family(kind, names, metric)
        if family.kind != kind:
            raise MetricMismatchError(
                f"metric {name!r} is a {family.kind}; it cannot be used as a {kind}"
            )
        if family.labels != names:
            raise MetricMismatchError(
                f"metric {name!r} has labels {list(family.labels)}; got {list(names)}"
            )
        return family.metric.labels(**labels) if names else family.metric

    def increment(self, name: str, value: float = 1.0, labels: Labels | None = None) -> None:
        self._child("counter", name, labels).inc(value)

    def set_gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        self._child("gauge", name, labels).set(value)

    def observe(self, name: str, value: float, labels: Labels | None = None) -> None:
        self._child("histogram", name, labels).observe(value)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _port(section: Mapping[str, Any]) -> int:
    value = section.get("port", DEFAULT_PORT)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"plugins.prometheus.port: {value!r} is invalid; expected 0 to 65535")
    return value


def _host(section: Mapping[str, Any]) -> str:
    value = section.get("host", DEFAULT_HOST)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"plugins.prometheus.host: {value!r} is invalid; expected an address")
    return value.strip()


def _make_prometheus_sink(section: Mapping[str, Any]) -> MetricsSink:
    return PrometheusMetricsSink(port=_port(section), host=_host(section))


@hookimpl
def register_metrics_sinks() -> Iterable[MetricsSinkSpec]:
    return [
        MetricsSinkSpec(
            name="prometheus",
            factory=_make_prometheus_sink,
            description=f"/metrics over HTTP on `host`:`port` (default {DEFAULT_HOST}:"
            f"{DEFAULT_PORT}), for Prometheus to scrape",
        )
    ]
