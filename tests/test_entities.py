"""Entity declarations: column mapping, round trips through the database and JSON, and errors."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.schema import CreateTable

from infsched.dburl import DatabaseUrl
from infsched.entities import column, entity_spec, id_field, sharding_key
from infsched.errors import EntityError

if TYPE_CHECKING:
    from pathlib import Path


class Colour(enum.Enum):
    RED = "red"
    SEA_GREEN = "sea-green"


@attrs.define(kw_only=True)
class Parcel:
    """One field of every supported kind."""

    id: int | None = id_field()
    due: datetime = sharding_key()
    label: str = column(length=8, index=True)
    notes: str | None = column(default=None)
    colour: Colour = column(default=Colour.RED)
    price: Decimal = column(precision=8, scale=2, default=Decimal("0.00"))
    weight: float = column(default=0.0)
    fragile: bool = column(default=False)
    count: int = column(default=0)
    ship_on: date | None = column(default=None)
    attributes: dict[str, Any] = column(factory=dict)
    tags: list[str] = column(factory=list)


@attrs.define(kw_only=True)
class Ticket:
    code: str = id_field(length=32)
    at: datetime = sharding_key()


SPEC = entity_spec(Parcel)
DUE = datetime(2024, 3, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))


def parcel(**changes: Any) -> Parcel:
    values: dict[str, Any] = {
        "id": 42,
        "due": DUE,
        "label": "box-7",
        "notes": "leave at the door",
        "colour": Colour.SEA_GREEN,
        "price": Decimal("1234.50"),
        "weight": 2.25,
        "fragile": True,
        "count": -3,
        "ship_on": date(2024, 2, 29),
        "attributes": {"size": [30, 20, 10], "gift": True, "from": "Zoë"},
        "tags": ["a", "b"],
    }
    values.update(changes)
    return Parcel(**values)


def error_of(call: Callable[[], object]) -> str:
    with pytest.raises(EntityError) as err:
        call()
    return str(err.value)


# -- the column mapping --


def test_column_mapping_types_and_nullability() -> None:
    columns = {c.name: (c.python_type, c.nullable) for c in SPEC.columns}
    assert columns == {
        "id": (int, True),
        "due": (datetime, False),
        "label": (str, False),
        "notes": (str, True),
        "colour": (Colour, False),
        "price": (Decimal, False),
        "weight": (float, False),
        "fragile": (bool, False),
        "count": (int, False),
        "ship_on": (date, True),
        "attributes": (dict, False),
        "tags": (list, False),
    }
    assert SPEC.name == "Parcel"
    assert SPEC.id_column.name == "id"
    assert SPEC.sharding_column.name == "due"
    assert [c.name for c in SPEC.indexed] == ["label"]


def test_mysql_ddl_of_an_entity_table() -> None:
    table = SPEC.table(sa.MetaData(), "parcels_20240301")
    ddl = " ".join(str(CreateTable(table).compile(dialect=mysql.dialect())).split())
    for expected in [
        "id BIGINT NOT NULL",
        "due DATETIME(6) NOT NULL",
        "label VARCHAR(8) NOT NULL",
        "notes TEXT",
        "colour VARCHAR(9) NOT NULL",  # the longest value, "sea-green"
        "price NUMERIC(8, 2) NOT NULL",
        "weight FLOAT(53) NOT NULL",
        "fragile BOOL NOT NULL",
        "count BIGINT NOT NULL",
        "ship_on DATE,",
        "attributes JSON NOT NULL",
        "tags JSON NOT NULL",
        "PRIMARY KEY (id)",
    ]:
        assert expected in ddl, expected
    assert "AUTO_INCREMENT" not in ddl
    indexes = {index.name: [c.name for c in index.columns] for index in table.indexes}
    assert indexes == {
        "ix_parcels_20240301_due": ["due", "id"],
        "ix_parcels_20240301_label": ["label"],
    }


def test_partitioned_table_has_id_and_sharding_key_as_primary_key() -> None:
    table = SPEC.table(sa.MetaData(), "parcels", primary_key_with_sharding=True)
    assert [c.name for c in table.primary_key.columns] == ["id", "due"]
    ddl = str(CreateTable(table).compile(dialect=sqlite.dialect()))
    assert "PRIMARY KEY (id, due)" in ddl


def test_str_id_maps_to_a_bounded_varchar() -> None:
    spec = entity_spec(Ticket)
    assert spec.id_column.python_type is str
    table = spec.table(sa.MetaData(), "tickets")
    assert "code VARCHAR(32) NOT NULL" in str(CreateTable(table).compile(dialect=mysql.dialect()))


def test_declaration_is_analysed_once() -> None:
    assert entity_spec(Parcel) is SPEC


# -- round trips --


def test_row_round_trip_through_the_database(
    every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    engine = engine_for(every_url)
    metadata = sa.MetaData()
    table = SPEC.table(metadata, "parcels")
    metadata.create_all(engine)
    original = parcel()
    minimal = Parcel(id=43, due=DUE, label="x")
    with engine.begin() as conn:
        conn.execute(table.insert(), [SPEC.to_row(original), SPEC.to_row(minimal)])
    with engine.connect() as conn:
        rows = conn.execute(table.select().order_by(table.c.id)).mappings().all()
    back, back_minimal = (SPEC.from_row(row) for row in rows)

    assert back == original
    assert back_minimal == minimal
    assert back.due.tzinfo is UTC
    assert back.due == DUE  # the same instant, with microseconds
    assert back.due.hour == 12  # stored as UTC wall time
    assert back.colour is Colour.SEA_GREEN
    assert back.price == Decimal("1234.50")
    assert isinstance(back.price, Decimal)
    assert back.ship_on == date(2024, 2, 29)
    assert type(back.ship_on) is date
    assert back.attributes == {"size": [30, 20, 10], "gift": True, "from": "Zoë"}
    assert back.fragile is True
    assert back_minimal.notes is None
    assert back_minimal.ship_on is None


def test_to_row_stores_utc_wall_time_and_enum_values() -> None:
    row = SPEC.to_row(parcel())
    assert row["due"] == datetime(2024, 3, 1, 12, 30, 15, 123456)
    assert row["colour"] == "sea-green"
    assert row["price"] == Decimal("1234.50")


def test_json_round_trip() -> None:
    original = parcel()
    snapshot = SPEC.to_json(original)
    assert snapshot["due"] == "2024-03-01T12:30:15.123456"
    assert snapshot["price"] == "1234.50"
    assert snapshot["colour"] == "sea-green"
    assert snapshot["ship_on"] == "2024-02-29"
    back = SPEC.from_json(json.loads(json.dumps(snapshot)))
    assert back == original
    assert back.due.tzinfo is UTC
    assert back.colour is Colour.SEA_GREEN
    assert isinstance(back.price, Decimal)
    assert type(back.ship_on) is date


def test_json_round_trip_of_nulls_and_missing_optional_keys() -> None:
    original = Parcel(id=None, due=DUE, label="x")
    snapshot = SPEC.to_json(original)
    assert snapshot["id"] is None
    assert snapshot["notes"] is None
    assert SPEC.from_json(json.loads(json.dumps(snapshot))) == original


def test_none_id_is_allowed_for_the_repository_to_assign() -> None:
    assert SPEC.to_row(parcel(id=None))["id"] is None


# -- bad declarations --


@attrs.define(kw_only=True)
class NoId:
    due: datetime = sharding_key()


@attrs.define(kw_only=True)
class TwoKeys:
    id: int = id_field()
    due: datetime = sharding_key()
    also_due: datetime = sharding_key()


@attrs.define(kw_only=True)
class TwoIds:
    id: int = id_field()
    other: int = id_field()
    due: datetime = sharding_key()


@attrs.define(kw_only=True)
class BytesField:
    id: int = id_field()
    due: datetime = sharding_key()
    blob: bytes = column()


@attrs.define(kw_only=True)
class UnionField:
    id: int = id_field()
    due: datetime = sharding_key()
    either: int | str = column()


@attrs.define(kw_only=True)
class StrIdWithoutLength:
    id: str = id_field()
    due: datetime = sharding_key()


@attrs.define(kw_only=True)
class StrIdTooLong:
    id: str = id_field(length=192)
    due: datetime = sharding_key()


@attrs.define(kw_only=True)
class FloatId:
    id: float = id_field()
    due: datetime = sharding_key()


@attrs.define(kw_only=True)
class DateKey:
    id: int = id_field()
    due: date = sharding_key()


@attrs.define(kw_only=True)
class OptionalKey:
    id: int = id_field()
    due: datetime | None = sharding_key()


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


@attrs.define(kw_only=True)
class IntEnumField:
    id: int = id_field()
    due: datetime = sharding_key()
    level: Level = column()


@attrs.define(kw_only=True)
class Unresolvable:
    id: int = id_field()
    due: datetime = sharding_key()
    where: Path = column()  # imported only under TYPE_CHECKING


class NotAttrs:
    id: int


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (NoId, "NoId must declare exactly one id_field(), found 0"),
        (TwoIds, "TwoIds must declare exactly one id_field(), found 2"),
        (TwoKeys, "TwoKeys must declare exactly one sharding_key(), found 2"),
        (BytesField, "BytesField.blob: type <class 'bytes'> has no column mapping; use one of"),
        (UnionField, "UnionField.either: a column holds one type, got int | str"),
        (StrIdWithoutLength, "StrIdWithoutLength.id: a str id needs a length of at most 191"),
        (StrIdTooLong, "StrIdTooLong.id: a str id needs a length of at most 191"),
        (FloatId, "FloatId.id: the id must be an int or a str"),
        (DateKey, "DateKey.due: the sharding key must be a (non-optional) datetime"),
        (OptionalKey, "OptionalKey.due: the sharding key must be a (non-optional) datetime"),
        (IntEnumField, "IntEnumField.level: Enum Level has non-string values (1)"),
        (Unresolvable, "Unresolvable: cannot resolve its field annotations"),
        (NotAttrs, "NotAttrs is not an attrs class"),
    ],
)
def test_bad_declarations_are_refused_naming_the_class_and_field(cls: type, expected: str) -> None:
    assert error_of(lambda: entity_spec(cls)).startswith(expected)


@pytest.mark.parametrize("length", [0, -1, 16_001])
def test_column_length_out_of_range_is_refused(length: int) -> None:
    message = error_of(lambda: column(length=length))
    assert message == f"column length must be between 1 and 16000, got {length}"


# -- bad values --


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"due": datetime(2024, 3, 1, 12, 0)}, "Parcel.due: naive datetime 2024-03-01T12:00:00"),
        ({"label": "nine char"}, "Parcel.label: 9 characters, longer than the column's 8"),
        ({"count": "3"}, "Parcel.count: expected int, got str ('3')"),
        ({"count": True}, "Parcel.count: expected int, got bool"),
        ({"count": 2**63}, "Parcel.count: 9223372036854775808 does not fit a 64-bit integer"),
        ({"id": -(2**63) - 1}, "Parcel.id: -9223372036854775809 does not fit a 64-bit integer"),
        ({"weight": "heavy"}, "Parcel.weight: expected float, got str"),
        ({"weight": float("inf")}, "Parcel.weight: inf cannot be stored"),
        ({"price": 1.5}, "Parcel.price: expected Decimal, got float"),
        ({"price": Decimal("1.005")}, "Parcel.price: 1.005 has too many decimal places"),
        ({"price": Decimal("1000000")}, "Parcel.price: 1000000 is too large; DECIMAL(8, 2)"),
        ({"price": Decimal("NaN")}, "Parcel.price: NaN cannot be stored"),
        ({"ship_on": datetime(2024, 1, 1, tzinfo=UTC)}, "Parcel.ship_on: expected date, got"),
        ({"colour": "red"}, "Parcel.colour: expected Colour, got str"),
        ({"attributes": ["not", "a", "dict"]}, "Parcel.attributes: expected dict, got list"),
        ({"attributes": {"when": DUE}}, "Parcel.attributes: not storable as JSON"),
        ({"label": None}, "Parcel.label: a value is required, got None"),
        ({"due": None}, "Parcel.due: a value is required, got None"),
        ({"fragile": 1}, "Parcel.fragile: expected bool, got int"),
    ],
)
def test_bad_values_are_refused_naming_the_field(changes: dict[str, Any], expected: str) -> None:
    bad = parcel(**changes)
    assert error_of(lambda: SPEC.to_row(bad)).startswith(expected)


def test_ints_are_accepted_for_float_columns_and_trailing_zeros_for_decimals() -> None:
    row = SPEC.to_row(parcel(weight=3, price=Decimal("12.500")))
    assert row["weight"] == 3
    assert row["price"] == Decimal("12.5")


def test_largest_decimal_that_fits_is_accepted() -> None:
    assert SPEC.to_row(parcel(price=Decimal("-999999.99")))["price"] == Decimal("-999999.99")


def test_entity_of_another_type_is_refused() -> None:
    ticket = Ticket(code="T-1", at=DUE)
    assert error_of(lambda: SPEC.to_row(ticket)) == (
        "expected a Parcel, got Ticket; this repository stores only its own entity type"
    )


def test_unknown_column_name_is_an_error() -> None:
    assert SPEC.column_named("label").options.length == 8
    assert error_of(lambda: SPEC.column_named("lable")) == "Parcel has no field 'lable'"
