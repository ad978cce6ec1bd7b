"""SmsEntity checks its numbers with phonenumbers when it is created."""

from __future__ import annotations

import pytest
from sms_support import sms

from infsched_sms.entity import is_e164


@pytest.mark.parametrize(
    "number",
    ["+4915112345678", "+12025550100", "+33612345678", "+4915312345678"],
)
def test_possible_e164_numbers_are_accepted(number: str) -> None:
    assert sms(to=number).phone_number == number


@pytest.mark.parametrize(
    "number",
    [
        "4915112345678",  # no plus
        "+49 151 12345678",  # spaces
        "+4915112345678x",  # trailing junk phonenumbers would ignore
        "+441234",  # too short for the UK
        "+999123456789",  # no such country code
        "+4915112345678901234",  # too long
        "",
    ],
)
def test_impossible_or_non_canonical_numbers_are_refused(number: str) -> None:
    assert not is_e164(number)
    with pytest.raises(ValueError, match=r"SmsEntity\.phone_number: .* is not an E\.164 number"):
        sms(to=number)


def test_sender_is_e164_or_short_alphanumeric() -> None:
    assert sms(sender="+4915112345678").sender == "+4915112345678"
    assert sms(sender="Shop-24 Ltd").sender == "Shop-24 Ltd"
    for bad in ("TwelveChars!", "+49 151", "ACME€"):
        with pytest.raises(ValueError, match=r"SmsEntity\.sender"):
            sms(sender=bad)


def test_validity_and_text_are_checked() -> None:
    with pytest.raises(ValueError, match="validity_minutes"):
        sms(validity_minutes=0)
    with pytest.raises(ValueError, match="needs text"):
        sms(text="")
