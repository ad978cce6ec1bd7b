"""The shipped plugins' entity types: domain validation and a round trip through the database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from infsched.dburl import DatabaseUrl
from infsched.entities import entity_spec
from infsched.errors import EntityError
from infsched_notifications import Channel, NotificationEntity
from infsched_orders import TRANSITIONS, OrderAction, OrderEntity
from infsched_sms import SmsCoding, SmsEntity

WHEN = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)


def sms(**changes: Any) -> SmsEntity:
    values: dict[str, Any] = {
        "id": 1,
        "scheduled_time": WHEN,
        "phone_number": "+4915112345678",
        "sender": "ACME",
        "message": "Your table is ready 🍽",
        "coding": SmsCoding.UCS2,
        "validity_minutes": 60,
        "reference": "campaign-7",
    }
    values.update(changes)
    return SmsEntity(**values)


def order(**changes: Any) -> OrderEntity:
    values: dict[str, Any] = {
        "id": 2,
        "due_at": WHEN,
        "order_id": "ORD-1001",
        "customer_id": "C-77",
        "action": OrderAction.EXPIRE_UNPAID,
        "amount": Decimal("149.90"),
        "currency": "EUR",
        "webhook_url": "https://shop.example/hooks/orders",
    }
    values.update(changes)
    return OrderEntity(**values)


def notification(**changes: Any) -> NotificationEntity:
    values: dict[str, Any] = {
        "id": 3,
        "send_at": WHEN,
        "channel": Channel.EMAIL,
        "recipient": "ada@example.org",
        "subject": "Reminder: $event",
        "body_text": "Hello $name, see you at $event.",
        "template_data": {"name": "Ada", "event": "the launch"},
    }
    values.update(changes)
    return NotificationEntity(**values)


# -- SmsEntity --


# Checked with phonenumbers: a known country code and a length that country uses.
@pytest.mark.parametrize("number", ["+4915112345678", "+12025550100", "+6421234567"])
def test_sms_accepts_e164_numbers(number: str) -> None:
    assert sms(phone_number=number).phone_number == number


@pytest.mark.parametrize(
    "number",
    [
        "015112345678",  # national format, no country code
        "4915112345678",  # no plus
        "+0151123456",  # a country code never starts with 0
        "+123456",  # too short
        "+1234567",  # a country code, but too short for it
        "+1234567890123456",  # 16 digits: longer than E.164 allows
        "+49 151 1234567",  # spaces
        "",
    ],
)
def test_sms_refuses_numbers_that_are_not_e164(number: str) -> None:
    with pytest.raises(ValueError, match=r"SmsEntity\.phone_number: .* is not an E\.164 number"):
        sms(phone_number=number)


@pytest.mark.parametrize("sender", ["ACME", "Shop-24 Ltd", "+4930123456"])
def test_sms_accepts_alphanumeric_and_numeric_senders(sender: str) -> None:
    assert sms(sender=sender).sender == sender


@pytest.mark.parametrize("sender", ["TwelveChars!", "ACME Shop GmbH", "", "Ümlaut"])
def test_sms_refuses_senders_an_smsc_would_reject(sender: str) -> None:
    with pytest.raises(ValueError, match=r"SmsEntity\.sender: .* is neither an E\.164 number"):
        sms(sender=sender)


def test_sms_needs_text_and_a_validity_within_a_week() -> None:
    with pytest.raises(ValueError, match=r"SmsEntity\.message: an SMS needs text"):
        sms(message="")
    for minutes in (0, 10081):
        with pytest.raises(ValueError, match=r"SmsEntity\.validity_minutes: .* outside 1\.\.10080"):
            sms(validity_minutes=minutes)
    assert sms(validity_minutes=10080).validity_minutes == 10080
    assert sms(validity_minutes=None).validity_minutes is None


def test_sms_text_longer_than_the_column_is_refused_before_sql() -> None:
    with pytest.raises(EntityError, match=r"SmsEntity\.message: 1601 characters"):
        entity_spec(SmsEntity).to_row(sms(message="x" * 1601))


def test_sms_columns() -> None:
    spec = entity_spec(SmsEntity)
    assert spec.sharding_column.name == "scheduled_time"
    assert [c.name for c in spec.indexed] == ["phone_number"]
    assert spec.column_named("phone_number").options.length == 16
    assert spec.column_named("validity_minutes").nullable
    assert spec.column_named("coding").python_type is SmsCoding


# -- OrderEntity --


def test_order_transitions_say_what_status_is_required_and_set() -> None:
    assert set(TRANSITIONS) == set(OrderAction)
    expire = order(action=OrderAction.EXPIRE_UNPAID)
    assert (expire.expected_status, expire.target_status) == ("pending_payment", "expired")
    confirm = order(action=OrderAction.AUTO_CONFIRM_DELIVERY)
    assert (confirm.expected_status, confirm.target_status) == ("shipped", "delivered")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"currency": "eur"}, r"OrderEntity\.currency: 'eur' is not an ISO 4217 code"),
        ({"currency": "EURO"}, r"OrderEntity\.currency: 'EURO' is not an ISO 4217 code"),
        ({"amount": Decimal("-0.01")}, r"OrderEntity\.amount: -0\.01 is negative"),
        ({"order_id": ""}, r"OrderEntity\.order_id: required"),
    ],
)
def test_order_refuses_invalid_domain_values(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        order(**changes)


def test_order_amount_is_stored_exactly_or_not_at_all() -> None:
    spec = entity_spec(OrderEntity)
    assert spec.to_row(order(amount=Decimal("0.10")))["amount"] == Decimal("0.10")
    with pytest.raises(EntityError, match=r"OrderEntity\.amount: 9\.999 has too many decimal"):
        spec.to_row(order(amount=Decimal("9.999")))


# -- NotificationEntity --


def test_notification_email_needs_an_address() -> None:
    with pytest.raises(ValueError, match=r"NotificationEntity\.recipient: 'ada' is not an email"):
        notification(recipient="ada")
    assert notification(recipient="a.b+c@mail.example.org").channel is Channel.EMAIL


def test_notification_webhook_needs_an_http_url() -> None:
    with pytest.raises(ValueError, match=r"'ftp://x\.example' is not an http\(s\) URL"):
        notification(channel=Channel.WEBHOOK, recipient="ftp://x.example")
    hook = notification(channel=Channel.WEBHOOK, recipient="https://hooks.example/in")
    assert hook.recipient == "https://hooks.example/in"


def test_notification_template_data_must_be_json() -> None:
    bad = notification(template_data={"at": WHEN})
    with pytest.raises(
        EntityError, match=r"NotificationEntity\.template_data: not storable as JSON"
    ):
        entity_spec(NotificationEntity).to_row(bad)


# -- all three through the database --


@pytest.mark.parametrize(
    ("make", "cls"),
    [(sms, SmsEntity), (order, OrderEntity), (notification, NotificationEntity)],
    ids=["sms", "order", "notification"],
)
def test_plugin_entities_round_trip_through_the_database(
    make: Callable[[], object],
    cls: type,
    every_url: DatabaseUrl,
    engine_for: Callable[[DatabaseUrl], sa.Engine],
) -> None:
    entity = make()
    spec = entity_spec(cls)
    engine = engine_for(every_url)
    metadata = sa.MetaData()
    table = spec.table(metadata, "t_20240601")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [spec.to_row(entity)])
    with engine.connect() as conn:
        row = conn.execute(table.select()).mappings().one()
    assert spec.from_row(row) == entity
    assert spec.from_json(spec.to_json(entity)) == entity
