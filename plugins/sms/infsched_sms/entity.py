"""SmsEntity: one text message to send at a given time."""

from __future__ import annotations

import enum
import re
from datetime import datetime

import attrs
import phonenumbers

from infsched.entities import column, id_field, sharding_key

#: An alphanumeric sender id is at most 11 characters (GSM 03.40); a numeric one is an MSISDN.
_ALPHANUMERIC_SENDER = re.compile(r"^[A-Za-z0-9 .\-_&]{1,11}$")


def is_e164(value: object) -> bool:
    """True for a number written in E.164 that its country's numbering plan allows.

    The text must be the canonical form (``+``, country code, national number,
    nothing else), and `phonenumbers` must find it *possible*: a known country
    code and a national number of a length that country uses.  It is not
    required to be *valid* (in a range the library knows as assigned): numbering
    plans change faster than the library's metadata, and a wrongly refused
    message is lost, while a number the operator does not know comes back as a
    rejection that fails the job for good.
    """
    if not isinstance(value, str) or not value.startswith("+"):
        return False
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    canonical = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return (
        canonical == value
        and phonenumbers.region_code_for_number(number) is not None
        and phonenumbers.is_possible_number_with_reason(number)
        == phonenumbers.ValidationResult.IS_POSSIBLE
    )


def _e164(instance: object, field: attrs.Attribute[str], value: str) -> None:
    if not is_e164(value):
        raise ValueError(
            f"SmsEntity.{field.name}: {value!r} is not an E.164 number (+, country code and "
            "national number without spaces, of a length that country uses, e.g. +4915112345678)"
        )


def _sender(instance: object, field: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not (is_e164(value) or _ALPHANUMERIC_SENDER.match(value)):
        raise ValueError(
            f"SmsEntity.{field.name}: {value!r} is neither an E.164 number nor an alphanumeric "
            "sender id of at most 11 characters"
        )


class SmsCoding(enum.Enum):
    """How the text is encoded on the air interface."""

    #: GSM 7-bit when every character fits the GSM alphabet, UCS-2 otherwise.
    AUTO = "auto"
    GSM7 = "gsm7"
    UCS2 = "ucs2"


@attrs.define(kw_only=True)
class SmsEntity:
    """A text message due at `scheduled_time`."""

    id: int | None = id_field()
    scheduled_time: datetime = sharding_key()
    #: The recipient, E.164.
    phone_number: str = column(length=16, index=True)
    #: The originator: an E.164 number or an alphanumeric id such as "ACME".
    sender: str = column(length=16)
    #: The text; longer than one SMS is split into concatenated parts on sending.
    message: str = column(length=1600)
    coding: SmsCoding = column(default=SmsCoding.AUTO)
    #: Higher runs first when many messages are due at once.
    priority: int = column(default=0)
    #: Minutes the SMSC keeps trying to deliver; None leaves it to the SMSC.
    validity_minutes: int | None = column(default=None)
    #: Ask the SMSC for a delivery report.
    delivery_report: bool = column(default=False)
    #: The business's own reference (campaign, ticket), passed through to reports.
    reference: str | None = column(length=64, default=None)

    def __attrs_post_init__(self) -> None:
        _e164(self, attrs.fields(SmsEntity).phone_number, self.phone_number)
        _sender(self, attrs.fields(SmsEntity).sender, self.sender)
        if not self.message:
            raise ValueError("SmsEntity.message: an SMS needs text")
        if self.validity_minutes is not None and not 1 <= self.validity_minutes <= 10080:
            raise ValueError(
                f"SmsEntity.validity_minutes: {self.validity_minutes} is outside 1..10080 (a week)"
            )
