"""OrderExecutor: applies a due order transition with a compare-and-set.

``UPDATE orders SET status = :target WHERE order_id = :id AND status = :expected``
changes the order only while it is still in the state the action expects: a
paid order is not expired, and a retry or a second run of the same job
changes nothing.  What happened (applied, already done, or skipped because the
order moved on) is recorded in ``infsched_order_events``, once per job key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from infsched.database import create_engine
from infsched.dburl import DatabaseUrl
from infsched.dialects import dialect_for
from infsched.errors import ConfigError
from infsched.executors import JobContext
from infsched.names import check_name
from infsched_orders.entity import OrderEntity

log = logging.getLogger("infsched.orders")

events_metadata = sa.MetaData()
order_events = sa.Table(
    "infsched_order_events",
    events_metadata,
    sa.Column("job_key", sa.String(255), primary_key=True),
    sa.Column("order_id", sa.String(64), nullable=False, index=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("from_status", sa.String(32), nullable=True),
    sa.Column("to_status", sa.String(32), nullable=False),
    # applied | already_applied | skipped
    sa.Column("result", sa.String(16), nullable=False),
    sa.Column("at", sa.DateTime(), nullable=False),
)


def orders_table(
    name: str = "orders", id_column: str = "order_id", status_column: str = "status"
) -> sa.Table:
    """The business's orders table, as much of it as the executor touches."""
    return sa.Table(
        check_name(name, "orders table"),
        sa.MetaData(),
        sa.Column(check_name(id_column, "order id column"), sa.String(64), primary_key=True),
        sa.Column(check_name(status_column, "order status column"), sa.String(32), nullable=False),
    )


class OrderExecutor:
    """Applies OrderEntity actions to the orders table."""

    def __init__(self, engine: sa.Engine, table: sa.Table) -> None:
        self.engine = engine
        self.table = table
        self._id, self._status = table.c[0], table.c[1]
        self._record = dialect_for(engine).insert_ignore(order_events, ["job_key"])
        events_metadata.create_all(engine, checkfirst=True)

    def __call__(self, job: JobContext[OrderEntity]) -> None:
        entity = job.entity
        expected, target = entity.expected_status, entity.target_status
        with self.engine.begin() as conn:
            changed = conn.execute(
                self.table.update()
                .where(self._id == entity.order_id, self._status == expected)
                .values({self._status.name: target})
            ).rowcount
            current: str | None = expected
            if changed:
                result = "applied"
            else:
                current = conn.execute(
                    sa.select(self._status).where(self._id == entity.order_id)
                ).scalar_one_or_none()
                result = "already_applied" if current == target else "skipped"
            conn.execute(
                self._record,
                [
                    {
                        "job_key": job.job_key,
                        "order_id": entity.order_id,
                        "action": entity.action.value,
                        "from_status": current,
                        "to_status": target,
                        "result": result,
                        "at": datetime.now(UTC).replace(tzinfo=None),
                    }
                ],
            )
        job.logger.info(
            "order %s %s: %s (%s -> %s)",
            entity.order_id,
            entity.action.value,
            result,
            current,
            target,
        )


def make_executor(section: Mapping[str, Any]) -> OrderExecutor:
    """Build from ``[plugins.orders]``: database_url (required), table, id_column, status_column."""
    raw = section.get("database_url")
    if not raw:
        raise ConfigError(
            "plugin orders: database_url is missing in [plugins.orders]; it names the database "
            "holding your orders table"
        )
    try:
        table = orders_table(
            str(section.get("table", "orders")),
            str(section.get("id_column", "order_id")),
            str(section.get("status_column", "status")),
        )
    except ValueError as exc:
        raise ConfigError(f"plugin orders: {exc}") from None
    return OrderExecutor(create_engine(DatabaseUrl(str(raw))), table)
