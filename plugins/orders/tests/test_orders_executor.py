"""The orders executor's compare-and-set, its events and its webhook, on MariaDB and SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from infsched.dburl import DatabaseUrl
from infsched.engine.joblog import job_logger
from infsched.errors import ConfigError
from infsched.executors import JobContext, PermanentError
from infsched_orders import OrderAction, OrderEntity
from infsched_orders.executor import OrderExecutor, events_of, make_executor, sign
from tests.loopback_servers import HttpRecorder, HttpRequest, free_port


def order(order_id: str, action: OrderAction, webhook_url: str | None = None) -> OrderEntity:
    return OrderEntity(
        due_at=datetime(2030, 1, 1, 12, tzinfo=UTC),
        order_id=order_id,
        customer_id="C-1",
        action=action,
        amount=Decimal("19.90"),
        currency="EUR",
        webhook_url=webhook_url,
    )


def job(entity: OrderEntity, key: str) -> JobContext[OrderEntity]:
    return JobContext(entity, key, 1, entity.due_at, "order_actions", job_logger(key, "x"))


def url_text(url: DatabaseUrl) -> str:
    return url.sqlalchemy_url.render_as_string(hide_password=False)


@pytest.fixture
def shop(every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]) -> sa.Engine:
    engine = engine_for(every_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE orders (order_id VARCHAR(64) PRIMARY KEY, status VARCHAR(32))")
        )
        conn.execute(
            sa.text("INSERT INTO orders VALUES (:id, :status)"),
            [
                {"id": "unpaid", "status": "pending_payment"},
                {"id": "paid", "status": "paid"},
                {"id": "shipped", "status": "shipped"},
                {"id": "reserved", "status": "pending_payment"},
            ],
        )
    return engine


@pytest.fixture
def executor(shop: sa.Engine, every_url: DatabaseUrl) -> Iterator[OrderExecutor]:
    built = make_executor({"database_url": url_text(every_url)})
    yield built
    built.engine.dispose()


def statuses(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT order_id, status FROM orders")).all()
    return {str(r[0]): str(r[1]) for r in rows}


def test_each_action_applies_only_in_its_expected_status(
    shop: sa.Engine, executor: OrderExecutor
) -> None:
    jobs = [
        job(order("unpaid", OrderAction.EXPIRE_UNPAID), "o:1:a"),
        job(order("paid", OrderAction.EXPIRE_UNPAID), "o:2:a"),
        job(order("shipped", OrderAction.AUTO_CONFIRM_DELIVERY), "o:3:a"),
        job(order("reserved", OrderAction.RELEASE_STOCK), "o:4:a"),
        job(order("ghost", OrderAction.EXPIRE_UNPAID), "o:5:a"),
    ]
    assert executor.execute_batch(jobs) == [None] * 5
    assert statuses(shop) == {
        "unpaid": "expired",
        "paid": "paid",
        "shipped": "delivered",
        "reserved": "stock_released",
    }
    results = {
        e["order_id"]: (e["result"], e["from_status"], e["to_status"])
        for oid in ("unpaid", "paid", "shipped", "reserved", "ghost")
        for e in events_of(shop, oid)
    }
    assert results == {
        "unpaid": ("applied", "pending_payment", "expired"),
        "paid": ("skipped", "paid", "expired"),
        "shipped": ("applied", "shipped", "delivered"),
        "reserved": ("applied", "pending_payment", "stock_released"),
        "ghost": ("skipped", None, "expired"),
    }


def test_a_retry_or_a_second_run_changes_nothing(shop: sa.Engine, executor: OrderExecutor) -> None:
    expire = order("unpaid", OrderAction.EXPIRE_UNPAID)
    executor(job(expire, "o:1:b"))
    executor(job(expire, "o:1:b"))  # the same job again (a retry): one event, the first
    executor(job(expire, "o:1:c"))  # another job for the same transition
    assert statuses(shop)["unpaid"] == "expired"
    assert [(e["job_key"], e["result"]) for e in events_of(shop, "unpaid")] == [
        ("o:1:b", "applied"),
        ("o:1:c", "already_applied"),
    ]


def test_the_event_is_posted_signed_and_reposted_unchanged_on_retry(
    shop: sa.Engine, every_url: DatabaseUrl
) -> None:
    answers = [500, 200]

    def answer(request: HttpRequest) -> tuple[int, bytes]:
        assert request.headers["x-infsched-signature"] == sign("s3cret", request.body)
        return answers.pop(0), b""

    with HttpRecorder(answer) as hook:
        executor = make_executor({"database_url": url_text(every_url), "webhook_secret": "s3cret"})
        try:
            entity = order("unpaid", OrderAction.EXPIRE_UNPAID, webhook_url=f"{hook.url}/events")
            [first] = executor.execute_batch([job(entity, "o:1:d")])
            [second] = executor.execute_batch([job(entity, "o:1:d")])
        finally:
            executor.engine.dispose()
    assert isinstance(first, ConnectionError)
    assert second is None
    posted = [r.json() for r in hook.received()]
    assert len(posted) == 2
    assert posted[0] == posted[1]
    assert posted[0]["result"] == "applied"
    assert posted[0]["job_key"] == "o:1:d"
    assert hook.received()[1].headers["idempotency-key"] == "o:1:d"


def test_a_refused_event_fails_for_good(shop: sa.Engine, every_url: DatabaseUrl) -> None:
    with HttpRecorder(lambda _r: (404, b"")) as hook:
        executor = make_executor({"database_url": url_text(every_url), "webhook_url": hook.url})
        try:
            [error] = executor.execute_batch([job(order("paid", OrderAction.EXPIRE_UNPAID), "k")])
        finally:
            executor.engine.dispose()
    assert isinstance(error, PermanentError)
    assert "refused the event with 404" in str(error)


def test_config_errors_name_the_setting(shop: sa.Engine, every_url: DatabaseUrl) -> None:
    good = url_text(every_url)
    down = f"mysql+pymysql://root@127.0.0.1:{free_port()}/shop"
    cases: dict[str, dict[str, Any]] = {
        "database_url is missing": {},
        "database_url mysql+pymysql://root@127.0.0.1:": {"database_url": down},
        "table 'nope' does not exist": {"database_url": good, "table": "nope"},
        "status_column 'state' is not a column of table 'orders'": {
            "database_url": good,
            "status_column": "state",
        },
        "webhook_url is 'ftp://x'": {"database_url": good, "webhook_url": "ftp://x"},
    }
    for expected, section in cases.items():
        with pytest.raises(ConfigError) as info:
            make_executor(section)
        text = str(info.value)
        assert text.startswith("plugin orders: [plugins.orders] "), text
        assert expected in text
        assert "\n" not in text
