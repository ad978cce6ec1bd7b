"""End to end: one ``infsched run`` node delivers SMS, order actions and notifications on time.

The entities live in MariaDB repositories; the node is a real subprocess
reading a TOML config; every kind goes out through its real transport:
SMS through Kannel (bearerbox + smsbox) to fakesmsc, order actions into an
orders table, emails to an SMTP server, webhooks to an HTTP server that
checks their signature.  Each must arrive at its due time, not before and
at most a couple of seconds after (fetch_interval 1, lookahead_window 3).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from infsched.config import load_config
from infsched.configured_repositories import build_repositories
from infsched.dburl import DatabaseUrl
from infsched.plugins import load_plugins
from infsched_notifications import Channel, NotificationEntity
from infsched_notifications.webhook import SIGNATURE_HEADER, verify
from infsched_orders import OrderAction, OrderEntity
from infsched_orders.executor import order_events
from infsched_sms import SmsEntity
from tests.loopback_servers import (
    HttpRecorder,
    HttpRequest,
    KannelBoxes,
    SmtpRecorder,
    free_port,
    wait_for,
)

INFSCHED = str(Path(sys.executable).with_name("infsched"))
SECRET = "e2e-webhook-secret"
#: How late a delivery may be: one fetch interval, one claim poll, the transport.
LATE = 2.5


def config_text(url: str, kannel: KannelBoxes, smtp: SmtpRecorder) -> str:
    return f"""
database_url = "{url}"
fetch_interval = 1
lookahead_window = 3
heartbeat_interval = 0.5
job_lease = 5
retry_base_delay = 0.5

[[repositories]]
name = "sms"
entity = "SmsEntity"
executor = "sms"

[[repositories]]
name = "order_actions"
entity = "OrderEntity"
executor = "orders"

[[repositories]]
name = "notifications"
entity = "NotificationEntity"
executor = "notifications"

[plugins.sms]
transport = "kannel"
kannel_url = "{kannel.sendsms_url}"
kannel_username = "{kannel.username}"
kannel_password = "{kannel.password}"

[plugins.orders]
database_url = "{url}"
table = "shop_orders"

[plugins.notifications]
email_transport = "smtp"
smtp_host = "127.0.0.1"
smtp_port = {smtp.port}
smtp_sender = "noreply@example.org"
webhook_secret = "{SECRET}"
"""


def signed(request: HttpRequest) -> tuple[int, bytes]:
    ok = verify(SECRET, request.body, request.headers.get(SIGNATURE_HEADER.lower(), ""))
    return (204, b"") if ok else (401, b"bad signature")


def on_time(kind: str, due: datetime, at: float) -> None:
    late = at - due.timestamp()
    assert -0.05 <= late <= LATE, f"{kind} due {due:%H:%M:%S.%f} arrived {late:+.2f} s from then"


def test_one_node_delivers_every_kind_through_its_transport_on_time(
    tmp_path: Path, mysql_url: DatabaseUrl
) -> None:
    if not KannelBoxes.available():
        pytest.fail("Kannel is not installed: run `bash .ci/system-packages` (make test does)")
    url = mysql_url.sqlalchemy_url.render_as_string(hide_password=False)
    kannel_dir = tmp_path / "kannel"
    kannel_dir.mkdir()
    with (
        KannelBoxes(kannel_dir) as kannel,
        SmtpRecorder() as smtp,
        HttpRecorder(signed) as hooks,
    ):
        config_path = tmp_path / "infsched.toml"
        config_path.write_text(config_text(url, kannel, smtp))
        configured = {
            c.config.name: c.repository
            for c in build_repositories(load_config(config_path).config, load_plugins())
        }
        engine = configured["sms"].engine
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE shop_orders (order_id VARCHAR(64) PRIMARY KEY, "
                    "status VARCHAR(32) NOT NULL)"
                )
            )
            conn.execute(sa.text("INSERT INTO shop_orders VALUES ('ORD-1', 'pending_payment')"))
        for repo in configured.values():
            repo.maintain()
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
        due = {
            name: start + timedelta(seconds=i)
            for i, name in enumerate(["sms", "order", "email", "webhook"])
        }
        configured["sms"].insert_many(
            [
                SmsEntity(
                    scheduled_time=due["sms"],
                    phone_number="+4915112345678",
                    sender="ACME",
                    message="Your table is ready",
                )
            ]
        )
        configured["order_actions"].insert_many(
            [
                OrderEntity(
                    due_at=due["order"],
                    order_id="ORD-1",
                    customer_id="C-1",
                    action=OrderAction.EXPIRE_UNPAID,
                    amount=Decimal("19.90"),
                    currency="EUR",
                )
            ]
        )
        configured["notifications"].insert_many(
            [
                NotificationEntity(
                    send_at=due["email"],
                    channel=Channel.EMAIL,
                    recipient="ada@example.org",
                    subject="Hello $name",
                    body_text="Your order ships today, $name.",
                    template_data={"name": "Ada"},
                ),
                NotificationEntity(
                    send_at=due["webhook"],
                    channel=Channel.WEBHOOK,
                    recipient=f"{hooks.url}/events",
                    subject="shipped",
                    body_text="ORD-1 shipped",
                ),
            ]
        )
        process = subprocess.Popen(
            [INFSCHED, "run", "--config", str(config_path), "--log-format", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        try:
            wait_for(
                lambda: (
                    len(kannel.received()) == 1
                    and len(smtp.messages) == 1
                    and len(hooks.received()) == 1
                ),
                timeout=30,
                what="the SMS, the email and the webhook",
            )
            with engine.connect() as conn:
                status = conn.execute(sa.text("SELECT status FROM shop_orders")).scalar_one()
                event = conn.execute(sa.select(order_events)).mappings().one()
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=60)
            for repo in configured.values():
                repo.engine.dispose()
    assert process.returncode == 0, output
    [sms] = kannel.received()
    assert (sms.sender, sms.to, sms.text) == ("ACME", "+4915112345678", "Your table is ready")
    on_time("sms", due["sms"], sms.at)
    assert status == "expired"
    assert event["result"] == "applied"
    on_time("order", due["order"], event["at"].replace(tzinfo=UTC).timestamp())
    [mail] = smtp.messages
    assert mail.rcpt_tos == ["ada@example.org"]
    assert mail.message["Subject"] == "Hello Ada"
    on_time("email", due["email"], mail.at)
    [hook] = hooks.received()
    assert hook.json()["text"] == "ORD-1 shipped"
    assert hook.headers["idempotency-key"].startswith("notifications:")
    on_time("webhook", due["webhook"], hook.at)


def test_run_refuses_a_gateway_it_cannot_reach_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "infsched.toml"
    down = free_port()
    config.write_text(
        f"""
database_url = "sqlite:///{tmp_path / "infsched.db"}"

[[repositories]]
name = "sms"
entity = "SmsEntity"
executor = "sms"

[plugins.sms]
transport = "kannel"
kannel_url = "http://127.0.0.1:{down}/cgi-bin/sendsms"
kannel_username = "u"
kannel_password = "p"
"""
    )
    result = subprocess.run(
        [INFSCHED, "run", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        f"error: plugin sms: [plugins.sms] kannel_url names 127.0.0.1:{down}, which cannot be "
        "reached"
    ), line
