"""The live demo behind ``make run``: real entities, real executors, the embedded database.

It seeds SMS, order and notification entities due over the next minute (some
already overdue), runs one scheduler node on them with the three plugins'
executors (SMS to the console transport, orders as compare-and-set on a demo
orders table, emails to the log), shows them being fetched, fired and
finished, and ends with a summary.  Everything lives in the configured
database (``./infsched.db`` by default), in repositories named ``demo_*``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
import sqlalchemy as sa
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table

from infsched.clock import SystemClock, utc_naive
from infsched.config import SchedulerConfig
from infsched.database import check_reachable, open_database
from infsched.engine.binding import RepositoryBinding
from infsched.errors import DatabaseUnreachableError, InfschedError
from infsched.jobstore.base import Outcome
from infsched.management.scheduler import InfiniteScheduler
from infsched.plugins import PluginRegistry
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import ShardingRepository

#: (repository, executor, plugin)
DEMO_REPOSITORIES = (
    ("demo_sms", "sms", "sms"),
    ("demo_orders", "orders", "orders"),
    ("demo_notifications", "notifications", "notifications"),
)


@attrs.frozen
class DemoSummary:
    seeded: int
    outcomes: dict[str, int]
    seconds: float

    @property
    def complete(self) -> bool:
        finished = sum(v for k, v in self.outcomes.items() if k != Outcome.FAILED.value)
        return finished >= self.seeded


class _Recent(logging.Handler):
    """Keeps the last log lines for the live view."""

    def __init__(self, size: int = 8) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class _ClockFormatter(logging.Formatter):
    """``20:33:49+00:00 message``: the time of day in UTC, with its offset."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).timetz().isoformat("seconds")


def _plugin_types() -> dict[str, Any]:
    try:
        from infsched_notifications import Channel, NotificationEntity
        from infsched_orders import OrderAction, OrderEntity
        from infsched_sms import SmsEntity
    except ImportError as exc:  # pragma: no cover - `make run` installs them
        raise InfschedError(
            f"the demo needs the sms, orders and notifications plugins installed ({exc})"
        ) from None
    return {
        "SmsEntity": SmsEntity,
        "OrderEntity": OrderEntity,
        "OrderAction": OrderAction,
        "NotificationEntity": NotificationEntity,
        "Channel": Channel,
    }


def _due_times(now: datetime, count: int, spread: float, rng: random.Random) -> list[datetime]:
    """A fifth already overdue by up to 20 s; the rest spread over the next `spread` seconds."""
    out = []
    for i in range(count):
        if i % 5 == 0:
            out.append(now - timedelta(seconds=rng.uniform(1, 20)))
        else:
            out.append(now + timedelta(seconds=rng.uniform(0, spread)))
    return out


def seed(
    repos: dict[str, ShardingRepository[Any, Any]],
    orders_engine: sa.Engine,
    now: datetime,
    spread: float,
    per_kind: int,
    rng: random.Random,
) -> int:
    t = _plugin_types()
    sms = [
        t["SmsEntity"](
            scheduled_time=due,
            phone_number=f"+4915{rng.randrange(10**8, 10**9)}",
            sender="ACME",
            message=f"Your appointment is confirmed (#{i})",
            priority=rng.choice([0, 0, 5]),
        )
        for i, due in enumerate(_due_times(now, per_kind, spread, rng))
    ]
    actions = list(t["OrderAction"])
    orders = [
        t["OrderEntity"](
            due_at=due,
            order_id=f"demo-{now:%H%M%S}-{i}",
            customer_id=f"c{i % 7}",
            action=actions[i % len(actions)],
            amount=Decimal("19.90"),
            currency="EUR",
        )
        for i, due in enumerate(_due_times(now, per_kind, spread, rng))
    ]
    with orders_engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE IF NOT EXISTS demo_orders_table "
                "(order_id VARCHAR(64) PRIMARY KEY, status VARCHAR(32) NOT NULL)"
            )
        )
        for i, order in enumerate(orders):
            # Every fourth unpaid order gets paid before its deadline: its expiry is skipped.
            status = order.expected_status if i % 4 else "paid"
            conn.execute(
                sa.text("INSERT INTO demo_orders_table (order_id, status) VALUES (:id, :status)"),
                {"id": order.order_id, "status": status},
            )
    notes = [
        t["NotificationEntity"](
            send_at=due,
            channel=t["Channel"].EMAIL,
            recipient=f"user{i}@example.com",
            subject="Hello $name",
            body_text="Your order ships today, $name.",
            template_data={"name": f"Customer {i}"},
        )
        for i, due in enumerate(_due_times(now, per_kind, spread, rng))
    ]
    repos["demo_sms"].insert_many(sms)
    repos["demo_orders"].insert_many(orders)
    repos["demo_notifications"].insert_many(notes)
    return len(sms) + len(orders) + len(notes)


def _counts(scheduler: InfiniteScheduler, since: datetime) -> dict[str, dict[str, int]]:
    per_repo: dict[str, dict[str, int]] = {
        name: collections.Counter() for name, _, _ in DEMO_REPOSITORIES
    }
    store = scheduler.store
    with store.engine.connect() as conn:
        for count in store.count_jobs(conn, utc_naive(store.db_now(conn))):
            if count.repository in per_repo:
                per_repo[count.repository][count.state] += count.total
    for outcome in scheduler.history.repository.find_all_by_date_range(
        since - timedelta(minutes=1), scheduler.clock.now() + timedelta(days=1)
    ):
        if outcome.repository in per_repo:
            per_repo[outcome.repository][outcome.state.value] += 1
    return per_repo


def _frame(
    counts: dict[str, dict[str, int]], seeded: dict[str, int], recent: Sequence[str], elapsed: float
) -> Group:
    table = Table(title=f"Infinite Scheduler demo — {elapsed:4.0f} s")
    for heading in (
        "repository",
        "seeded",
        "wait",
        "run",
        "ok",
        "retry",
        "misfire",
        "dead",
        "done",
    ):
        table.add_column(heading, justify="left" if heading == "repository" else "right")
    for name, _, _ in DEMO_REPOSITORIES:
        c = counts[name]
        done = c["succeeded"] + c["misfired"] + c["dead"]
        table.add_row(
            name,
            str(seeded[name]),
            str(c["waiting"]),
            str(c["claimed"]),
            str(c["succeeded"]),
            str(c["failed"]),
            str(c["misfired"]),
            str(c["dead"]),
            ProgressBar(total=max(seeded[name], 1), completed=done, width=20),
        )
    # Not expanded: off a terminal the console is as wide as the longest line needs.
    log_panel = Panel(
        "\n".join(recent) or "(waiting for the first due entity)",
        title="executors",
        height=10,
        expand=False,
    )
    return Group(table, log_panel)


def run_demo(
    config: SchedulerConfig,
    plugins: PluginRegistry,
    *,
    spread: float = 60.0,
    per_kind: int = 20,
    console: Console,
) -> DemoSummary:
    """Seed, run one node until every seeded entity has an outcome, and summarise on `console`."""
    clock = SystemClock()
    demo_config = attrs.evolve(
        config,
        fetch_interval=min(config.fetch_interval, 2.0),
        lookahead_window=min(config.lookahead_window, 5.0),
        retry_base_delay=min(config.retry_base_delay, 1.0),
        plugins={
            **config.plugins,
            "sms": {"transport": "console", **config.plugin_section("sms")},
            "orders": {
                "database_url": config.database_url.sqlalchemy_url.render_as_string(
                    hide_password=False
                ),
                "table": "demo_orders_table",
                **config.plugin_section("orders"),
            },
            "notifications": {"email_transport": "log", **config.plugin_section("notifications")},
        },
    )
    database = open_database(demo_config.database_url, clock=clock)
    engine = database.engine
    try:
        check_reachable(engine, demo_config.database_url)
    except DatabaseUnreachableError:
        engine.dispose()
        raise
    backend = plugins.repository_backend(database.dialect.default_repository_backend)
    types = _plugin_types()
    entity_of = {
        "demo_sms": types["SmsEntity"],
        "demo_orders": types["OrderEntity"],
        "demo_notifications": types["NotificationEntity"],
    }
    repos = {
        name: backend.factory(
            RepositoryOptions(
                name=name,
                entity_type=entity_of[name],
                engine=engine,
                database=database,
                clock=clock,
            )
        )
        for name, _, _ in DEMO_REPOSITORIES
    }
    for repo in repos.values():
        repo.maintain()
    started_at = clock.now()
    seeded_total = seed(repos, engine, started_at, spread, per_kind, random.Random())
    seeded = dict.fromkeys(repos, per_kind)
    recent = _Recent()
    recent.setFormatter(_ClockFormatter("%(asctime)s %(message)s"))
    watched = [
        logging.getLogger(n)
        for n in ("infsched.job", "infsched.sms", "infsched.orders", "infsched.notifications")
    ]
    for logger in watched:
        logger.addHandler(recent)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    scheduler = InfiniteScheduler(
        [
            RepositoryBinding(repos[name], executor=executor)
            for name, executor, _ in DEMO_REPOSITORIES
        ],
        demo_config,
        plugins=plugins,
        clock=clock,
        database=database,
    )
    began = time.monotonic()
    deadline = began + spread + 60
    counts: dict[str, dict[str, int]] = {}
    # The live view redraws in place on a terminal; a file or a pipe gets the last frame
    # once, as lines of its own (rich's Live leaves its last line unended there).
    on_terminal = console.is_terminal
    view = Live(console=console, refresh_per_second=4, transient=False) if on_terminal else None
    frame: RenderableType = ""
    try:
        with scheduler, view or contextlib.nullcontext():
            while time.monotonic() < deadline:
                counts = _counts(scheduler, started_at)
                frame = _frame(counts, seeded, list(recent.lines), time.monotonic() - began)
                if view is not None:
                    view.update(frame)
                finished = sum(c["succeeded"] + c["misfired"] + c["dead"] for c in counts.values())
                if finished >= seeded_total:
                    break
                time.sleep(0.25)
    finally:
        for logger in watched:
            logger.removeHandler(recent)
            logger.propagate = True
        engine.dispose()
    if view is None:
        console.print(frame)
    totals: collections.Counter[str] = collections.Counter()
    for c in counts.values():
        totals.update({k: v for k, v in c.items() if k in {o.value for o in Outcome}})
    return DemoSummary(seeded_total, dict(totals), time.monotonic() - began)
