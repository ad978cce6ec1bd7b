"""What the SMS tests share: jobs for entities, without a scheduler."""

from __future__ import annotations

from datetime import UTC, datetime

from infsched.engine.joblog import job_logger
from infsched.executors import JobContext
from infsched_sms import SmsCoding, SmsEntity
from infsched_sms.message import SmsMessage


def sms(
    text: str = "Hello",
    to: str = "+4915112345678",
    *,
    sender: str = "ACME",
    coding: SmsCoding = SmsCoding.AUTO,
    validity_minutes: int | None = None,
    delivery_report: bool = False,
) -> SmsEntity:
    return SmsEntity(
        scheduled_time=datetime(2030, 1, 1, 9, tzinfo=UTC),
        phone_number=to,
        sender=sender,
        message=text,
        coding=coding,
        validity_minutes=validity_minutes,
        delivery_report=delivery_report,
    )


def job(entity: SmsEntity, key: str = "texts:1:20300101T090000.000000Z") -> JobContext[SmsEntity]:
    return JobContext(
        entity=entity,
        job_key=key,
        attempt=1,
        due_at=entity.scheduled_time,
        repository="texts",
        logger=job_logger(key, "texts"),
    )


def message(
    text: str = "Hello",
    key: str = "texts:1:x",
    *,
    to: str = "+4915112345678",
    delivery_report: bool = False,
    validity_minutes: int | None = None,
) -> SmsMessage:
    entity = sms(text, to, delivery_report=delivery_report, validity_minutes=validity_minutes)
    return SmsMessage.from_entity(entity, key)


__all__ = ["SmsCoding", "job", "message", "sms"]
