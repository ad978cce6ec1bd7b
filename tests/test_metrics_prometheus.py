"""The prometheus sink, scraped over HTTP while a scheduler runs jobs; sink failures."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infsched.config import SchedulerConfig
from infsched.dburl import DatabaseUrl
from infsched.engine.binding import RepositoryBinding
from infsched.errors import ConfigError
from infsched.executors import JobContext
from infsched.management.scheduler import InfiniteScheduler
from infsched.metrics.catalog import CATALOG
from infsched.metrics.prometheus_sink import PrometheusMetricsSink
from infsched.metrics.sink import Labels
from infsched.plugins import load_plugins
from tests.engine_support import Reminder, repository_for, wait_until
from tests.management_support import now

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        text: str = response.read().decode()
    return text


def scrape(url: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(scrape_text(url)):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def sink() -> Iterator[PrometheusMetricsSink]:
    sink = PrometheusMetricsSink(port=0)
    yield sink
    sink.close()


#: Seconds the test waits for the gauges to show the runs blocked at the gate.
BLOCKED_WITHIN = 60
GATE_SECONDS = BLOCKED_WITHIN + 30


class GatedExecutor:
    """Blocks every run until the gate opens; fails a chosen text's first attempt.

    The gate gives up after longer than the test waits for the state it holds
    (GATE_SECONDS): given up sooner, the runs would change what the test is
    still waiting to see (a loaded machine once took over 30 s to sample it).
    """

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.runs = 0
        self._lock = threading.Lock()

    def __call__(self, job: JobContext[Reminder]) -> None:
        self.gate.wait(GATE_SECONDS)
        with self._lock:
            self.runs += 1
        if job.entity.text == "flaky" and job.attempt == 1:
            raise ConnectionError("gateway blip")


def test_scraped_values_move_as_jobs_are_fetched_claimed_and_run(
    mysql_url: DatabaseUrl, sink: PrometheusMetricsSink
) -> None:
    repo = repository_for(mysql_url)
    repo.maintain()
    due = now() - timedelta(seconds=2)
    repo.insert_many([Reminder(due=due, text="flaky")])
    repo.insert_many([Reminder(due=due + timedelta(milliseconds=i), text="ok") for i in range(9)])
    executor = GatedExecutor()
    config = SchedulerConfig(
        database_url=mysql_url,
        node_id="node-a",
        fetch_interval=0.2,
        lookahead_window=1.0,
        heartbeat_interval=0.3,  # the gauges are sampled this often
        job_lease=5.0,
        retry_base_delay=0.05,
        retry_max_delay=0.1,
        thread_pool_size=2,
        batch_size=2,  # claims of 2; at most claim_ahead = 2 claimed beyond those running
    )
    scheduler = InfiniteScheduler(
        [RepositoryBinding(repo, executor="remind")],
        config,
        executors={"remind": executor},
        metrics_sinks=[sink],
    )
    assert sink.host == "127.0.0.1"
    assert value(scrape(sink.url), "infsched_jobs_executed_total", **LABELS) == 0
    executed_seen: list[float] = []
    with scheduler:
        # Two running, two queued, six due and waiting for room: the gauges say so.  The
        # fetch cycle that scheduled all ten is observed when it ends, after one more
        # (empty) batch, which can come after the claims: wait for it too.
        gauges: list[tuple[float, float, float]] = []

        def blocked() -> bool:
            s = scrape(sink.url)
            gauges.append(
                (
                    value(s, "infsched_jobs_in_flight", repository="reminders"),
                    value(s, "infsched_jobs_backlog", repository="reminders"),
                    value(s, "infsched_fetch_cycle_seconds_count", repository="reminders"),
                )
            )
            in_flight, backlog, cycles = gauges[-1]
            return in_flight == 4 and backlog == 6 and cycles >= 1

        # The state holds while the gate is shut, but the sampler waits 100 times as
        # long as its recent samples took (DUTY_FACTOR): on a loaded machine that can
        # be seconds between samples, so the waits are long; they end at the first match.
        try:
            wait_until(blocked, timeout=BLOCKED_WITHIN, what="4 in flight and 6 in the backlog")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; (in flight, backlog, cycles) seen: {gauges[-5:]}"
            ) from None
        s = scrape(sink.url)
        assert value(s, "infsched_jobs_scheduled_total", repository="reminders") == 10
        assert value(s, "infsched_jobs_executed_total", **LABELS) == 0
        assert value(s, "infsched_fetch_cycle_seconds_count", repository="reminders") >= 1
        assert value(s, "infsched_repository_query_seconds_count", repository="reminders") >= 1
        assert value(s, "infsched_fetch_cycle_entities_sum", repository="reminders") == 10
        assert value(s, "infsched_process_resident_memory_bytes") > 10 * 2**20
        assert value(s, "infsched_process_cpu_seconds_total") > 0

        executor.gate.set()

        def drained() -> bool:
            s = scrape(sink.url)
            executed_seen.append(value(s, "infsched_jobs_executed_total", **LABELS))
            return (
                executed_seen[-1] == 10
                and value(s, "infsched_jobs_in_flight", repository="reminders") == 0
                and value(s, "infsched_jobs_backlog", repository="reminders") == 0
            )

        wait_until(drained, timeout=60, what="10 executed and the gauges back at 0")
        s = scrape(sink.url)
    assert executed_seen == sorted(executed_seen)  # a counter never goes down
    assert value(s, "infsched_jobs_failed_total", **LABELS) == 1
    assert value(s, "infsched_jobs_retried_total", **LABELS) == 1
    assert value(s, "infsched_jobs_dead_lettered_total", **LABELS) == 0
    assert value(s, "infsched_dead_letters", repository="reminders") == 0
    # Eleven runs started (ten jobs, one of them twice), each observed once, in seconds.
    assert value(s, "infsched_lag_seconds_count", **LABELS) == 11
    assert value(s, "infsched_lag_seconds_bucket", le="+Inf", **LABELS) == 11
    assert value(s, "infsched_lag_seconds_bucket", le="0.001", **LABELS) == 0
    assert 2 * 10 <= value(s, "infsched_lag_seconds_sum", **LABELS) < 11 * 30


LABELS = {"repository": "reminders", "executor": "remind"}


def test_help_text_comes_from_the_catalog_and_names_follow_conventions(
    sink: PrometheusMetricsSink,
) -> None:
    sink.increment("jobs_executed_total", 2, {"repository": "sms", "executor": "sms"})
    sink.set_gauge("jobs_backlog", 7, {"repository": "sms"})
    sink.observe("lag_seconds", 0.3, {"repository": "sms", "executor": "sms"})
    sink.observe("fetch_cycle_entities", 500, {"repository": "sms"})
    text = scrape_text(sink.url)
    assert f"# HELP infsched_jobs_backlog {CATALOG['jobs_backlog'].help}" in text
    assert "# TYPE infsched_jobs_executed_total counter" in text
    assert 'infsched_jobs_executed_total{executor="sms",repository="sms"} 2.0' in text
    assert 'infsched_jobs_backlog{repository="sms"} 7.0' in text
    assert 'infsched_lag_seconds_bucket{executor="sms",le="0.5",repository="sms"} 1.0' in text
    # Counts get count buckets, not seconds.
    assert 'infsched_fetch_cycle_entities_bucket{le="1000.0",repository="sms"} 1.0' in text
    assert 'infsched_fetch_cycle_entities_bucket{le="100.0",repository="sms"} 0.0' in text
    for info in CATALOG.values():
        counter = info.kind == "counter"
        assert info.name.endswith("_total") == counter, info.name


def test_each_sink_has_its_own_registry_and_refuses_inconsistent_use(
    sink: PrometheusMetricsSink,
) -> None:
    other = PrometheusMetricsSink(port=0)
    try:
        assert other.port != sink.port
        sink.increment("jobs_recovered_total", 3)
        assert value(scrape(sink.url), "infsched_jobs_recovered_total") == 3
        assert ("infsched_jobs_recovered_total", frozenset()) not in scrape(other.url)
    finally:
        other.close()
    with pytest.raises(ValueError, match="has labels"):
        sink.increment("jobs_recovered_total", 1, {"repository": "sms"})
    with pytest.raises(ValueError, match="is a counter"):
        sink.set_gauge("jobs_recovered_total", 1)


def test_the_sink_comes_from_the_plugins_and_its_config_is_checked(
    sink: PrometheusMetricsSink,
) -> None:
    spec = load_plugins(env={}).metrics_sink("prometheus")
    made = spec.factory({"port": 0})
    try:
        assert isinstance(made, PrometheusMetricsSink)
        assert made.host == "127.0.0.1"
        assert scrape_text(made.url) is not None
    finally:
        made.close()
    with pytest.raises(ConfigError, match=r"plugins.prometheus.port: 'x' is invalid"):
        spec.factory({"port": "x"})
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{sink.port}"):
        spec.factory({"port": sink.port})


class ExplodingSink:
    def increment(self, name: str, value: float = 1.0, labels: Labels | None = None) -> None:
        raise RuntimeError("metrics backend is down")

    def set_gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        raise RuntimeError("metrics backend is down")

    def observe(self, name: str, value: float, labels: Labels | None = None) -> None:
        raise RuntimeError("metrics backend is down")

    def close(self) -> None:
        pass


def test_a_raising_sink_is_logged_once_counted_and_never_stops_the_scheduler(
    every_url: DatabaseUrl, sink: PrometheusMetricsSink, caplog: pytest.LogCaptureFixture
) -> None:
    repo = repository_for(every_url)
    repo.maintain()
    repo.insert_many([Reminder(due=now(), text="ok") for _ in range(5)])
    runs: list[str] = []
    config = SchedulerConfig(
        database_url=every_url, fetch_interval=0.2, lookahead_window=1.0, heartbeat_interval=0.3
    )
    caplog.set_level(logging.ERROR, logger="infsched.metrics")
    with InfiniteScheduler(
        [RepositoryBinding(repo, executor="remind")],
        config,
        executors={"remind": lambda job: runs.append(job.job_key)},
        metrics_sinks=[ExplodingSink(), sink],
    ) as s:
        wait_until(lambda: len(runs) == 5, what="5 runs")
        wait_until(
            lambda: value(scrape(sink.url), "infsched_jobs_executed_total", **LABELS) == 5,
            what="5 executed on the healthy sink",
        )
        errors = value(scrape(sink.url), "infsched_metrics_sink_errors_total", sink="ExplodingSink")
        assert errors >= 5 + 1  # five executions and a scheduled batch, at least
        assert errors <= s.metrics.sink_errors
    failures = [r for r in caplog.records if "ExplodingSink" in r.getMessage()]
    assert len(failures) == 1
    assert "metrics backend is down" in failures[0].getMessage()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_infsched_run_serves_metrics_on_the_metrics_port(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "infsched.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path / "run.db"}"\n'
        "fetch_interval = 0.2\nlookahead_window = 1.0\nheartbeat_interval = 0.3\n"
        "metrics_sinks = []\n"
        '[[repositories]]\nname = "sms"\nentity = "SmsEntity"\nexecutor = "sms"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFSCHED_")}
    command = Path(sys.executable).parent / "infsched"
    args = [str(command), "run", "--config", str(config), "--metrics-port", str(port)]
    node = subprocess.Popen(
        [*args, "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 20
        samples: Samples = {}
        while time.monotonic() < deadline and node.poll() is None:
            try:
                samples = scrape(url)
            except OSError:
                samples = {}
            # One sample sets the job gauges, then the process ones: wait for both.
            if ("infsched_jobs_backlog", frozenset({("repository", "sms")})) in samples and (
                "infsched_process_resident_memory_bytes",
                frozenset(),
            ) in samples:
                break
            time.sleep(0.1)
        assert value(samples, "infsched_jobs_backlog", repository="sms") == 0, node.poll()
        assert value(samples, "infsched_process_resident_memory_bytes") > 0
    finally:
        node.send_signal(signal.SIGTERM)
        _out, err = node.communicate(timeout=30)
    assert node.returncode == 0, err
    lines: list[dict[str, Any]] = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any("started" in line["message"] for line in lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)


def test_docs_operations_lists_every_metric_with_its_kind_and_labels() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "operations.md").read_text()
    rows = {
        line.split("|")[1].strip(" `"): [cell.strip() for cell in line.split("|")[2:4]]
        for line in docs.splitlines()
        if line.startswith("| `infsched_")
    }
    assert set(rows) == {f"infsched_{name}" for name in CATALOG}
    for name, info in CATALOG.items():
        labels = ", ".join(f"`{label}`" for label in info.labels) or "-"
        assert rows[f"infsched_{name}"] == [info.kind, labels], name
