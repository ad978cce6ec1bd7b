"""What the SMS tests share: jobs for entities, without a scheduler, and gateway answers."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from infsched.engine.joblog import job_logger
from infsched.executors import JobContext
from infsched_sms import SmsCoding, SmsEntity
from infsched_sms.message import SmsMessage
from tests.loopback_servers import HttpRequest


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


class ThrottlingGateway:
    """An HTTP gateway's answers (an HttpRecorder responder) that say "too fast" at first.

    The first `throttled` requests get `status` (429, or Kannel's 503 with
    its "Temporal failure, try again later.") and a ``Retry-After`` header
    when `retry_after` is given; every later request is accepted.  The times
    of both kinds of answer are kept.
    """

    def __init__(
        self,
        throttled: int,
        status: int = 429,
        *,
        retry_after: str | None = None,
        refusal: bytes = b'{"error": "too many requests"}',
        accepted: bytes = b'{"ok": true}',
    ) -> None:
        self.throttled, self.status, self.retry_after = throttled, status, retry_after
        self.refusal, self.accepted = refusal, accepted
        self.throttled_at: list[float] = []
        self.accepted_requests: list[HttpRequest] = []
        self._lock = threading.Lock()

    def __call__(self, request: HttpRequest) -> tuple[int, bytes, dict[str, str]]:
        with self._lock:
            if len(self.throttled_at) < self.throttled:
                self.throttled_at.append(time.time())
                headers = {} if self.retry_after is None else {"Retry-After": self.retry_after}
                return self.status, self.refusal, headers
            self.accepted_requests.append(request)
        return 200, self.accepted, {}


__all__ = ["SmsCoding", "ThrottlingGateway", "job", "message", "sms"]
