"""GaugeSampler: backlog, in flight, dead letters, heartbeat ages and process gauges."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa

from infsched.database import database_of
from infsched.dburl import DatabaseUrl
from infsched.engine.gauges import DUTY_FACTOR, RECENT_SAMPLES, GaugeSampler, rest_after
from infsched.flow_limits import FlowLimit, Limit, LimitTarget
from infsched.jobstore.sql import SqlJobStore
from infsched.limit_store import LimitStore
from infsched.metrics.recorder import MetricsRecorder
from infsched.metrics.sink import Labels
from tests.management_support import Seed, now


class GaugeSink:
    def __init__(self) -> None:
        self.gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.counters: dict[str, float] = {}

    def increment(self, name: str, value: float = 1.0, labels: Labels | None = None) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + value

    def set_gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        self.gauges[(name, tuple(sorted((labels or {}).items())))] = value

    def observe(self, name: str, value: float, labels: Labels | None = None) -> None:
        pass

    def close(self) -> None:
        pass

    def gauge(self, name: str, **labels: str) -> float:
        return self.gauges[(name, tuple(sorted(labels.items())))]


def test_gauges_read_the_job_table_and_the_nodes(
    every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    seed = Seed(engine_for(every_url))
    for i in range(3):
        seed.job(i, due=now() - timedelta(seconds=5))  # due: backlog
    seed.job(10, due=now() + timedelta(minutes=5))  # waiting, not due yet
    seed.job(11, state="claimed", owner="node-a")
    seed.job(12, state="claimed", owner="node-b")  # another node's
    seed.job(13, state="dead")
    seed.job(14, state="dead", repository="other")  # not served here
    seed.node("node-a", heartbeat_age=2.0)
    seed.node("node-b", heartbeat_age=300.0)
    seed.node("node-c", heartbeat_age=900.0, state="stopped")
    sink = GaugeSink()
    sampler = GaugeSampler(
        SqlJobStore(seed.database),
        MetricsRecorder([sink]),
        "node-a",
        ["sms", "idle"],
    )
    sampler.sample()

    assert sink.gauge("jobs_backlog", repository="sms") == 3
    assert sink.gauge("jobs_in_flight", repository="sms") == 1  # only node-a's own
    assert sink.gauge("dead_letters", repository="sms") == 1
    for name in ("jobs_backlog", "jobs_in_flight", "dead_letters"):
        assert sink.gauge(name, repository="idle") == 0  # reported, not left out
        with pytest.raises(KeyError):
            sink.gauge(name, repository="other")
    assert 1.5 <= sink.gauge("node_heartbeat_age_seconds", node="node-a") < 10
    assert 295 <= sink.gauge("node_heartbeat_age_seconds", node="node-b") < 310
    assert sink.gauge("node_heartbeat_age_seconds", node="node-c") == 0  # stopped cleanly
    assert sink.gauge("process_resident_memory_bytes") > 10 * 2**20
    first_cpu = sink.counters["process_cpu_seconds_total"]
    assert first_cpu > 0
    sum(i * i for i in range(300_000))  # burn some CPU
    sampler.sample()
    assert sink.counters["process_cpu_seconds_total"] > first_cpu

    with seed.engine.begin() as conn:  # the backlog drains: the gauge follows
        conn.execute(sa.text("DELETE FROM infsched_jobs WHERE state = 'waiting'"))
    sampler.sample()
    assert sink.gauge("jobs_backlog", repository="sms") == 0


def test_limit_gauges_give_each_limit_and_the_due_jobs_waiting_under_it(
    every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    seed = Seed(engine_for(every_url))
    due = now() - timedelta(seconds=5)
    for i in range(2):
        seed.job(i, due=due, flow_key="acme")  # lane (sms, sms, acme)
    seed.job(2, due=due)  # lane (sms, sms, '')
    seed.job(3, due=now() + timedelta(minutes=5), flow_key="acme")  # not due yet
    seed.job(4, state="claimed", owner="node-a", flow_key="acme")  # in flight, not waiting
    seed.job(5, repository="orders", executor="orders", due=due, flow_key="acme")
    seed.job(6, repository="orders", executor="orders", due=due, flow_key="other")
    limits = LimitStore(seed.database)
    for raw, limit in [
        ("executor:sms", FlowLimit(rate=2.5, burst=3)),
        ("key:acme", FlowLimit(max_concurrent=4)),
        ("repository:orders", FlowLimit(rate=0.5, max_concurrent=1)),
    ]:
        limits.set(Limit(LimitTarget.parse(raw), limit))
    limits.hold(["executor:mail"], now() + timedelta(seconds=30))  # a throttled gateway
    sink = GaugeSink()
    sampler = GaugeSampler(
        SqlJobStore(seed.database), MetricsRecorder([sink]), "node-a", ["sms"], limits=limits
    )
    sampler.sample()

    expected = {
        # target: (rate, max concurrent, held back)
        "executor:sms": (2.5, 0, 3),
        "key:acme": (0, 4, 3),
        "repository:orders": (0.5, 1, 2),  # another node's repository: cluster-wide
        "executor:mail": (0, 0, 0),
    }
    for target, values in expected.items():
        found = tuple(
            sink.gauge(name, target=target)
            for name in ("limit_rate", "limit_max_concurrent", "jobs_held_back")
        )
        assert found == values, target

    limits.remove(LimitTarget.parse("key:acme"))
    sampler.sample()
    for name in ("limit_rate", "limit_max_concurrent", "jobs_held_back"):
        assert sink.gauge(name, target="key:acme") == 0  # reported, not left at its last value
    assert sink.gauge("jobs_held_back", target="executor:sms") == 3


class SlowSampler(GaugeSampler):
    """A sampler whose samples take `seconds` each (a large job table to count)."""

    def __init__(self, store: SqlJobStore, seconds: float) -> None:
        super().__init__(store, MetricsRecorder([GaugeSink()]), "node-a", ["sms"], interval=0.01)
        self.seconds = seconds
        self.taken = 0

    def sample(self) -> None:
        self.taken += 1
        time.sleep(self.seconds)


def test_slow_samples_space_themselves_out(
    sqlite_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    store = SqlJobStore(database_of(engine_for(sqlite_url)))
    fast, slow = SlowSampler(store, 0.0), SlowSampler(store, 0.01)
    for sampler in (fast, slow):
        stop = threading.Event()
        thread = threading.Thread(target=sampler.run, args=(stop,))
        thread.start()
        time.sleep(0.6)
        stop.set()
        thread.join()
    # Every 0.01 s when a sample is instant; 0.01 s samples wait 100 times as long,
    # once RECENT_SAMPLES of them have shown that they are slow every time.
    assert fast.taken >= 10
    assert slow.taken == RECENT_SAMPLES


def test_one_slow_sample_does_not_push_the_next_out() -> None:
    interval = 0.5
    # The first samples (the first connection among them) never back off.
    assert rest_after([3.0], interval) == interval
    # One slow sample among quick ones: the quick ones decide.
    assert rest_after([0.001, 0.001, 0.6], interval) == interval
    assert rest_after([0.001, 0.6, 0.002], interval) == interval
    # A table slow to count every time (0.2 s a sample) is counted every 20 s.
    assert rest_after([0.3, 0.2, 0.25], interval) == pytest.approx(DUTY_FACTOR * 0.2)
    # Only the last RECENT_SAMPLES count: the table shrank.
    assert rest_after([0.3, 0.2, 0.25, 0.001, 0.002, 0.001], interval) == interval
