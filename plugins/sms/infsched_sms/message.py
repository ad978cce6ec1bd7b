"""SmsMessage: what a transport sends, built from an entity and its job."""

from __future__ import annotations

import zlib

import attrs

from infsched.executors import JobContext
from infsched_sms.encoding import Encoded, encode
from infsched_sms.entity import SmsEntity


@attrs.frozen
class SmsMessage:
    """One SMS (possibly several concatenated parts) ready for a gateway."""

    to: str
    sender: str
    text: str
    encoded: Encoded
    validity_minutes: int | None
    delivery_report: bool
    #: The job key: the gateway's client reference, so it can drop duplicates.
    reference: str

    @property
    def concat_reference(self) -> int:
        """The 8-bit concatenation reference: the same on every retry of the same job."""
        return zlib.crc32(self.reference.encode()) & 0xFF

    @classmethod
    def from_entity(cls, entity: SmsEntity, reference: str) -> SmsMessage:
        """The message of `entity`; ValueError when its text cannot take its coding."""
        return cls(
            to=entity.phone_number,
            sender=entity.sender,
            text=entity.message,
            encoded=encode(entity.message, entity.coding.value),
            validity_minutes=entity.validity_minutes,
            delivery_report=entity.delivery_report,
            reference=reference,
        )

    @classmethod
    def from_job(cls, job: JobContext[SmsEntity]) -> SmsMessage:
        return cls.from_entity(job.entity, job.job_key)
