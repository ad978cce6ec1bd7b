"""The fast row encoder accepts and refuses exactly what EntitySpec.check does."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs
import pytest

from infsched.entities import column, entity_spec, id_field, sharding_key
from infsched.errors import EntityError
from infsched.repositories.entity_rows import EntityRows

NOW = datetime(2024, 3, 10, 12, tzinfo=UTC)


class Kind(enum.Enum):
    A = "a"


@attrs.define(kw_only=True)
class Wide:
    id: int | None = id_field()
    due: datetime = sharding_key()
    text: str = column(length=5, default="t")
    free: str = column(default="f")
    number: int = column(default=1)
    maybe: int | None = column(default=None)
    ratio: float = column(default=1.0)
    flag: bool = column(default=False)
    amount: Decimal = column(precision=6, scale=2, default=Decimal("1.00"))
    day: date = column(default=date(2024, 1, 1))
    kind: Kind = column(default=Kind.A)
    data: dict[str, Any] = column(factory=dict)
    when: datetime | None = column(default=None)


#: For each field, values that must be accepted or refused alike.
VALUES: dict[str, list[Any]] = {
    "id": [None, 1, -1, 2**63 - 1, 2**63, True, "1", 1.0],
    "due": [
        NOW,
        NOW.replace(tzinfo=None),
        NOW.astimezone(timezone(timedelta(hours=5))),
        None,
        date(2024, 1, 1),
        "2024",
    ],
    "text": ["", "abcde", "abcdef", None, 5, b"ab"],
    "free": ["x" * 70_000, None],
    "number": [0, -(2**63), -(2**63) - 1, False, 1.5, None, "3"],
    "maybe": [None, 3, "3"],
    "ratio": [0.5, 2, float("nan"), float("inf"), True, "1", None],
    "flag": [True, False, 1, 0, None, "yes"],
    "amount": [Decimal("9999.99"), Decimal("10000"), Decimal("1.001"), Decimal("NaN"), 1, None],
    "day": [date(2024, 1, 1), NOW, "2024-01-01", None],
    "kind": [Kind.A, "a", None],
    "data": [{"a": [1]}, {"a": {1, 2}}, [1], None],
    "when": [None, NOW, NOW.replace(tzinfo=None)],
}


@pytest.mark.parametrize(("field", "value"), [(f, v) for f, vs in VALUES.items() for v in vs])
def test_the_fast_encoder_agrees_with_the_entity_spec(field: str, value: Any) -> None:
    spec = entity_spec(Wide)
    entity = Wide(due=NOW)
    object.__setattr__(entity, field, value)  # past attrs validators: values as they may arrive
    try:
        expected: Any = spec.to_row(entity)
    except EntityError as exc:
        expected = str(exc)
    try:
        rows = EntityRows(spec)
        got: Any = dict(zip(rows.columns, rows.to_values(entity), strict=True))
    except EntityError as exc:
        got = str(exc)
    assert got == expected
