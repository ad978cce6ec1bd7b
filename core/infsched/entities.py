"""Declaring entity types: attrs classes whose fields map to columns.

An entity is what a business stores to say that something must happen at a
given time: an SMS to send, an order to expire.  Declare one as an attrs
class, marking one field as the id and one as the sharding key::

    @attrs.define(kw_only=True)
    class SmsEntity:
        id: int | None = id_field()
        scheduled_time: datetime = sharding_key()
        phone_number: str = column(length=20, index=True)
        message: str = column(length=1600)

Python types map to columns: int -> BIGINT, str -> VARCHAR(length) (TEXT
without a length), datetime -> DATETIME(6) holding UTC, bool, float,
Decimal, enum.Enum (stored by value), dict/list -> JSON.  ``X | None`` makes a
column nullable.  Datetimes must be timezone-aware: a naive datetime is
refused with an error naming the field, never guessed at.
"""

from __future__ import annotations

import decimal
import enum
import functools
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, ClassVar, Protocol

import attrs
import sqlalchemy as sa

from infsched.clock import as_utc, utc_naive
from infsched.column_types import UtcDateTime
from infsched.errors import EntityError

_META_KEY = "infsched"

#: Longest VARCHAR we create; longer strings need a TEXT column (no length).
MAX_VARCHAR = 16_000


@attrs.frozen
class ColumnOptions:
    """What a field declares about its column."""

    role: str = "column"  # "id" | "sharding_key" | "column"
    length: int | None = None
    index: bool = False
    #: An index (column, sharding key, id): one value's rows in key order.
    index_by_key: bool = False
    precision: int | None = None
    scale: int | None = None


def id_field(*, length: int | None = None, default: Any = None) -> Any:
    """The entity's id: unique across the whole repository.

    An int id left None on insert is assigned a 64-bit time-ordered id by the
    repository.  A str id needs a `length` (at most 191, an index limit).
    """
    options = ColumnOptions(role="id", length=length)
    return attrs.field(default=default, metadata={_META_KEY: options})


def sharding_key(*, default: Any = attrs.NOTHING) -> Any:
    """When the entity is due: a timezone-aware datetime; decides its day table/partition."""
    return attrs.field(default=default, metadata={_META_KEY: ColumnOptions(role="sharding_key")})


def column(
    *,
    length: int | None = None,
    index: bool = False,
    index_by_key: bool = False,
    precision: int | None = None,
    scale: int | None = None,
    default: Any = attrs.NOTHING,
    factory: Any = None,
) -> Any:
    """An ordinary column; `length` bounds a string, `index` adds a secondary index.

    `index_by_key` adds an index (column, sharding key, id) instead: a query for
    one value ordered by the sharding key (newest first, a page at a time) reads
    its rows straight off the index and stops at the page's end.
    """
    if length is not None and not 0 < length <= MAX_VARCHAR:
        raise EntityError(f"column length must be between 1 and {MAX_VARCHAR}, got {length}")
    options = ColumnOptions(
        length=length, index=index, index_by_key=index_by_key, precision=precision, scale=scale
    )
    if factory is not None:
        return attrs.field(factory=factory, metadata={_META_KEY: options})
    return attrs.field(default=default, metadata={_META_KEY: options})


class Entity(Protocol):
    """Any attrs class declared with the helpers above."""

    __attrs_attrs__: ClassVar[Any]


#: Types whose JSON value is already the field's value (from_json skips from_db for them).
_AS_IN_JSON = frozenset({str, int, float})


@attrs.frozen
class ColumnSpec:
    """One column of an entity type, and how its values are checked and converted."""

    name: str
    python_type: type
    nullable: bool
    options: ColumnOptions

    @property
    def decimal_digits(self) -> tuple[int, int]:
        """(precision, scale) of a Decimal column: DECIMAL(18, 4) unless declared."""
        o = self.options
        return o.precision or 18, o.scale if o.scale is not None else 4

    @property
    def sql_type(self) -> sa.types.TypeEngine[Any]:
        t, o = self.python_type, self.options
        if t is bool:
            return sa.Boolean()
        if t is int:
            return sa.BigInteger()
        if t is float:
            return sa.Float(precision=53)
        if t is decimal.Decimal:
            return sa.Numeric(*self.decimal_digits)
        if t is str:
            return sa.String(o.length) if o.length else sa.Text()
        if t is datetime:
            return UtcDateTime()
        if t is date:
            return sa.Date()
        if issubclass(t, enum.Enum):
            longest = max((len(str(m.value)) for m in t), default=1)
            return sa.String(max(longest, 1))
        if t in (dict, list):
            return sa.JSON()
        raise AssertionError(t)  # refused in _column_type already

    def check(self, entity_type: str, value: Any) -> None:
        """Raise EntityError naming the field when `value` cannot be stored."""
        where = f"{entity_type}.{self.name}"
        if value is None:
            if not self.nullable and self.options.role != "id":
                raise EntityError(f"{where}: a value is required, got None")
            return
        t = self.python_type
        ok = isinstance(value, t) and not (t is int and isinstance(value, bool))
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if t is date and isinstance(value, datetime):
            ok = False
        if not ok:
            raise EntityError(
                f"{where}: expected {t.__name__}, got {type(value).__name__} ({value!r:.60})"
            )
        if t is datetime and (value.tzinfo is None or value.tzinfo.utcoffset(value) is None):
            raise EntityError(
                f"{where}: naive datetime {value.isoformat()} refused; "
                "use a timezone-aware datetime (e.g. datetime(..., tzinfo=UTC))"
            )
        if t is str and self.options.length is not None and len(value) > self.options.length:
            raise EntityError(
                f"{where}: {len(value)} characters, longer than the column's {self.options.length}"
            )
        if t is int and not -(2**63) <= value < 2**63:
            raise EntityError(f"{where}: {value} does not fit a 64-bit integer")
        if t is float and not math.isfinite(value):
            raise EntityError(f"{where}: {value} cannot be stored; use a finite number")
        if t is decimal.Decimal:
            self._check_decimal(where, value)
        if t in (dict, list):
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise EntityError(f"{where}: not storable as JSON ({exc})") from None

    def _check_decimal(self, where: str, value: decimal.Decimal) -> None:
        # The database would round extra decimals silently (MySQL) or store any
        # size (SQLite): refuse instead, so an amount is stored exactly or not at all.
        precision, scale = self.decimal_digits
        allowed = f"DECIMAL({precision}, {scale}) holds at most {precision - scale} digits "
        allowed += f"before and {scale} after the point"
        if not value.is_finite():
            raise EntityError(f"{where}: {value} cannot be stored; use a finite number")
        if abs(value) >= decimal.Decimal(10) ** (precision - scale):
            raise EntityError(f"{where}: {value} is too large; {allowed}")
        with decimal.localcontext() as exact:
            exact.prec = precision + 2  # quantize must not round in the default 28 digits
            if value != value.quantize(decimal.Decimal(1).scaleb(-scale), decimal.ROUND_DOWN):
                raise EntityError(f"{where}: {value} has too many decimal places; {allowed}")

    def to_db(self, value: Any) -> Any:
        if value is None:
            return None
        if self.python_type is datetime:
            return utc_naive(value)
        if isinstance(value, enum.Enum):
            return value.value
        return value

    def from_db(self, value: Any) -> Any:
        if value is None:
            return None
        t = self.python_type
        if t is datetime:
            if isinstance(value, str):  # snapshots; SQLite's raw strings through text() queries
                parsed = datetime.fromisoformat(value)
                if parsed.tzinfo is None:
                    # Parsing again with the offset is 0.2 µs; .replace(tzinfo=UTC) is 1.2.
                    return datetime.fromisoformat(value + "+00:00")
                return parsed.astimezone(UTC)
            return as_utc(value)
        if issubclass(t, enum.Enum):
            return t(value)
        if t in (dict, list) and isinstance(value, str):
            return json.loads(value)
        if t is decimal.Decimal and not isinstance(value, decimal.Decimal):
            return decimal.Decimal(str(value))
        if t is bool:
            return bool(value)
        return value


def _column_type(owner: str, name: str, hint: Any) -> tuple[type, bool]:
    """(python type, nullable) of an annotation such as ``str`` or ``int | None``."""
    nullable = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            raise EntityError(f"{owner}.{name}: a column holds one type, got {hint}")
        hint = args[0]
        origin = typing.get_origin(hint)
    if origin in (dict, list, Mapping, Sequence):
        hint = dict if origin in (dict, Mapping) else list
    supported = (bool, int, float, decimal.Decimal, str, datetime, date, dict, list)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        # Stored by value in a VARCHAR: only string values read back as the same member.
        odd = [m.value for m in hint if not isinstance(m.value, str)]
        if odd:
            raise EntityError(
                f"{owner}.{name}: Enum {hint.__name__} has non-string values ({odd[0]!r}); "
                "a column stores an Enum's values as text, so give its members string values"
            )
        return hint, nullable
    if isinstance(hint, type) and hint in supported:
        return hint, nullable
    raise EntityError(
        f"{owner}.{name}: type {hint!r} has no column mapping; use one of "
        "int, str, float, bool, Decimal, datetime, date, an Enum, dict or list"
    )


@attrs.frozen
class EntitySpec:
    """The column layout of an entity type, derived once from its attrs fields."""

    cls: type
    columns: tuple[ColumnSpec, ...]
    id_column: ColumnSpec
    sharding_column: ColumnSpec

    @property
    def name(self) -> str:
        return self.cls.__name__

    @property
    def indexed(self) -> tuple[ColumnSpec, ...]:
        return tuple(c for c in self.columns if c.options.index)

    def column_named(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise EntityError(f"{self.name} has no field {name!r}")

    def check(self, entity: object) -> None:
        """Validate every field of `entity` before any SQL runs."""
        if not isinstance(entity, self.cls):
            raise EntityError(
                f"expected a {self.name}, got {type(entity).__name__}; "
                "this repository stores only its own entity type"
            )
        for c in self.columns:
            c.check(self.name, getattr(entity, c.name))

    def to_row(self, entity: object) -> dict[str, Any]:
        self.check(entity)
        return {c.name: c.to_db(getattr(entity, c.name)) for c in self.columns}

    def from_row(self, row: Mapping[Any, Any]) -> Any:
        """The entity of a row; takes SQLAlchemy's RowMapping as it is."""
        return self.cls(**{c.name: c.from_db(row[c.name]) for c in self.columns})

    def to_json(self, entity: object) -> dict[str, Any]:
        """A JSON-safe snapshot of the entity (what the job store keeps)."""
        out: dict[str, Any] = {}
        for c in self.columns:
            value = c.to_db(getattr(entity, c.name))
            if isinstance(value, datetime | date):
                value = value.isoformat()
            elif isinstance(value, decimal.Decimal):
                value = str(value)
            out[c.name] = value
        return out

    def from_json(self, data: Mapping[str, Any]) -> Any:
        """The entity of a `to_json` snapshot (a worker does this for every job it runs)."""
        values: dict[str, Any] = {}
        for c in self.columns:
            raw = data.get(c.name)
            if raw is not None and c.python_type not in _AS_IN_JSON:
                if c.python_type is date:
                    raw = date.fromisoformat(raw)
                raw = c.from_db(raw)
            values[c.name] = raw
        return self.cls(**values)

    def table(
        self,
        metadata: sa.MetaData,
        name: str,
        *,
        primary_key_with_sharding: bool = False,
        max_name_length: int | None = None,
    ) -> sa.Table:
        """SQLAlchemy Table metadata for one physical table of this entity type.

        `primary_key_with_sharding` makes the primary key (id, sharding key), which
        a table partitioned on the sharding key needs.  Index names are cut to
        `max_name_length` (the database's identifier limit).
        """
        cut = slice(max_name_length)
        cols: list[sa.Column[Any]] = []
        for c in self.columns:
            is_pk = c is self.id_column or (primary_key_with_sharding and c is self.sharding_column)
            cols.append(
                sa.Column(
                    c.name,
                    c.sql_type,
                    primary_key=is_pk,
                    nullable=False if is_pk else c.nullable,
                    autoincrement=False,
                )
            )
        indexes = [
            sa.Index(
                f"ix_{name}_{self.sharding_column.name}"[cut],
                self.sharding_column.name,
                self.id_column.name,
            )
        ]
        indexes += [sa.Index(f"ix_{name}_{c.name}"[cut], c.name) for c in self.indexed]
        key, ident = self.sharding_column.name, self.id_column.name
        indexes += [
            sa.Index(f"ix_{name}_{c.name}_by_key"[cut], c.name, key, ident)
            for c in self.columns
            if c.options.index_by_key
        ]
        return sa.Table(name, metadata, *cols, *indexes)


@functools.cache
def entity_spec(cls: type) -> EntitySpec:
    """The EntitySpec of an entity class; raises EntityError if it is declared wrongly."""
    if not attrs.has(cls):
        raise EntityError(f"{cls.__name__} is not an attrs class; declare it with @attrs.define")
    try:
        hints = typing.get_type_hints(cls)
    except NameError as exc:
        raise EntityError(
            f"{cls.__name__}: cannot resolve its field annotations ({exc}); "
            "import the types it uses at module level, not under TYPE_CHECKING"
        ) from None
    columns: list[ColumnSpec] = []
    for f in attrs.fields(cls):
        options = f.metadata.get(_META_KEY)
        if options is None:
            options = ColumnOptions()
        python_type, nullable = _column_type(cls.__name__, f.name, hints.get(f.name, f.type))
        columns.append(ColumnSpec(f.name, python_type, nullable, options))
    ids = [c for c in columns if c.options.role == "id"]
    keys = [c for c in columns if c.options.role == "sharding_key"]
    if len(ids) != 1:
        raise EntityError(f"{cls.__name__} must declare exactly one id_field(), found {len(ids)}")
    if len(keys) != 1:
        raise EntityError(
            f"{cls.__name__} must declare exactly one sharding_key(), found {len(keys)}"
        )
    if ids[0].python_type not in (int, str):
        raise EntityError(f"{cls.__name__}.{ids[0].name}: the id must be an int or a str")
    if ids[0].python_type is str and not 0 < (ids[0].options.length or 0) <= 191:
        raise EntityError(f"{cls.__name__}.{ids[0].name}: a str id needs a length of at most 191")
    if keys[0].python_type is not datetime or keys[0].nullable:
        raise EntityError(
            f"{cls.__name__}.{keys[0].name}: the sharding key must be a (non-optional) datetime"
        )
    return EntitySpec(cls, tuple(columns), ids[0], keys[0])
