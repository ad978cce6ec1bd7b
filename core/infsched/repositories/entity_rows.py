"""Entities to row dicts and back, checked field by field before any SQL runs.

`EntitySpec.to_row` checks each value and then converts it, which costs a
few microseconds a row; inserts of thousands of rows a second feel that.
Here each column gets one encoder that accepts the common case (an exact
``str`` within its length, an ``int`` in range, a UTC datetime) with one
type test, and hands anything else to `ColumnSpec.check`, so every error
still names the field in the same words.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from infsched.clock import from_utc_naive
from infsched.entities import ColumnSpec, EntitySpec
from infsched.errors import EntityError

Encoder = Callable[[Any], Any]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _encoder(spec: EntitySpec, column: ColumnSpec) -> Encoder:
    entity_name = spec.name

    may_be_none = column.nullable or column.options.role == "id"  # an id may come later

    def checked(value: Any) -> Any:
        if value is None and may_be_none:
            return None
        column.check(entity_name, value)
        return column.to_db(value)

    t = column.python_type
    if t is str:
        limit = column.options.length

        def encode_str(value: Any) -> Any:
            if type(value) is str and (limit is None or len(value) <= limit):
                return value
            return checked(value)

        return encode_str
    if t is int:

        def encode_int(value: Any) -> Any:
            if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
                return value
            return checked(value)

        return encode_int
    if t is datetime:

        def encode_datetime(value: Any) -> Any:
            if type(value) is datetime and value.tzinfo is UTC:
                return datetime.combine(value.date(), value.time())  # see clock.py
            return checked(value)

        return encode_datetime
    if t is bool:
        return lambda value: value if type(value) is bool else checked(value)
    return checked


def _decoder(column: ColumnSpec) -> Callable[[Any], Any]:
    if column.python_type in (str, int):
        return lambda value: value
    if column.python_type is datetime:
        return lambda value: (
            from_utc_naive(value) if type(value) is datetime else column.from_db(value)
        )
    return column.from_db


class EntityRows:
    """Converts between entities of one type and rows of their table."""

    def __init__(self, spec: EntitySpec) -> None:
        self.spec = spec
        self._encoders = tuple(
            (c.name, operator.attrgetter(c.name), _encoder(spec, c)) for c in spec.columns
        )
        self._decoders = tuple((c.name, _decoder(c)) for c in spec.columns)
        self._columns = {c.name: c for c in spec.columns}
        self._init = [(a.alias, a.name) for a in attrs.fields(spec.cls) if a.init]

    @property
    def columns(self) -> list[str]:
        """The column names, in the order `to_values` gives the values."""
        return [name for name, _, _ in self._encoders]

    def to_values(self, entity: object) -> list[Any]:
        """The row of `entity` as values in column order; EntityError naming a bad field."""
        if not isinstance(entity, self.spec.cls):
            raise EntityError(
                f"expected a {self.spec.name}, got {type(entity).__name__}; "
                "this repository stores only its own entity type"
            )
        return [encode(get(entity)) for _, get, encode in self._encoders]

    def with_field(self, entity: Any, field: str, value: Any) -> Any:
        """A copy of `entity` with one field changed: `attrs.evolve`, minus its per-call set-up."""
        values = {alias: getattr(entity, name) for alias, name in self._init}
        values[field] = value
        return self.spec.cls(**values)

    def from_row(self, row: Mapping[Any, Any]) -> Any:
        return self.spec.cls(**{name: decode(row[name]) for name, decode in self._decoders})

    def check_id(self, entity_id: object) -> Any:
        """`entity_id`, checked as an id of this entity type; EntityError for None or a bad one."""
        if entity_id is None:
            raise EntityError(
                f"{self.spec.name}.{self.spec.id_column.name}: an id is required, got None"
            )
        self.spec.id_column.check(self.spec.name, entity_id)
        return entity_id

    def value_to_db(self, field: str, value: Any) -> Any:
        """One field's value, checked and converted; EntityError for an unknown field."""
        column = self._columns.get(field)
        if column is None:
            known = ", ".join(self._columns)
            raise EntityError(f"{self.spec.name} has no field {field!r} (fields: {known})")
        column.check(self.spec.name, value)
        return column.to_db(value)
