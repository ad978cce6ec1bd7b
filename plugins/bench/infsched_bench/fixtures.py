"""What the benchmarks insert: an SMS-shaped entity of eight columns."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import attrs

from infsched.entities import column, id_field, sharding_key


@attrs.define(kw_only=True)
class BenchMessage:
    id: int | None = id_field()
    due: datetime = sharding_key()
    phone_number: str = column(length=16)
    sender: str = column(length=16)
    message: str = column(length=160)
    priority: int = column(default=0)
    attempts_allowed: int = column(default=3)
    reference: str | None = column(length=64, default=None)


def messages(
    count: int, start: datetime, spacing: timedelta, first_id: int = 1
) -> Iterator[BenchMessage]:
    for i in range(count):
        yield BenchMessage(
            id=first_id + i,
            due=start + spacing * i,
            phone_number=f"+49151{i % 10**8:08d}",
            sender="ACME",
            message=f"Your code is {i % 1000000:06d}. It expires in 10 minutes.",
            priority=i % 3,
            reference=f"campaign-{i % 100}",
        )
