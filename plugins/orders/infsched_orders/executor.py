"""OrderExecutor: applies due order transitions with a compare-and-set.

``UPDATE orders SET status = :target WHERE order_id = :id AND status = :expected``
changes the order only while it is still in the state the action expects: a
paid order is not expired, and a retry or a second run of the same job
changes nothing.  What happened (applied, already done, or skipped because the
order moved on) is recorded in ``infsched_order_events``, once per job key,
in the same transaction as the change.

A batch of jobs is applied in one transaction.  Afterwards, for each job
whose entity has a ``webhook_url`` (or when ``[plugins.orders] webhook_url``
is set), the recorded event is POSTed as JSON with the job key as
``Idempotency-Key`` and, with a ``webhook_secret``, an
``X-Infsched-Signature: sha256=<hex>`` HMAC of the body.  A failed post is
retried: the compare-and-set then changes nothing, and the event first
recorded for the job key is posted again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from infsched.column_types import UtcDateTime
from infsched.database import Database, open_database
from infsched.dburl import DatabaseUrl
from infsched.errors import ConfigError
from infsched.executors import JobContext, PermanentError
from infsched.names import check_name
from infsched_orders.entity import OrderEntity

log = logging.getLogger("infsched.orders")

SIGNATURE_HEADER = "X-Infsched-Signature"

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
    # Naive UTC to the microsecond, on every database (the dialect picks the type).
    sa.Column("at", UtcDateTime(), nullable=False),
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


def event_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    """An infsched_order_events row as the webhook and ``orders events`` show it."""
    at = row["at"]
    return {
        "job_key": row["job_key"],
        "order_id": row["order_id"],
        "action": row["action"],
        "result": row["result"],
        "from_status": row["from_status"],
        "to_status": row["to_status"],
        "at": at.replace(tzinfo=UTC).isoformat() if isinstance(at, datetime) else str(at),
    }


def events_of(engine: sa.Engine, order_id: str) -> list[dict[str, Any]]:
    """Every recorded event of one order, oldest first."""
    query = (
        sa.select(order_events)
        .where(order_events.c.order_id == order_id)
        .order_by(order_events.c.at, order_events.c.job_key)
    )
    with engine.connect() as conn:
        return [event_json(row) for row in conn.execute(query).mappings()]


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class OrderExecutor:
    """Applies OrderEntity actions to the orders table."""

    def __init__(
        self,
        database: Database,
        table: sa.Table,
        *,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        webhook_timeout: float = 10.0,
    ) -> None:
        self.engine = engine = database.engine
        self.table = table
        self._id, self._status = table.c[0], table.c[1]
        self._record = database.dialect.insert_ignore(order_events, ["job_key"])
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.webhook_timeout = webhook_timeout
        events_metadata.create_all(engine, checkfirst=True)

    def __call__(self, job: JobContext[OrderEntity]) -> None:
        [error] = self.execute_batch([job])
        if error is not None:
            raise error

    def execute_batch(self, jobs: Sequence[JobContext[OrderEntity]]) -> list[BaseException | None]:
        with self.engine.begin() as conn:
            for job in jobs:
                self._apply(conn, job)
        results: list[BaseException | None] = []
        for job in jobs:
            try:
                self._post_event(job)
                results.append(None)
            except Exception as exc:
                results.append(exc)
        return results

    def _apply(self, conn: sa.Connection, job: JobContext[OrderEntity]) -> None:
        entity = job.entity
        expected, target = entity.expected_status, entity.target_status
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

    def _post_event(self, job: JobContext[OrderEntity]) -> None:
        url = job.entity.webhook_url or self.webhook_url
        if not url:
            return
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(order_events).where(order_events.c.job_key == job.job_key))
                .mappings()
                .one()
            )
        body = json.dumps(event_json(row), separators=(",", ":"), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": job.job_key}
        if self.webhook_secret:
            headers[SIGNATURE_HEADER] = sign(self.webhook_secret, body)
        request = urllib.request.Request(url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.webhook_timeout) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 or exc.code in (408, 425, 429):
                raise ConnectionError(f"order event webhook {url} answered {exc.code}") from None
            raise PermanentError(
                f"order event webhook {url} refused the event with {exc.code} {exc.reason}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectionError(f"order event webhook {url} unreachable: {reason}") from None
        job.logger.info("order event posted to %s (%d)", url, status)


def _error(key: str, problem: str) -> ConfigError:
    return ConfigError(f"plugin orders: [plugins.orders] {key} {problem}")


def _text(section: Mapping[str, Any], key: str, default: str | None) -> str | None:
    value = section.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise _error(key, f"is {value!r}; expected a non-empty string")
    return value


def make_executor(section: Mapping[str, Any]) -> OrderExecutor:
    """Build from ``[plugins.orders]``; see the plugin's README for every key."""
    raw = _text(section, "database_url", None)
    if not raw:
        raise _error("database_url", "is missing; it names the database holding your orders table")
    try:
        url = DatabaseUrl(raw)
    except ConfigError as exc:
        raise _error("database_url", f"is invalid: {exc}") from None
    names = {
        "table": _text(section, "table", "orders") or "orders",
        "id_column": _text(section, "id_column", "order_id") or "order_id",
        "status_column": _text(section, "status_column", "status") or "status",
    }
    try:
        table = orders_table(names["table"], names["id_column"], names["status_column"])
    except ValueError as exc:
        raise _error("table", f"or its columns are invalid: {exc}") from None
    timeout = section.get("webhook_timeout", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise _error("webhook_timeout", f"is {timeout!r}; expected a number of seconds > 0")
    webhook_url = _text(section, "webhook_url", None)
    if webhook_url is not None and not webhook_url.startswith(("http://", "https://")):
        raise _error("webhook_url", f"is {webhook_url!r}; expected an http(s) URL")
    database = open_database(url)
    engine = database.engine
    try:
        with engine.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
    except sa.exc.NoSuchTableError:
        engine.dispose()
        raise _error("table", f"{table.name!r} does not exist in {url}") from None
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
        raise _error("database_url", f"{url} cannot be reached: {reason}") from None
    for key in ("id_column", "status_column"):
        if names[key] not in columns:
            engine.dispose()
            raise _error(key, f"{names[key]!r} is not a column of table {table.name!r}")
    return OrderExecutor(
        database,
        table,
        webhook_url=webhook_url,
        webhook_secret=_text(section, "webhook_secret", None),
        webhook_timeout=float(timeout),
    )
