"""What the notification tests share: entities and jobs, without a scheduler."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from infsched.engine.joblog import job_logger
from infsched.executors import JobContext
from infsched_notifications import Channel, NotificationEntity


def email(
    recipient: str = "ada@example.org",
    *,
    subject: str = "Hello $name",
    text: str = "Hi $name, see you at $event.",
    html: str | None = None,
    data: dict[str, Any] | None = None,
) -> NotificationEntity:
    return NotificationEntity(
        send_at=datetime(2030, 1, 1, 8, tzinfo=UTC),
        channel=Channel.EMAIL,
        recipient=recipient,
        subject=subject,
        body_text=text,
        body_html=html,
        template_data={"name": "Ada", "event": "the launch"} if data is None else data,
    )


def hook(url: str, text: str = "Order $order shipped") -> NotificationEntity:
    return NotificationEntity(
        id=7,
        send_at=datetime(2030, 1, 1, 8, tzinfo=UTC),
        channel=Channel.WEBHOOK,
        recipient=url,
        subject="shipped",
        body_text=text,
        template_data={"order": "ORD-1"},
    )


def job(entity: NotificationEntity, key: str = "notes:1:a") -> JobContext[NotificationEntity]:
    return JobContext(
        entity=entity,
        job_key=key,
        attempt=1,
        due_at=entity.send_at,
        repository="notes",
        logger=job_logger(key, "notes"),
    )
