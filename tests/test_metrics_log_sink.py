"""The built-in ``log`` metrics sink: its summary line, the reservoir bound, its thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from infsched.metrics.log_sink import RESERVOIR_SIZE, LogMetricsSink
from infsched.metrics.sink import MetricsSink


class Lines(logging.Handler):
    """Collects the messages logged to one logger."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.arrived = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.arrived.set()


@pytest.fixture
def lines() -> Iterator[Lines]:
    logger = logging.getLogger("test.metrics.log_sink")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = Lines()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def sink(lines: Lines) -> Iterator[LogMetricsSink]:
    """A sink whose own timer never fires during a test."""
    sink = LogMetricsSink(interval=3600, logger=logging.getLogger("test.metrics.log_sink"))
    yield sink
    sink.close()


def test_it_is_a_metrics_sink(sink: LogMetricsSink) -> None:
    assert isinstance(sink, MetricsSink)


def test_empty_summary(sink: LogMetricsSink) -> None:
    assert sink.summary() == "metrics: (nothing recorded)"


def test_counters_are_totals_per_series_with_sorted_labels(sink: LogMetricsSink) -> None:
    sink.increment("jobs_executed_total", labels={"status": "ok", "repository": "sms"})
    sink.increment("jobs_executed_total", 2, labels={"repository": "sms", "status": "ok"})
    sink.increment("jobs_executed_total", labels={"repository": "orders", "status": "failed"})
    sink.increment("fetch_cycles_total")
    assert sink.summary() == (
        "metrics: fetch_cycles_total=1; "
        "jobs_executed_total{repository=orders,status=failed}=1; "
        "jobs_executed_total{repository=sms,status=ok}=3"
    )
    sink.increment("fetch_cycles_total")
    assert "fetch_cycles_total=2" in sink.summary(), "counters are totals, not per interval"


def test_large_counters_are_printed_in_full(sink: LogMetricsSink) -> None:
    sink.increment("jobs_executed_total", 1_234_567)
    sink.increment("bytes_total", 0.1)
    sink.increment("bytes_total", 0.2)
    assert sink.summary() == "metrics: bytes_total=0.3; jobs_executed_total=1234567"


def test_gauges_keep_the_last_value(sink: LogMetricsSink) -> None:
    sink.set_gauge("jobs_in_flight", 12)
    sink.set_gauge("jobs_in_flight", 7.5)
    assert sink.summary() == "metrics: jobs_in_flight=7.5"
    assert sink.summary() == "metrics: jobs_in_flight=7.5"


def test_histograms_show_count_quantiles_and_max_for_one_interval(sink: LogMetricsSink) -> None:
    for value in range(1, 101):
        sink.observe("lag_seconds", value / 100, labels={"repository": "sms"})
    assert sink.summary() == (
        "metrics: lag_seconds{repository=sms} n=100 p50=0.510 p99=0.990 max=1.000"
    )
    assert sink.summary() == "metrics: (nothing recorded)", "histograms reset each interval"


def test_histogram_memory_is_bounded_by_the_reservoir(sink: LogMetricsSink) -> None:
    observed = RESERVOIR_SIZE * 5
    for value in range(observed):
        sink.observe("execution_seconds", float(value))
    # The private buffer is the one thing this test is about: it must not grow with traffic.
    kept = sink._samples[("execution_seconds", ())]
    assert len(kept) == RESERVOIR_SIZE
    assert len(set(kept)) == RESERVOIR_SIZE
    assert any(value >= RESERVOIR_SIZE for value in kept), "later values replace earlier ones"
    line = sink.summary()
    assert f"execution_seconds n={observed} " in line
    p50 = float(line.split("p50=")[1].split()[0])
    assert observed * 0.35 < p50 < observed * 0.65, "the sample represents the whole interval"


def test_concurrent_recording_loses_nothing(sink: LogMetricsSink) -> None:
    def work() -> None:
        for _ in range(2000):
            sink.increment("jobs_executed_total")
            sink.observe("lag_seconds", 0.5)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    line = sink.summary()
    assert "jobs_executed_total=16000" in line
    assert "lag_seconds n=16000 " in line


def test_summary_is_logged_every_interval_and_once_more_on_close(lines: Lines) -> None:
    sink = LogMetricsSink(interval=0.05, logger=logging.getLogger("test.metrics.log_sink"))
    sink.increment("ticks_total")
    assert lines.arrived.wait(5), "no summary within 5 s at a 0.05 s interval"
    sink.close()
    logged = len(lines.lines)
    assert logged >= 2
    assert lines.lines[-1] == "metrics: ticks_total=1"
    time.sleep(0.2)
    assert len(lines.lines) == logged, "no summaries after close"


@pytest.mark.parametrize("interval", [0, -1.0])
def test_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError, match=r"log sink interval: .* must be > 0 seconds"):
        LogMetricsSink(interval=interval)
