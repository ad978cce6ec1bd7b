"""``infsched orders events`` through the real command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from infsched.cli.context import AppContext
from infsched.cli.main import build_cli
from infsched.dburl import DatabaseUrl
from infsched.engine.joblog import job_logger
from infsched.executors import JobContext
from infsched.plugins import load_plugins
from infsched_orders import OrderAction, OrderEntity
from infsched_orders.executor import make_executor


def test_events_lists_what_happened_to_one_order(tmp_path: Path, sqlite_url: DatabaseUrl) -> None:
    url = sqlite_url.sqlalchemy_url.render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (order_id VARCHAR(64) PRIMARY KEY, status TEXT)"))
        conn.execute(sa.text("INSERT INTO orders VALUES ('ORD-1', 'pending_payment')"))
    engine.dispose()
    config = tmp_path / "infsched.toml"
    config.write_text(f'[plugins.orders]\ndatabase_url = "{url}"\n')
    registry = load_plugins()
    cli = build_cli(registry)

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args), obj=AppContext(plugins=registry))
        assert result.exit_code == 0, result.output
        return result.output

    assert "no events recorded for order ORD-1" in run(
        "orders", "events", "--config", str(config), "ORD-1"
    )
    executor = make_executor({"database_url": url})
    entity = OrderEntity(
        due_at=datetime(2030, 1, 1, tzinfo=UTC),
        order_id="ORD-1",
        customer_id="C",
        action=OrderAction.EXPIRE_UNPAID,
        amount=Decimal("1.00"),
        currency="EUR",
    )
    for key in ("o:1:a", "o:1:b"):
        executor(JobContext(entity, key, 1, entity.due_at, "o", job_logger(key, "o")))
    executor.engine.dispose()
    events = json.loads(run("orders", "events", "--config", str(config), "--json", "ORD-1"))
    assert [(e["job_key"], e["result"], e["to_status"]) for e in events] == [
        ("o:1:a", "applied", "expired"),
        ("o:1:b", "already_applied", "expired"),
    ]
    table = run("orders", "events", "--config", str(config), "ORD-1")
    assert "already_applied" in table
    assert "o:1:a" in table
