"""Flow control of the sms executor, on a real scheduler node: gateways that throttle, and
the ``[plugins.sms]`` rate, burst and max_concurrent that become the executor's limit."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from sms_support import ThrottlingGateway

from infsched.config import load_config
from infsched.configured_repositories import open_repositories
from infsched.dburl import DatabaseUrl
from infsched.errors import ConfigError
from infsched.flow_limits import FlowLimit, LimitScope, LimitTarget
from infsched.limit_store import LimitStore, StoredLimit
from infsched.management.scheduler import InfiniteScheduler
from infsched.plugins import load_plugins
from infsched.repositories.base import ShardingRepository
from infsched_sms import SmsEntity
from infsched_sms.executor import flow_limit
from tests.engine_support import RecordingSink, wait_until
from tests.loopback_servers import ESME_RMSGQFUL, HttpRecorder, SmscServer

EXECUTOR_SMS = LimitTarget(LimitScope.EXECUTOR, "sms")
#: A node that claims, retries and beats quickly.
FAST = {
    "fetch_interval": 0.2,
    "lookahead_window": 1.0,
    "heartbeat_interval": 0.5,
    "job_lease": 5.0,
    "retry_base_delay": 0.05,
    "retry_max_delay": 0.2,
    "thread_pool_size": 4,
}


def toml_table(values: Mapping[str, Any]) -> str:
    # JSON's strings, numbers and booleans are TOML's too.
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


@attrs.frozen
class SmsNode:
    scheduler: InfiniteScheduler
    repository: ShardingRepository[Any, Any]


@contextmanager
def sms_node(
    tmp_path: Path, url: DatabaseUrl, section: Mapping[str, Any], sink: RecordingSink
) -> Iterator[SmsNode]:
    """A started node serving the repository ``sms`` with `section` as ``[plugins.sms]``."""
    path = tmp_path / "infsched.toml"
    path.write_text(
        f'database_url = "{url}"\nnode_id = "sms-node"\n{toml_table(FAST)}'
        '[[repositories]]\nname = "sms"\nentity = "SmsEntity"\nexecutor = "sms"\n'
        f"[plugins.sms]\n{toml_table(section)}"
    )
    config = load_config(path, env={}).config
    plugins = load_plugins({"INFSCHED_LOAD_PLUGINS": "sms"})
    with open_repositories(config, plugins=plugins) as configured:
        node = InfiniteScheduler(configured, config, plugins=plugins, metrics_sinks=[sink])
        with node:
            yield SmsNode(node, configured["sms"])


def texts(node: SmsNode, count: int) -> None:
    due = datetime.now(UTC)
    node.repository.insert_many(
        [
            SmsEntity(
                scheduled_time=due + timedelta(milliseconds=i),
                phone_number="+4915112345678",
                sender="ACME",
                message=f"text {i}",
            )
            for i in range(count)
        ]
    )


def outcomes(node: SmsNode) -> list[Any]:
    now = datetime.now(UTC)
    found = node.scheduler.history.repository.find_all_by_date_range(
        now - timedelta(days=1), now + timedelta(days=1)
    )
    return list(found)


def stored(node: SmsNode) -> StoredLimit | None:
    return LimitStore(node.scheduler.database).get(EXECUTOR_SMS)


def assert_all_sent_once_without_failures(node: SmsNode, count: int) -> None:
    wait_until(lambda: len(outcomes(node)) >= count, 30, f"{count} outcomes")
    done = outcomes(node)
    # Throttled runs leave no history row: one success per text, at its first attempt.
    assert Counter(o.state.value for o in done) == Counter({"succeeded": count})
    assert [o.attempt for o in done] == [1] * count


@pytest.mark.parametrize(
    ("status", "retry_after", "hold"), [(429, "2", 2.0), (503, None, 1.0)], ids=["429", "503"]
)
def test_a_throttling_http_gateway_slows_the_executor_down_without_failing_a_job(
    tmp_path: Path, sqlite_url: DatabaseUrl, status: int, retry_after: str | None, hold: float
) -> None:
    gateway = ThrottlingGateway(2, status, retry_after=retry_after)
    sink = RecordingSink()
    with HttpRecorder(gateway) as server:
        section = {"transport": "http", "http_url": f"{server.url}/sms"}
        with sms_node(tmp_path, sqlite_url, section, sink) as node:
            texts(node, 10)
            assert_all_sent_once_without_failures(node, 10)
            held = stored(node)
        requests = server.received()
    # A throttled batch sends nothing after the refusal: one request per throttled round.
    assert len(gateway.throttled_at) == 2
    assert len(requests) == 2 + 10
    assert sorted(r.headers["idempotency-key"] for r in gateway.accepted_requests) == sorted(
        {r.headers["idempotency-key"] for r in gateway.accepted_requests}
    )
    assert len(gateway.accepted_requests) == 10
    # Nothing went to the gateway while it was held: Retry-After's seconds, or 1 s without.
    first_accepted = gateway.accepted_requests[0].at
    assert gateway.throttled_at[1] - gateway.throttled_at[0] >= hold - 0.1
    assert first_accepted - gateway.throttled_at[1] >= hold - 0.1
    assert sink.counters["jobs_throttled_total"] >= 2
    assert sink.counters["jobs_failed_total"] == 0
    assert sink.counters["jobs_dead_lettered_total"] == 0
    # The hold is the executor's, in the limits table every node reads.
    assert held is not None
    assert held.source == "throttle"
    assert held.held_until is not None
    assert held.held_until.timestamp() >= gateway.throttled_at[1] + hold - 0.1


def test_kannel_answering_503_holds_the_declared_limit_of_the_account(
    tmp_path: Path, sqlite_url: DatabaseUrl
) -> None:
    gateway = ThrottlingGateway(
        1,
        503,
        refusal=b"Temporal failure, try again later.",
        accepted=b"0: Accepted for delivery",
    )
    sink = RecordingSink()
    with HttpRecorder(gateway) as server:
        section = {
            "transport": "kannel",
            "kannel_url": f"{server.url}/cgi-bin/sendsms",
            "kannel_username": "scheduler",
            "kannel_password": "secret",
            "rate": 100,
        }
        with sms_node(tmp_path, sqlite_url, section, sink) as node:
            texts(node, 5)
            assert_all_sent_once_without_failures(node, 5)
            held = stored(node)
    assert sorted(r.query["text"] for r in gateway.accepted_requests) == [
        f"text {i}" for i in range(5)
    ]
    assert sink.counters["jobs_throttled_total"] >= 1
    assert held is not None
    # The hold went on the executor's own row, which keeps its declared rate.
    assert (held.source, held.limit.rate) == ("executor sms", 100.0)
    assert held.held_until is not None
    assert held.held_until.timestamp() >= gateway.throttled_at[0] + 0.9


def test_an_smsc_with_a_full_queue_makes_jobs_wait_not_fail(
    tmp_path: Path, sqlite_url: DatabaseUrl, smsc: SmscServer
) -> None:
    smsc.throttle, smsc.throttle_status = 2, ESME_RMSGQFUL
    sink = RecordingSink()
    section = {
        "transport": "smpp",
        "smpp_host": "127.0.0.1",
        "smpp_port": smsc.port,
        "smpp_system_id": smsc.system_id,
        "smpp_password": smsc.password,
        "smpp_window": 1,
        "max_concurrent": 4,
    }
    with sms_node(tmp_path, sqlite_url, section, sink) as node:
        texts(node, 6)
        assert_all_sent_once_without_failures(node, 6)
        held = stored(node)
    assert sorted(s.text for s in smsc.received()) == [f"text {i}" for i in range(6)]
    # The node made the executor, so its stop closed it: the session unbound.
    assert smsc.unbinds == len(smsc.binds) == 1
    assert sink.counters["jobs_throttled_total"] >= 2
    assert held is not None
    assert (held.source, held.limit.max_concurrent, held.limit.rate) == ("executor sms", 4, None)
    assert held.held_until is not None


def test_the_rate_in_plugins_sms_is_the_executors_limit_when_the_node_starts(
    tmp_path: Path, sqlite_url: DatabaseUrl
) -> None:
    with sms_node(tmp_path, sqlite_url, {"rate": 50}, RecordingSink()) as node:
        declared = stored(node)
    assert declared is not None
    assert declared.source == "executor sms"
    assert declared.limit == FlowLimit(rate=50.0, burst=1, max_concurrent=None)
    assert declared.held_until is None
    # A bad value refuses the node with one line naming the key, and changes nothing.
    with (
        pytest.raises(ConfigError) as refused,
        sms_node(tmp_path, sqlite_url, {"rate": "fast"}, RecordingSink()),
    ):
        pass
    assert str(refused.value) == (
        "plugin sms: [plugins.sms] rate is 'fast'; expected a number of messages per second > 0"
    )
    with sms_node(tmp_path, sqlite_url, {}, RecordingSink()) as node:
        assert stored(node) == declared  # a node without the keys declares nothing


def test_limit_keys_become_a_flow_limit() -> None:
    assert flow_limit({"transport": "console"}) is None
    assert flow_limit({"rate": 100}) == FlowLimit(rate=100.0)
    assert flow_limit({"rate": 2.5, "burst": 10, "max_concurrent": 20}) == FlowLimit(
        rate=2.5, burst=10, max_concurrent=20
    )
    assert flow_limit({"max_concurrent": 3}) == FlowLimit(max_concurrent=3)


@pytest.mark.parametrize(
    ("section", "line"),
    [
        ({"rate": 0}, "rate is 0; expected a number of messages per second > 0"),
        ({"rate": -5}, "rate is -5; expected a number of messages per second > 0"),
        ({"rate": True}, "rate is True; expected a number of messages per second > 0"),
        ({"rate": float("inf")}, "rate is inf; expected a number of messages per second > 0"),
        ({"rate": 10, "burst": 0}, "burst is 0; expected a whole number from 1 to 2147483647"),
        ({"rate": 10, "burst": 1.5}, "burst is 1.5; expected a whole number from 1 to"),
        ({"burst": 5}, "burst is 5 without rate; a burst only shapes a rate"),
        ({"max_concurrent": "4"}, "max_concurrent is '4'; expected a whole number from 1 to"),
        ({"max_concurrent": 2**31}, "max_concurrent is 2147483648; expected a whole number"),
    ],
    ids=lambda v: "-".join(f"{k}={v[k]}" for k in v) if isinstance(v, dict) else "",
)
def test_a_bad_limit_key_is_one_line_naming_it(section: dict[str, Any], line: str) -> None:
    with pytest.raises(ConfigError) as refused:
        flow_limit(section)
    text = str(refused.value)
    assert text.startswith(f"plugin sms: [plugins.sms] {line}"), text
    assert "\n" not in text
